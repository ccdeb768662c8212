"""Queue ids: unique across processes and sortable by time of creation.

An id is 21 upper-case hex digits: 13 for the creation time in microseconds, 6 for
the process id (Linux pid_max is at most 2^22) and 2 for a per-process counter. Two processes never share a pid at
the same moment, and one process makes at most 256 ids in one microsecond before
the clock moves (we wait for it), so ids never collide; sorting them sorts by age.
Next: queue/store.py, which names queue files by these ids.
"""
from __future__ import annotations

import os
import time

QUEUE_ID_LEN = 21
_HEX = frozenset("0123456789ABCDEF")


class _Generator:
    __slots__ = ("pid", "last_us", "counter")

    def __init__(self) -> None:
        self.pid = os.getpid() & 0xFFFFFF
        self.last_us = 0
        self.counter = 0

    def next(self) -> str:
        pid = os.getpid() & 0xFFFFFF
        if pid != self.pid:              # forked: a new process gets a new sequence
            self.pid, self.last_us, self.counter = pid, 0, 0
        now = time.time_ns() // 1000
        if now <= self.last_us:
            now = self.last_us
            self.counter += 1
            if self.counter > 0xFF:
                while now <= self.last_us:
                    now = time.time_ns() // 1000
                self.counter = 0
        else:
            self.counter = 0
        self.last_us = now
        return f"{now:013X}{pid:06X}{self.counter:02X}"


_gen = _Generator()


def new_queue_id() -> str:
    return _gen.next()


def is_queue_id(name: str) -> bool:
    return len(name) == QUEUE_ID_LEN and all(c in _HEX for c in name)


def queue_id_time(qid: str) -> float:
    """Creation time (epoch seconds) that the id carries."""
    return int(qid[:13], 16) / 1e6
