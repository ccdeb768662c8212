"""Blocking calls handed to the I/O thread pool in batches.

`asyncio.to_thread` per call costs a hand-off each way (a queue put that wakes a
pool thread, a wake-up of the event loop when it is done), and on a busy service
those hand-offs cost more than the call itself (an unlink, a small read). A
`Batcher` keeps at most one job in the pool: calls made while it runs wait for
the next job, which runs them all, one after the other, and wakes the loop once.
Each caller still gets its own result or exception.
Used by qmgr to remove finished queue files.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable


def _run_all(calls: list[tuple[Callable[..., Any], tuple]]) -> list[tuple[bool, Any]]:
    out: list[tuple[bool, Any]] = []
    for fn, args in calls:
        try:
            out.append((True, fn(*args)))
        except Exception as e:       # each caller gets its own exception
            out.append((False, e))
    return out


class Batcher:
    def __init__(self) -> None:
        self.pending: list[tuple[Callable[..., Any], tuple, asyncio.Future]] = []
        self.running = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((fn, args, fut))
        self._kick()
        return await fut

    def _kick(self) -> None:
        if self.running or not self.pending:
            return
        batch, self.pending = self.pending, []
        self.running = True
        job = asyncio.get_running_loop().run_in_executor(None, _run_all, [(fn, a) for fn, a, _ in batch])
        job.add_done_callback(lambda j: self._done(batch, j))

    def _done(self, batch, job: asyncio.Future) -> None:
        self.running = False
        exc = job.exception() if not job.cancelled() else asyncio.CancelledError()
        results = job.result() if exc is None else [(False, exc)] * len(batch)
        for (_, _, fut), (ok, value) in zip(batch, results):
            if fut.done():                 # its caller was cancelled
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        self._kick()
