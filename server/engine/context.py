"""The step context: how a running step reports progress, streams output and asks for input."""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..bounds import DEFAULT_MAX_EVENT_BYTES, check_event_size
from ..wire import utc_iso
from ..workflow.schema import compile_schema

_SCALARS = (int, float, bool, type(None))

History = list[tuple[str, dict[str, Any]]]  # (event, data) of a step's stored events, oldest first

ToolEvent = Literal["tool_call_started", "tool_call_completed", "tool_call_failed"]
_TOOL_EVENTS = frozenset({"tool_call_started", "tool_call_completed", "tool_call_failed"})


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # no default given to `ask`


class Suspended(BaseException):
    """Raised by `ask` when its answer is not there yet (and by `sleep` before its time):
    it unwinds the step (its thread is freed, its coroutine ends), which then waits,
    neither done nor failed. A BaseException, so that a step's `except Exception` does not
    swallow it."""

    def __init__(self, request: Request | Sleep | None = None) -> None:
        super().__init__("waiting for input" if not isinstance(request, Sleep) else "sleeping")
        self.request = request


class AskTimeout(Exception):
    """No answer came within an ask's `timeout`, and it had no default: the step fails
    (and is tried again if it has retries left; a new try asks again)."""


@dataclass
class Request:
    """One question a step asks: what `input_requested` stores and `waiting_for` lists."""

    request_id: str
    prompt: str
    schema: dict[str, Any] | None
    step: str
    timeout: float | None = None
    default: Any = UNSET
    confirmation: bool = False  # asked by `Step(requires_confirmation=True)`, not by the step
    expires_at: float | None = None  # epoch seconds; set when it is stored
    stored: bool = False  # asked before (an `input_requested` holds it)

    def data(self) -> dict[str, Any]:
        """The `input_requested` event's data (and, with `step`, a `waiting_for` entry)."""
        data: dict[str, Any] = {"request_id": self.request_id, "prompt": self.prompt, "schema": self.schema}
        if self.timeout is not None:
            data["timeout"] = self.timeout
            data["expires_at"] = self.expires_at
        if self.default is not UNSET:
            data["default"] = self.default
        if self.confirmation:
            data["kind"] = "confirmation"
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any], step: str) -> Request:
        return cls(
            data["request_id"],
            data.get("prompt", ""),
            data.get("schema"),
            step,
            timeout=data.get("timeout"),
            default=data.get("default", UNSET),
            confirmation=data.get("kind") == "confirmation",
            expires_at=data.get("expires_at"),
            stored=True,
        )


@dataclass
class Sleep:
    """One sleep of a step: what `sleep_started` stores (`until`, a wire time)."""

    step: str
    until: str
    stored: bool = False  # started before (a `sleep_started` holds it)


def new_request_id() -> str:
    """A unique id that sorts by creation time."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(5).hex()}"


def answered_asks(history: History) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The step's asks of this try, in order, and their answers by request id. A try ends at
    a `step_failed`: a retry asks again. Confirmation questions are not the step's asks."""
    start = max((i + 1 for i, (event, _) in enumerate(history) if event == "step_failed"), default=0)
    asked: dict[str, dict[str, Any]] = {}
    answers: dict[str, dict[str, Any]] = {}
    for event, data in history[start:]:
        if event == "input_requested" and data.get("kind") != "confirmation":
            asked.setdefault(data["request_id"], data)
        elif event == "input_received":
            answers[data["request_id"]] = data
    return list(asked.values()), answers


def slept(history: History) -> list[tuple[str, bool]]:
    """The step's sleeps of this try, in order: (until, ended). A retry sleeps again."""
    start = max((i + 1 for i, (event, _) in enumerate(history) if event == "step_failed"), default=0)
    sleeps: list[tuple[str, bool]] = []
    for event, data in history[start:]:
        if event == "sleep_started":
            sleeps.append((data.get("until", ""), False))
        elif event == "sleep_ended" and sleeps:
            sleeps[-1] = (sleeps[-1][0], True)
    return sleeps


def until_of(when: float | datetime | str) -> float:
    """`sleep_until`'s argument as epoch seconds: a datetime (naive is UTC), an ISO time, or
    epoch seconds; ValueError if it is none of those."""
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            raise ValueError(f"sleep_until({when!r}): not an ISO time such as 2026-12-24T09:00:00Z") from None
    if isinstance(when, datetime):
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
    if isinstance(when, int | float) and not isinstance(when, bool) and math.isfinite(when):
        return float(when)
    raise ValueError(f"sleep_until({when!r}): give a datetime, an ISO time or epoch seconds")


def answer_of(asked: dict[str, Any], received: dict[str, Any]) -> Any:
    """The value an answered ask returns; AskTimeout if it timed out with no default."""
    if received.get("timed_out") and "default" not in asked:
        raise AskTimeout(f"no answer came within {asked.get('timeout') or 0:g} s")
    return received.get("value")


async def _done() -> None:
    """An awaitable that is done at once (`await ctx.sleep(0)`)."""


def _small(fields: dict[str, Any]) -> bool:
    """Surely within any event limit, seen without encoding (most progress events)."""
    return len(fields) <= 32 and all(
        isinstance(v, _SCALARS) or (isinstance(v, str) and len(v) <= 1024) for v in fields.values()
    )


class StepContext:
    """Lets a running step report progress, stream output and ask for input, from a
    coroutine or a thread.

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
        flush: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.run_id = run_id
        self.max_event_bytes = max_event_bytes
        self.step = step
        self.attempt = attempt
        self._emit = emit
        self._backlog = backlog
        self._flush = flush
        self._loop = loop
        self._loop_thread = threading.get_ident()
        # Thread steps get their Event now (two threads must not race to make it); others
        # only if they ask, on the loop's thread: most steps never look.
        self._cancelled: threading.Event | None = threading.Event() if threaded else None
        self._earlier = earlier
        self._history: History | None = None if earlier is not None else []
        self._asked = 0  # asks made so far in this execution of the step
        self._asks: tuple[list[dict[str, Any]], dict[str, dict[str, Any]]] | None = None  # answered_asks, once
        self._slept = 0  # sleeps made so far in this execution of the step

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

    def ask(
        self, prompt: str, schema: dict[str, Any] | None = None, *, timeout: float | None = None, default: Any = UNSET
    ) -> Any:
        """Ask a person (or a program) for input, and return the answer (`respond`'s `value`,
        checked against the JSON Schema `schema`). Await it in an async step; in a plain
        function step it returns the answer itself.

        Until the answer comes the step does not wait in memory: it stops here (holding no
        thread and no --max-running slot) and runs again from its start once answered,
        when each ask it had answered returns the stored answer at once. So the code before
        an ask runs again: keep side effects after the asks, or make them safe to repeat.
        With `timeout` (seconds), no answer in time returns `default`, or, with none given,
        raises AskTimeout in the step."""
        if not isinstance(prompt, str):
            raise TypeError("ask(prompt): the prompt must be a string")
        if schema is not None:
            compile_schema(schema)  # a schema that is not JSON Schema fails the step here
        if timeout is not None and not timeout > 0:
            raise ValueError("ask(timeout=...) must be a number of seconds above 0")
        asked = {"prompt": prompt, "schema": schema, "default": default}
        check_event_size("an input request", asked, self.max_event_bytes)
        if threading.get_ident() == self._loop_thread:
            return self._ask_async(prompt, schema, timeout, default)
        return self._answer(self.history_sync(), prompt, schema, timeout, default)

    async def _ask_async(self, prompt: str, schema: dict[str, Any] | None, timeout: float | None, default: Any) -> Any:
        return self._answer(await self.history(), prompt, schema, timeout, default)

    def _answer(
        self, history: History, prompt: str, schema: dict[str, Any] | None, timeout: float | None, default: Any
    ) -> Any:
        """The k-th ask of this execution is the k-th stored request of this try."""
        if self._asks is None:  # once per execution: the history does not change during it
            self._asks = answered_asks(history)
        asked, answers = self._asks
        k, self._asked = self._asked, self._asked + 1
        if k < len(asked):
            request = asked[k]
            received = answers.get(request["request_id"])
            if received is not None:
                return answer_of(request, received)
            raise Suspended(Request.from_data(request, self.step))  # asked before, still open
        raise Suspended(Request(new_request_id(), prompt, schema, self.step, timeout, default))

    def sleep(self, seconds: float) -> Any:
        """Sleep `seconds` durably: await it in an async step; in a plain function step it
        blocks and returns. The step stops here holding no thread and no --max-running
        slot (the run is `sleeping`), whatever restarts happen, and runs again from its
        start once the time has come, when each sleep it had finished returns at once (as
        answered asks do: keep side effects after the sleeps). A sleep of 0 s or less
        returns at once and records nothing."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ValueError(f"sleep({seconds!r}): give a number of seconds")
        if seconds <= 0:
            return _done() if threading.get_ident() == self._loop_thread else None
        return self.sleep_until(time.time() + seconds)

    def sleep_until(self, when: float | datetime | str) -> Any:
        """`sleep` until a time: a datetime (naive is UTC), an ISO time or epoch seconds. A
        time already past still counts as a sleep (recorded, ended at once), so that the
        step's sleeps are the same, in number and order, each time it runs."""
        until = until_of(when)
        if threading.get_ident() == self._loop_thread:
            return self._sleep_async(until)
        return self._sleep(self.history_sync(), until)

    async def _sleep_async(self, until: float) -> None:
        self._sleep(await self.history(), until)

    def _sleep(self, history: History, until: float) -> None:
        """The k-th sleep of this execution is the k-th stored sleep of this try."""
        sleeps = slept(history)
        k, self._slept = self._slept, self._slept + 1
        if k < len(sleeps):
            stored_until, ended = sleeps[k]
            if ended:
                return
            raise Suspended(Sleep(self.step, stored_until, stored=True))
        raise Suspended(Sleep(self.step, utc_iso(until)))

    async def _confirm(self, prompt: str) -> bool:
        """The answer to the step's confirmation question (asked once per run of the step,
        whatever its tries): True to go on."""
        asked: dict[str, Any] | None = None
        answers: dict[Any, dict[str, Any]] = {}
        for event, data in await self.history():
            if event == "input_requested" and data.get("kind") == "confirmation" and asked is None:
                asked = data  # the first one: it is asked once per run of the step
            elif event == "input_received":
                answers.setdefault(data.get("request_id"), data)
        if asked is not None:
            answer = answers.get(asked["request_id"])
            if answer is not None:
                return answer.get("value") is True
            raise Suspended(Request.from_data(asked, self.step))
        schema = {"type": "boolean"}
        raise Suspended(Request(new_request_id(), prompt, schema, self.step, confirmation=True))

    async def stored(self) -> None:
        """Wait until every event this step has sent so far is stored (an agent does, before
        a call with side effects: a crash then leaves its start on record)."""
        if self._flush is not None:
            await self._flush()

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
