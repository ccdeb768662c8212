"""Pure scheduling rules (no IO, no clock reads): backoff and expiry.

Backoff follows Postfix's qmgr: after a failed attempt a message waits as long as
it has already been queued, clamped to [minimal_backoff_time, maximal_backoff_time].
That doubles the wait on each attempt (300s, 300s, 600s, 1200s, 2400s, 4000s, ...)
without storing an attempt counter: the message's age carries it. A deferred
file's mtime holds its next attempt time, so the deferred queue needs no index.
"""
from __future__ import annotations

import random


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


# -- queue run order (Sendmail's QUEUE_SORT_ORDER, seed 8.2.4; main.cf queue_sort_order) --

SORT_ORDERS = ("priority", "host", "filename", "time", "modification", "random")


def sort_key_fields(order: str) -> str:
    """Check a queue_sort_order value; accepts Sendmail's one-letter forms too."""
    o = order.strip().lower()
    for name in SORT_ORDERS:
        if o == name or o == name[0]:
            return name
    raise ValueError(f"queue_sort_order: unknown order {order!r} (want one of {', '.join(SORT_ORDERS)})")


def queue_order(items: list[tuple[str, int, str, float, float]], order: str,
                rng: random.Random | None = None) -> list[str]:
    """Queue ids of one queue run in the order to try them.

    `items` are (queue_id, size, first_recipient_domain, arrival, next_attempt):
    - priority: Sendmail's priority grows with size, so smaller messages go first;
    - host: by the domain of the first pending recipient (mail for one site
      together), then by id;
    - filename: by queue id, which sorts by creation time (core/queueid.py);
    - time: by arrival; modification: by next-attempt time (the deferred mtime);
    - random: shuffled with `rng` (injected, so tests are deterministic).
    Ties fall back to the queue id, so the order is total and repeatable.
    """
    name = sort_key_fields(order)
    if name == "random":
        ids = sorted(i[0] for i in items)
        (rng or random.Random()).shuffle(ids)
        return ids
    keyf = {
        "priority": lambda i: (i[1], i[0]),
        "host": lambda i: (i[2].lower(), i[0]),
        "filename": lambda i: (i[0],),
        "time": lambda i: (i[3], i[0]),
        "modification": lambda i: (i[4], i[0]),
    }[name]
    return [i[0] for i in sorted(items, key=keyf)]
