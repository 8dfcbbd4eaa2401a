"""Workflow, Step and the values steps receive and return: the words users already know."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .protocol import InvalidInput

if TYPE_CHECKING:
    from .engine import RunOutput
    from .runtime import SqliteDb
    from .steps import Node


@dataclass
class StepInput:
    """What a step's executor receives: the run's input and what earlier steps produced."""

    input: Any = None
    previous_step_content: Any = None
    previous_step_outputs: dict[str, Any] = field(default_factory=dict)

    def get_step_content(self, name: str) -> Any:
        """The output of an earlier step, by name (None if it has not run)."""
        return self.previous_step_outputs.get(name)


@dataclass
class StepOutput:
    """What an executor may return. `stop=True` ends the run early, successfully."""

    content: Any = None
    success: bool = True
    error: str | None = None
    stop: bool = False


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
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self._emit = emit
        self._backlog = backlog
        self._loop = loop
        self._loop_thread = threading.get_ident()
        # Thread steps get their Event now (two threads must not race to make it); others
        # only if they ask, on the loop's thread: most steps never look.
        self._cancelled: threading.Event | None = threading.Event() if threaded else None

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
        self._send("progress", fields)

    def output(self, delta: str) -> None:
        """Stream a piece of the step's output as a `step_output` event."""
        self._send("step_output", {"delta": delta})

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


Executor = Callable[..., Any]
ExecutorKind = Literal["async", "async_gen", "sync", "sync_gen"]


class Step:
    """One named unit of work. The executor may be an async function, a plain function
    (run in a worker thread), or a generator of either kind whose yielded strings are
    streamed as `step_output` deltas. It takes a `StepInput`, and a `StepContext` too
    if it accepts a second argument. Instead of an executor, give an `agent` or a `team`.

    A failing attempt is tried again up to `max_retries` times, waiting `retry_delay`
    seconds, doubled each time; `timeout_seconds` fails an attempt that runs longer;
    `skip_on_failure` marks the step skipped instead of failing the run."""

    def __init__(
        self,
        name: str,
        executor: Executor | None = None,
        *,
        agent: Any = None,
        team: Any = None,
        description: str | None = None,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        timeout_seconds: float | None = None,
        skip_on_failure: bool = False,
    ) -> None:
        if not name or "/" in name:
            raise ValueError(f"step name {name!r} must be non-empty and contain no '/'")
        worker = agent if agent is not None else team
        if executor is None and worker is not None:
            executor = worker.stream
        if executor is None or sum(x is not None for x in (agent, team)) > 1:
            raise ValueError(f"step {name!r} needs exactly one of executor=, agent= or team=")
        if max_retries < 0 or retry_delay < 0 or (timeout_seconds is not None and timeout_seconds <= 0):
            raise ValueError(f"step {name!r}: max_retries and retry_delay must be >= 0, timeout_seconds > 0")
        self.name: str = name
        self.executor = executor
        self.description = description
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.timeout_seconds = timeout_seconds
        self.skip_on_failure = skip_on_failure
        self.kind: ExecutorKind = _kind_of(executor)
        self.wants_context = _positional_count(executor) >= 2

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def _kind_of(fn: Executor) -> ExecutorKind:
    target: Any = fn if inspect.isroutine(fn) else getattr(fn, "__call__", fn)  # noqa: B004
    if inspect.isasyncgenfunction(target):
        return "async_gen"
    if inspect.iscoroutinefunction(target):
        return "async"
    if inspect.isgeneratorfunction(target):
        return "sync_gen"
    return "sync"


def _positional_count(fn: Executor) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


InputCheck = Callable[[Any], Any]
OnCrash = Literal["resume", "fail"]


class Workflow:
    """A named sequence of steps that runs in the background and streams its events.

    `input_schema` (a JSON Schema subset, see server.schema) declares the input's shape:
    bad input is refused with `invalid_input` naming the field and why, and defaults are
    filled in; `list_workflows` shows it. `validate_input`, if given instead, takes the
    run's input and returns it with defaults filled in, or raises `InvalidInput`.
    `on_crash` says what a restart does with a run that a crash interrupted: "resume" it
    from the first unfinished step, or "fail" it.
    """

    def __init__(
        self,
        name: str,
        steps: Sequence[Node],
        *,
        description: str = "",
        db: SqliteDb | None = None,
        validate_input: InputCheck | None = None,
        input_schema: dict[str, Any] | None = None,
        on_crash: OnCrash = "resume",
    ) -> None:
        if not name:
            raise ValueError("a workflow needs a name")
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"workflow {name!r} has two steps with the same name: {names}")
        if on_crash not in ("resume", "fail"):
            raise ValueError("on_crash must be 'resume' or 'fail'")
        self.name = name
        self.description = description
        self.steps = list(steps)
        self.db = db
        self.input_schema = input_schema
        if validate_input is None and input_schema is not None:
            from .schema import checker

            validate_input = checker(input_schema)
        self.validate_input = validate_input
        self.on_crash: OnCrash = on_crash

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, steps={[s.name for s in self.steps]})"

    def steps_for(self, input: Any) -> list[Node]:
        """The steps a run with this (checked) input goes through; fixed unless overridden."""
        return self.steps

    def describe(self) -> dict[str, Any]:
        """The entry of `list_workflows` (with `input_schema` when the workflow declares one)."""
        entry: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "steps": [s.name for s in self.steps],
        }
        if self.input_schema is not None:
            entry["input_schema"] = self.input_schema
        return entry

    def checked_input(self, value: Any) -> Any:
        """The input with defaults filled in; raises InvalidInput when it has the wrong shape."""
        if self.validate_input is None:
            return value
        try:
            return self.validate_input(value)
        except InvalidInput:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidInput(f"input for {self.name!r} is invalid: {exc}") from exc

    # ---- the background-workflow API ----------------------------------------------

    def _db(self) -> SqliteDb:
        if self.db is None:
            raise RuntimeError(f"workflow {self.name!r} has no db: pass db=SqliteDb(db_file=...)")
        return self.db

    async def arun(self, input: Any = None, *, background: bool = False, run_id: str | None = None) -> RunOutput:
        """Start a run. With background=True return at once (run_id, status); otherwise
        wait for the run to finish and return it."""
        from .engine import RunOutput

        engine = await self._db().engine_for(self)
        snapshot, _ = await engine.start(self.name, input, run_id)
        if not background:
            snapshot = await engine.wait(snapshot["run_id"])
        return RunOutput.from_snapshot(snapshot)

    def get_run(self, run_id: str) -> RunOutput | None:
        """The run as last stored, or None while unknown. Safe from any thread or loop."""
        return self._db().get_run(run_id)

    async def aget_run(self, run_id: str) -> RunOutput | None:
        """The async twin of get_run."""
        return await self._db().aget_run(run_id)
