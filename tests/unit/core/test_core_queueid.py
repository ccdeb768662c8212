"""Queue ids: unique, sorted by creation, carrying their creation time."""
from __future__ import annotations

import time

import pytest

from estafeta.core import queueid
from estafeta.core.queueid import QUEUE_ID_LEN, is_queue_id, new_queue_id, queue_id_time


def test_many_ids_unique_and_in_creation_order() -> None:
    ids = [new_queue_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids), f"got {len(ids) - len(set(ids))} duplicates, want 0"
    assert ids == sorted(ids), "ids do not sort in creation order"
    assert all(is_queue_id(i) for i in ids)


def test_id_shape() -> None:
    qid = new_queue_id()
    assert len(qid) == QUEUE_ID_LEN == 21
    assert qid == qid.upper()


def test_counter_overflow_waits_for_the_clock(monkeypatch) -> None:
    # A frozen clock: 256 ids fit in one microsecond, the 257th waits for it to move.
    t = [1_700_000_000_000_000_000]
    calls = [0]

    def fake_ns() -> int:
        calls[0] += 1
        if calls[0] > 300:            # the clock moves only after many reads
            t[0] += 1000
        return t[0]

    monkeypatch.setattr(queueid.time, "time_ns", fake_ns)
    gen = queueid._Generator()
    ids = [gen.next() for _ in range(300)]
    assert len(set(ids)) == 300
    assert ids == sorted(ids)
    assert ids[255][-2:] == "FF" and ids[255][:13] == ids[0][:13]
    assert ids[256][:13] > ids[0][:13], f"got {ids[256]}, want a later timestamp than {ids[0]}"


def test_clock_going_back_keeps_ids_increasing(monkeypatch) -> None:
    times = iter([2_000_000_000_000, 1_000_000_000_000, 1_000_000_000_000, 3_000_000_000_000])
    monkeypatch.setattr(queueid.time, "time_ns", lambda: next(times))
    gen = queueid._Generator()
    ids = [gen.next() for _ in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4, f"got {ids}"


@pytest.mark.parametrize("name, want", [
    ("0123456789ABCDEF01234", True),
    ("0123456789abcdef01234", False),
    ("0123456789ABCDEF0123", False),
    ("0123456789ABCDEF012345", False),
    (".0123456789ABCDEF0123", False),
    ("0123456789ABCDEG01234", False),
    ("", False),
    ("README", False),
])
def test_is_queue_id(name: str, want: bool) -> None:
    got = is_queue_id(name)
    assert got == want, f"got {got} for {name!r}, want {want}"


def test_queue_id_time_is_now() -> None:
    before = time.time()
    qid = new_queue_id()
    after = time.time()
    got = queue_id_time(qid)
    assert before - 0.001 <= got <= after + 0.001, f"got {got}, want between {before} and {after}"
