"""Backoff, expiry and recipient batches (pure functions, no clock)."""
from __future__ import annotations

import pytest

from estafeta.queue.scheduler import batches, expired, next_attempt


def test_backoff_doubles_up_to_the_cap() -> None:
    arrival, now, waits = 1000.0, 1000.0, []
    for _ in range(8):
        nxt = next_attempt(now, arrival, 300, 4000)
        waits.append(nxt - now)
        now = nxt
    want = [300, 300, 600, 1200, 2400, 4000, 4000, 4000]
    assert waits == want, f"got {waits}, want {want}"


def test_backoff_clock_before_arrival_waits_minimal() -> None:
    got = next_attempt(now=100, arrival=500, minimal=300, maximal=4000)
    assert got == 400, f"got {got}, want 400"


def test_backoff_maximal_below_minimal_uses_minimal() -> None:
    got = next_attempt(now=10_000, arrival=0, minimal=300, maximal=100)
    assert got == 10_300, f"got {got}, want 10300"


@pytest.mark.parametrize("now, arrival, lifetime, want", [
    (1000, 1000, 0, True),           # lifetime 0: the first failure already expires it
    (1000.5, 1000, 0, True),
    (1000, 1000, 5 * 86400, False),
    (1000 + 5 * 86400 - 1, 1000, 5 * 86400, False),
    (1000 + 5 * 86400, 1000, 5 * 86400, True),
])
def test_expired(now: float, arrival: float, lifetime: float, want: bool) -> None:
    got = expired(now, arrival, lifetime)
    assert got == want, f"got {got}, want {want}"


@pytest.mark.parametrize("n, limit, want", [
    (5, 2, [[0, 1], [2, 3], [4]]),
    (4, 2, [[0, 1], [2, 3]]),
    (3, 50, [[0, 1, 2]]),
    (3, 1, [[0], [1], [2]]),
    (3, 0, [[0, 1, 2]]),             # 0: no limit
    (3, -1, [[0, 1, 2]]),
    (0, 2, []),
])
def test_batches(n: int, limit: int, want: list) -> None:
    got = batches(list(range(n)), limit)
    assert got == want, f"got {got}, want {want}"
