"""The step context: how a running step reports progress and streams output."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from ..bounds import DEFAULT_MAX_EVENT_BYTES, check_event_size

_SCALARS = (int, float, bool, type(None))

History = list[tuple[str, dict[str, Any]]]  # (event, data) of a step's stored events, oldest first

ToolEvent = Literal["tool_call_started", "tool_call_completed", "tool_call_failed"]
_TOOL_EVENTS = frozenset({"tool_call_started", "tool_call_completed", "tool_call_failed"})


def _small(fields: dict[str, Any]) -> bool:
    """Surely within any event limit, seen without encoding (most progress events)."""
    return len(fields) <= 32 and all(
        isinstance(v, _SCALARS) or (isinstance(v, str) and len(v) <= 1024) for v in fields.values()
    )


class StepContext:
    """Lets a running step report progress and stream output, from a coroutine or a thread.

    An executor receives it as a second argument when it takes one:
    `def fetch(step_input, ctx): ctx.progress(current=1, total=3)`.
    """

    def __init__(
        self,
        run_id: str,
        step: str,
        attempt: int,
        emit: Callable[[str, dict[str, Any]], None],
        loop: asyncio.AbstractEventLoop,
        backlog: Callable[[], Coroutine[Any, Any, None]] | None = None,
        *,
        threaded: bool = True,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        earlier: Callable[[], Coroutine[Any, Any, History]] | None = None,
    ) -> None:
        self.run_id = run_id
        self.max_event_bytes = max_event_bytes
        self.step = step
        self.attempt = attempt
        self._emit = emit
        self._backlog = backlog
        self._loop = loop
        self._loop_thread = threading.get_ident()
        # Thread steps get their Event now (two threads must not race to make it); others
        # only if they ask, on the loop's thread: most steps never look.
        self._cancelled: threading.Event | None = threading.Event() if threaded else None
        self._earlier = earlier
        self._history: History | None = None if earlier is not None else []

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled: a thread step should return soon."""
        return self._cancelled is not None and self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout` seconds in a thread step, waking early on cancel."""
        if self._cancelled is None:
            self._cancelled = threading.Event()
        return self._cancelled.wait(timeout)

    def progress(self, **fields: Any) -> None:
        """Send a `progress` event with any fields, e.g. current, total, message."""
        if not _small(fields):
            check_event_size("a progress event", fields, self.max_event_bytes)
        self._send("progress", fields)

    def output(self, delta: str, **fields: str) -> None:
        """Stream a piece of the step's output as a `step_output` event; `fields` are added
        to its data (a coordinating team's member names itself: `agent`, `parent_call_id`)."""
        data = {**fields, "delta": delta}
        check_event_size("a piece of streamed output", data if fields else delta, self.max_event_bytes)
        self._send("step_output", data)

    def tool_event(self, event: ToolEvent, data: dict[str, Any]) -> None:
        """Send a `tool_call_*` event (agent steps do, around each tool call); raise
        EventTooLarge, sending nothing, when `data` is over the event limit."""
        if event not in _TOOL_EVENTS:
            raise ValueError(f"not a tool event: {event!r}")
        check_event_size(f"a {event} event", data, self.max_event_bytes)
        self._send(event, data)

    async def history(self) -> History:
        """This step's stored events since the step last completed (this try's step_started too),
        as (event, data), oldest first: what an interrupted step had already done (an
        agent's finished tool calls, the answers to its questions). Empty on a first try;
        read from the store once, on first use."""
        if self._history is None:
            assert self._earlier is not None
            self._history = await self._earlier()
        return self._history

    def history_sync(self) -> History:
        """`history()` for a step running in a worker thread."""
        if self._history is None:
            return asyncio.run_coroutine_threadsafe(self.history(), self._loop).result()
        return self._history

    async def drain(self) -> None:
        """Wait while the store is far behind. An async step that emits events in a tight
        loop should await this now and then, so that it cannot fill the server's memory."""
        if self._backlog is not None:
            await self._backlog()

    def _send(self, event: str, data: dict[str, Any]) -> None:
        if threading.get_ident() == self._loop_thread:
            self._emit(event, data)
            return
        # From a worker thread: hand over in order to the loop, and wait (this thread
        # only) while the store is far behind.
        if self._backlog is not None:
            asyncio.run_coroutine_threadsafe(self._backlog(), self._loop).result()
        self._loop.call_soon_threadsafe(self._emit, event, data)

    def _cancel(self) -> None:
        if self._cancelled is None:
            self._cancelled = threading.Event()
        self._cancelled.set()
