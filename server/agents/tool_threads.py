"""Threads for plain-function tools: a pool of their own, apart from the steps' threads and
asyncio's default executor, so that tools that hang cannot starve anything else.

- At most `size` calls run at once. A call first waits for a free thread; its timeout
  starts only when it runs, so time spent waiting is never charged to it.
- A thread cannot be stopped: a call that times out (or whose run is cancelled) is left
  to finish, its result unused. It no longer counts against `size`; another thread takes
  its place, so what other runs get does not shrink.
- At most `max_hung` such calls may hang at once. Past that, new calls fail at once,
  saying why (the model is told, like any failed call), until hung calls end.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Callable
from typing import Any

from ..engine.threads import StepThreads
from ..settings import DEFAULT_MAX_HUNG, DEFAULT_TOOL_THREADS


class ToolsHung(Exception):
    """Too many tool calls hang in their threads: no new call is started."""


class ToolThreads:
    """`size` threads for calls, and room for `max_hung` calls that would not end."""

    def __init__(self, size: int = DEFAULT_TOOL_THREADS, max_hung: int = DEFAULT_MAX_HUNG) -> None:
        if size < 1 or max_hung < 0:
            raise ValueError("tool threads: size must be at least 1 and max_hung at least 0")
        self.size = size
        self.max_hung = max_hung
        # Every call that passed the checks below has a thread at once: `size` running, up to
        # `max_hung` hung, and up to `size` more that were running when the last ones hung.
        # Daemon threads, started as needed: a hung call never holds up the server's exit.
        self._threads = StepThreads(2 * size + max_hung, name="runcast-tool")
        self.running = 0  # calls in a thread that count against `size`
        self.hung = 0  # calls given up on, still in their threads
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float) -> Any:
        """fn(*args, **kwargs) in a tool thread, within `timeout` seconds of starting there;
        TimeoutError past it, ToolsHung when too many calls hang already."""
        if self.hung >= self.max_hung:
            raise ToolsHung(
                f"{self.hung} earlier tool calls still hang in their threads (the limit, --max-hung-tools); "
                "no new call is started until some end: fix or time-limit the tool that blocks"
            )
        await self._take_thread()
        # In the caller's context: a tool reads `current_tool_call()` there too.
        future = self._threads.run(functools.partial(contextvars.copy_context().run, fn, *args, **kwargs))
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout)
            if not done:
                raise TimeoutError
            return future.result()
        finally:
            if not future.done():  # timed out or cancelled: its thread goes on without us
                self.hung += 1
                future.add_done_callback(self._ended_hung)
            self._give_back()

    async def _take_thread(self) -> None:
        while self.running >= self.size:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._wake_next()  # woken, but leaving: the turn goes to the next one
                raise
            finally:
                if turn in self._waiting:
                    self._waiting.remove(turn)
        self.running += 1

    def _give_back(self) -> None:
        self.running -= 1
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def _ended_hung(self, future: asyncio.Future[Any]) -> None:
        self.hung -= 1
        if not future.cancelled():
            future.exception()  # seen: a hung call's failure is nobody's to report


_pool = ToolThreads()


def tool_threads() -> ToolThreads:
    """The process's pool for plain-function tools."""
    return _pool


def configure_tool_threads(size: int = DEFAULT_TOOL_THREADS, max_hung: int = DEFAULT_MAX_HUNG) -> None:
    """Size the pool (at startup, before any tool runs)."""
    global _pool
    _pool = ToolThreads(size, max_hung)
