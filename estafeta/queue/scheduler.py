"""Pure scheduling rules (no IO, no clock reads): backoff and expiry.

Backoff follows Postfix's qmgr: after a failed attempt a message waits as long as
it has already been queued, clamped to [minimal_backoff_time, maximal_backoff_time].
That doubles the wait on each attempt (300s, 300s, 600s, 1200s, 2400s, 4000s, ...)
without storing an attempt counter: the message's age carries it. A deferred
file's mtime holds its next attempt time, so the deferred queue needs no index.
"""
from __future__ import annotations


def next_attempt(now: float, arrival: float, minimal: float, maximal: float) -> float:
    age = max(0.0, now - arrival)
    return now + min(max(age, minimal), max(minimal, maximal))


def expired(now: float, arrival: float, lifetime: float) -> bool:
    """maximal_queue_lifetime: 0 means one attempt only (seed 8.3.3)."""
    return now - arrival >= lifetime


def batches(items: list, limit: int) -> list[list]:
    """Split recipients into deliveries of at most `limit` (destination_recipient_limit)."""
    if limit <= 0:
        return [items]
    return [items[i:i + limit] for i in range(0, len(items), limit)]
