"""Unit tests of server.threads.StepThreads: the worker threads of plain function steps."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.engine import StepThreads


async def test_results_and_errors_come_back_to_their_callers() -> None:
    threads = StepThreads(8)
    try:

        def square(x: int) -> int:
            if x == 13:
                raise ValueError("unlucky")
            time.sleep(0.0005 * (x % 3))  # finish out of order
            return x * x

        futures = [threads.run(square, i) for i in range(500)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert [r for i, r in enumerate(results) if i != 13] == [i * i for i in range(500) if i != 13]
        assert isinstance(results[13], ValueError)
        assert len(threads._threads) <= 8
    finally:
        threads.shutdown(wait=True)


async def test_calls_run_off_the_loop_in_parallel_up_to_the_limit() -> None:
    threads = StepThreads(4)
    loop_thread = threading.get_ident()
    gate = threading.Barrier(4, timeout=5)  # passes only if 4 calls run at the same time

    def meet() -> int:
        assert threading.get_ident() != loop_thread
        gate.wait()
        return threading.get_ident()

    try:
        idents = await asyncio.wait_for(asyncio.gather(*(threads.run(meet) for _ in range(4))), 10)
        assert len(set(idents)) == 4
    finally:
        threads.shutdown(wait=True)


async def test_a_cancelled_caller_does_not_break_the_others() -> None:
    threads = StepThreads(2)
    release = threading.Event()
    try:
        slow = threads.run(release.wait, 5)
        slow.cancel()
        release.set()
        assert await threads.run(lambda: "after") == "after"
        with pytest.raises(asyncio.CancelledError):
            await slow
    finally:
        threads.shutdown(wait=True)


async def test_shutdown_cancels_calls_not_yet_begun() -> None:
    threads = StepThreads(1)
    release = threading.Event()
    running = threads.run(release.wait, 5)
    queued = threads.run(lambda: "never")
    await asyncio.sleep(0.05)
    threads.shutdown()
    release.set()
    assert await running is True
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        threads.run(lambda: None)
