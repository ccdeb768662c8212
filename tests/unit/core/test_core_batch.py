"""core/batch.py: blocking calls run in the thread pool in batches, each caller gets
its own result or exception, one job in the pool at a time."""
from __future__ import annotations

import asyncio
import threading

import pytest

from estafeta.core.batch import Batcher


def test_each_caller_gets_its_own_result_and_exception() -> None:
    def f(x: int) -> int:
        if x == 3:
            raise FileNotFoundError(f"no {x}")
        return x * 10

    async def main():
        b = Batcher()
        return await asyncio.gather(*(b.run(f, i) for i in range(6)), return_exceptions=True)

    got = asyncio.run(main())
    assert got[:3] == [0, 10, 20] and got[4:] == [40, 50], f"got {got}"
    assert isinstance(got[3], FileNotFoundError) and str(got[3]) == "no 3"


def test_calls_made_while_a_job_runs_share_the_next_job() -> None:
    gate = threading.Event()
    threads: list[tuple[int, int]] = []        # (call, thread id) in order of running

    def slow(i: int) -> int:
        if i == 0:
            gate.wait(5)                        # the first job blocks until the others queued
        threads.append((i, threading.get_ident()))
        return i

    async def main():
        loop = asyncio.get_running_loop()
        jobs = 0
        real = loop.run_in_executor

        def counting(executor, fn, *args):
            nonlocal jobs
            jobs += 1
            return real(executor, fn, *args)

        loop.run_in_executor = counting
        b = Batcher()
        first = asyncio.ensure_future(b.run(slow, 0))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(b.run(slow, i)) for i in range(1, 8)]
        await asyncio.sleep(0.05)
        assert jobs == 1, f"got {jobs} jobs while the first one runs, want 1"
        gate.set()
        got = await asyncio.gather(first, *rest)
        return got, jobs

    got, jobs = asyncio.run(main())
    assert got == list(range(8))
    assert jobs == 2, f"got {jobs} hand-offs for 8 calls, want 2 (the first, then one for the 7 queued)"
    assert [i for i, _ in threads] == list(range(8)), "calls must run in the order they were made"
    assert len({t for i, t in threads if i > 0}) == 1, "a batch runs in one thread, one call after the other"


def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    gate = threading.Event()

    def f(i: int) -> int:
        gate.wait(5)
        return i

    async def main():
        b = Batcher()
        a = asyncio.ensure_future(b.run(f, 1))
        c = asyncio.ensure_future(b.run(f, 2))
        await asyncio.sleep(0.02)
        a.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await a
        return await c, await b.run(f, 3)

    assert asyncio.run(main()) == (2, 3)
