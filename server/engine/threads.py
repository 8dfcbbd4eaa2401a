"""Worker threads for plain (sync) function steps, with results handed back in bulk.

`loop.run_in_executor` costs, per call, a concurrent Future with its lock and condition, a
chained asyncio Future, and one wake-up of the event loop. Here a call is one queue item,
and the loop is woken once for every batch of results that finished while it was busy:
with many short steps in flight, most results ride on a wake-up that was due anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

_Job = tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]


class Raised(Exception):
    """A step raised SystemExit, KeyboardInterrupt or GeneratorExit: carried as an ordinary
    exception, since asyncio lets the first two escape a task to the event loop (stopping
    it) and throws the third past every frame in between."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(type(original).__name__)
        self.original = original


class StepThreads:
    """Up to `max_threads` daemon threads, started as calls need them and kept for later."""

    def __init__(self, max_threads: int, name: str = "runcast-step") -> None:
        self.max_threads = max_threads
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)  # one release per thread waiting for a job
        self._results: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._wake_due = False  # a hand-back of results is scheduled on the loop
        self._closed = False

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Call fn(*args) in a worker thread; the future is done when it returns or raises."""
        if self._closed:
            raise RuntimeError("the step threads are shut down")
        future = asyncio.get_running_loop().create_future()
        self._jobs.put((future, fn, args))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_threads:
            thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            try:
                outcome: tuple[asyncio.Future[Any], bool, Any] = (future, True, fn(*args))
            except Exception as exc:  # handed to the awaiting step, like run_in_executor does
                outcome = (future, False, exc)
            except BaseException as exc:
                outcome = (future, False, Raised(exc))
            del job, fn, args
            self._results.append(outcome)
            if not self._wake_due:
                self._wake_due = True
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody awaits
                    future.get_loop().call_soon_threadsafe(self._hand_back)
            del outcome, future
            self._idle.release()

    def _hand_back(self) -> None:
        """On the loop: settle every future whose call has finished."""
        self._wake_due = False  # before draining: a result added after this schedules another hand-back
        results = self._results
        while results:
            future, ok, value = results.popleft()
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def shutdown(self, wait: bool = False) -> None:
        """Cancel the calls not yet begun; threads end after the call they are in (with
        `wait`, this returns once they have)."""
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                with contextlib.suppress(RuntimeError):  # its loop may be closed already (abandon)
                    job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
