"""Walks one run's steps: a step calls its executor (with retries and a timeout); a group
runs its children as its kind says. Completed steps are not run again after a restart.

Every change of a step's state is an event, recorded through `record`, which folds it
into the run's state (fold.py) and stores both; the run's own events are the engine's.

A step whose `ctx.ask` has no answer yet, or whose `ctx.sleep` has not ended, stops
(`Suspended`): its request or sleep is kept in `requests`, a Parallel's other branches go
on, and the run then stops too, for the engine to store them. Run again after the answers (`continued`),
the steps left running are the same try going on.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from .. import tracing
from ..bounds import DEFAULT_MAX_EVENT_BYTES, EventTooLarge, check_event_size, clip_error, json_value_within
from ..store import RunStore
from ..vocabulary import CURRENT_STEP_STATUSES, StepStatus
from ..workflow import Condition, Group, Loop, Node, Parallel, Router, Step, StepInput, StepOutput, Steps
from .context import AskTimeout, History, Request, Sleep, StepContext, Suspended
from .threads import Raised, StepThreads

Record = Callable[[str, str | None, Any], Awaitable[Any]]
Earlier = Callable[[str], Coroutine[Any, Any, History]]  # a step path -> its stored events (StepContext.history)


class StepFailure(Exception):
    """A step failed for good (no retries left): the run fails."""

    def __init__(self, path: str, error: str) -> None:
        super().__init__(f"step {path!r} failed: {error}")
        self.path = path
        self.error = error


class Rejected(Exception):
    """A step's confirmation was answered "no" and it says `on_reject="cancel"`: the run ends cancelled."""

    def __init__(self, path: str) -> None:
        super().__init__(f"step {path!r} was not confirmed")
        self.path = path


@dataclass
class Outcome:
    """What a step (or group) produced; `ran` is False when it was skipped."""

    content: Any = None
    stop: bool = False
    ran: bool = True


def error_text(exc: BaseException) -> str:
    """`Type: message` of an exception, even one whose str() raises."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # a broken __str__ must not break the run that reports it
        return f"{name} (its message could not be shown)"
    return f"{name}: {text}" if text else name


def is_cancel(exc: BaseException) -> bool:
    """True if `exc` is this task being cancelled (by a cancel, a shutdown, a sibling's
    failure), not a CancelledError that a step raised or returned on its own."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class StepRunner:
    """Runs the plan of one run, recording each step's state as it changes."""

    def __init__(
        self,
        *,
        run_id: str,
        input: Any,
        plan: Sequence[Node],
        states: list[dict[str, Any]],
        record: Record,
        emit: Callable[[str, str, dict[str, Any]], None],
        stream_delta: Callable[[str, str], Awaitable[Any]],
        store: RunStore,
        threads: StepThreads,
        contexts: set[StepContext],
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        earlier: Earlier | None = None,
        continued: bool = False,
    ) -> None:
        self.max_event_bytes = max_event_bytes
        self._earlier = earlier
        # The run goes on after its answers came: a step (or group) left running is the same
        # try going on, with no new step_started.
        self._continued = continued
        self.requests: list[Request | Sleep] = []  # what the steps that stopped asked for, or sleep until
        self.run_id = run_id
        self.input = input
        self.plan = plan
        self.states = {st["name"]: st for st in states}
        self.index = {st["name"]: i for i, st in enumerate(states)}
        self.outputs: dict[str, Any] = {}
        for path, st in self.states.items():
            if st["status"] == StepStatus.COMPLETED:
                self.outputs[path] = self.outputs[path.rsplit("/", 1)[-1]] = st["output"]
        self._record = record
        self._emit = emit
        self._stream_delta = stream_delta
        self._store = store
        self._threads = threads
        self._contexts = contexts

    async def run(self) -> Outcome:
        return await self._sequence(self.plan, "", None)

    def _step_input(self, previous: Any) -> StepInput:
        return StepInput(self.input, previous, dict(self.outputs))

    async def _sequence(self, nodes: Sequence[Node], prefix: str, previous: Any) -> Outcome:
        ran = False
        for node in nodes:
            out = await self._node(node, prefix + node.name, previous)
            if out.ran:
                previous, ran = out.content, True
            if out.stop:
                return Outcome(previous, stop=True)
        return Outcome(previous, ran=ran)

    async def _node(self, node: Node, path: str, previous: Any) -> Outcome:
        st = self.states[path]
        if st["status"] == StepStatus.COMPLETED:  # done before a restart: its stored output feeds the next step
            return Outcome(st["output"])
        if st["status"] == StepStatus.SKIPPED:
            return Outcome(previous, ran=False)
        if isinstance(node, Step):
            return await self._step(node, path, previous)
        return await self._group(node, path, previous)

    # ---- steps -----------------------------------------------------------------------

    def _continuing(self, st: dict[str, Any]) -> bool:
        return self._continued and st["status"] in CURRENT_STEP_STATUSES and st["attempts"] > 0

    async def _step(self, step: Step, path: str, previous: Any) -> Outcome:
        st = self.states[path]
        continuing = self._continuing(st)
        while True:
            fresh = st["attempts"] == 0 or self._earlier is None  # never started: nothing stored before
            if not continuing:  # (a step going on after its answers is running again already)
                await self._started(path, st)
            continuing = False
            context = StepContext(
                self.run_id,
                path,
                st["attempts"],
                functools.partial(self._emit, path),
                asyncio.get_running_loop(),
                self._store.backlog,
                # the context is used from a thread only by a generator step or one that takes it
                threaded=step.kind == "sync_gen" or (step.kind == "sync" and step.wants_context),
                max_event_bytes=self.max_event_bytes,
                earlier=None if fresh or self._earlier is None else functools.partial(self._earlier, path),
                flush=self._store.flush,
            )
            self._contexts.add(context)
            try:
                if step.requires_confirmation and not await context._confirm(step.confirmation_message):
                    await self._skipped(path, "rejected")
                    if step.on_reject == "cancel":
                        raise Rejected(path)
                    return Outcome(previous, ran=False)
                content, stop, error = await self._traced_attempt(step, path, previous, context)
            except Suspended as suspended:  # the step waits (or sleeps) once that is stored
                assert suspended.request is not None
                self.requests.append(suspended.request)
                raise Suspended() from None
            finally:
                self._contexts.discard(context)
            if error is None:
                await self._completed(path, st, content)
                return Outcome(st["output"], stop=stop)
            will_retry = st["attempts"] <= step.max_retries
            await self._failed(path, st, error, will_retry)
            if will_retry:
                await asyncio.sleep(step.retry_delay * 2 ** (st["attempts"] - 1))
                continue
            if step.skip_on_failure:
                await self._skipped(path, "failed")
                return Outcome(previous, ran=False)
            raise StepFailure(path, error)

    async def _traced_attempt(
        self, step: Step, path: str, previous: Any, context: StepContext
    ) -> tuple[Any, bool, str | None]:
        """`_attempt` within its span (`step <path>`), when tracing is on."""
        attributes = {"runcast.step": path, "runcast.attempt": context.attempt}
        with tracing.span(f"step {path}", attributes, errors=False) as span:
            content, stop, error = await self._attempt(step, previous, context)
            if error is not None:
                tracing.mark_failed(span, error)
            return content, stop, error

    async def _attempt(self, step: Step, previous: Any, context: StepContext) -> tuple[Any, bool, str | None]:
        """One try of a step: (its output as JSON, stop, None), or (None, False, why it
        failed). Whatever the step raises is a failure of the step, except this task
        being cancelled."""
        try:
            call = self._call(step, self._step_input(previous), context)
            result = await (asyncio.wait_for(call, step.timeout_seconds) if step.timeout_seconds else call)
            if isinstance(result, StepOutput) and not result.success:
                return None, False, result.error or "step reported failure"
            content, stop = (result.content, result.stop) if isinstance(result, StepOutput) else (result, False)
            return json_value_within(f"the output of step {context.step!r}", content, self.max_event_bytes), stop, None
        except BaseException as exc:  # SystemExit, KeyboardInterrupt and the like fail the step too
            if is_cancel(exc):
                raise
            original = exc.original if isinstance(exc, Raised) else exc
            if isinstance(original, Suspended):
                raise original from None  # not a failure: the step waits for its answer
            context._cancel()  # a thread still running sees it and can stop
            if isinstance(exc, TimeoutError) and step.timeout_seconds and not isinstance(exc, AskTimeout):
                return None, False, f"timed out after {step.timeout_seconds:g} s"
            return None, False, error_text(original)

    async def _call(self, step: Step, step_input: StepInput, context: StepContext) -> Any:
        try:
            return await self._call_executor(step, step_input, context)
        except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
            raise Raised(exc) from None

    async def _call_executor(self, step: Step, step_input: StepInput, context: StepContext) -> Any:
        args: tuple[Any, ...] = (step_input, context) if step.wants_context else (step_input,)
        if step.kind == "async":
            return await step.executor(*args)
        if step.kind == "async_gen":
            return await self._stream(step.executor(*args), context.step)
        if step.kind == "sync_gen":
            return await self._threads.run(_drain_generator, step.executor, args, context)
        return await self._threads.run(step.executor, *args)

    async def _stream(self, items: Any, path: str) -> Any:
        pieces: list[str] = []
        final: Any = None
        async for item in items:
            if isinstance(item, str):
                check_event_size("a piece of streamed output", item, self.max_event_bytes)
                pieces.append(item)
                await self._stream_delta(path, item)
            else:
                final = item
        return final if final is not None else "".join(pieces)

    # ---- groups ----------------------------------------------------------------------

    async def _group(self, group: Group, path: str, previous: Any) -> Outcome:
        st = self.states[path]
        if not self._continuing(st) and (not isinstance(group, Loop) or st["attempts"] == 0):
            await self._started(path, st)
        try:
            out = await self._run_group(group, path, previous)
        except StepFailure as failure:
            await self._failed(path, st, failure.error, False)
            raise
        await self._completed(path, st, out.content if out.ran else None)
        return out

    async def _run_group(self, group: Group, path: str, previous: Any) -> Outcome:
        prefix = path + "/"
        if isinstance(group, Parallel):
            return await self._parallel(group, prefix, previous)
        if isinstance(group, Condition):
            if await _maybe_await(group.evaluator(self._step_input(previous))):
                return await self._sequence(group.children, prefix, previous)
            await self._skip(group.children, prefix, "condition")
            return Outcome(previous, ran=False)
        if isinstance(group, Router):
            chosen = self._route(group, await _maybe_await(group.selector(self._step_input(previous))))
            await self._skip([c for c in group.children if c not in chosen], prefix, "not_chosen")
            return await self._sequence(chosen, prefix, previous)
        if isinstance(group, Loop):
            return await self._loop(group, path, previous)
        assert isinstance(group, Steps)
        return await self._sequence(group.children, prefix, previous)

    async def _branch(self, node: Node, path: str, previous: Any) -> Outcome | None:
        """One branch of a Parallel; None if it stopped to wait for input (its siblings go on)."""
        try:
            return await self._node(node, path, previous)
        except Suspended:
            return None

    async def _parallel(self, group: Parallel, prefix: str, previous: Any) -> Outcome:
        try:
            async with asyncio.TaskGroup() as tasks:  # one failure cancels the others
                running = [tasks.create_task(self._branch(c, prefix + c.name, previous)) for c in group.children]
        except BaseExceptionGroup as errors:
            failure = next((e for e in errors.exceptions if isinstance(e, StepFailure | Rejected)), None)
            if failure is None:
                raise
            raise failure from None
        done = [t.result() for t in running]
        if any(out is None for out in done):
            raise Suspended()  # every branch has finished or is waiting: the run waits
        outs = [out for out in done if out is not None]
        content = {c.name: o.content for c, o in zip(group.children, outs, strict=True) if o.ran}
        path = prefix.removesuffix("/")
        try:  # the one group whose output is more than a child's (already checked) output
            content = json_value_within(f"the output of step {path!r}", content, self.max_event_bytes)
        except EventTooLarge as exc:
            raise StepFailure(path, str(exc)) from None
        return Outcome(content, stop=any(o.stop for o in outs))

    def _route(self, group: Router, picked: Any) -> list[Node]:
        by_name = {c.name: c for c in group.children}
        items = picked if isinstance(picked, list | tuple) else [picked]
        chosen: list[Node] = []
        for item in items:
            name = item if isinstance(item, str) else getattr(item, "name", None)
            if name not in by_name:
                raise StepFailure(group.name, f"selector picked {item!r}, which is not one of {list(by_name)}")
            chosen.append(by_name[name])
        return chosen

    async def _loop(self, group: Loop, path: str, previous: Any) -> Outcome:
        st = self.states[path]
        prefix = path + "/"
        resuming = st["attempts"] > 0  # a restart in the middle of an iteration finishes that iteration
        while True:
            # A new iteration sets the steps inside back to pending (fold.py), with this event.
            iteration = st["attempts"] if resuming else st["attempts"] + 1
            resuming = False
            await self._record("progress", path, {"iteration": iteration, "max_iterations": group.max_iterations})
            out = await self._sequence(group.children, prefix, previous)
            if out.stop:
                return out
            outputs = [StepOutput(content=self.states[prefix + c.name]["output"]) for c in group.children]
            done = st["attempts"] >= group.max_iterations
            if not done and group.end_condition is not None:
                done = bool(await _maybe_await(group.end_condition(outputs)))
            if done:
                return out
            previous = out.content if out.ran else previous

    async def _skip(self, nodes: Sequence[Node], prefix: str, reason: str) -> None:
        """Steps a Condition or Router did not choose (the steps inside them too)."""
        for node in nodes:
            if self.states[prefix + node.name]["status"] == StepStatus.PENDING:
                await self._skipped(prefix + node.name, reason)

    # ---- state changes ---------------------------------------------------------------

    # Each is an event; the step's state follows from it (fold.py), in `record`.

    async def _started(self, path: str, st: dict[str, Any]) -> None:
        await self._record("step_started", path, {"index": self.index[path], "attempt": st["attempts"] + 1})

    async def _failed(self, path: str, st: dict[str, Any], error: str, will_retry: bool) -> None:
        data = {"error": clip_error(error), "attempt": st["attempts"], "will_retry": will_retry}
        await self._record("step_failed", path, data)

    async def _skipped(self, path: str, reason: str) -> None:
        await self._record("step_skipped", path, {"reason": reason})

    async def _completed(self, path: str, st: dict[str, Any], content: Any) -> None:
        """Record a step's end; `content` is a JSON value already (a step's checked output,
        or a group's made of them)."""
        self.outputs[path] = self.outputs[path.rsplit("/", 1)[-1]] = content
        await self._record("step_completed", path, {"output": content})


def _drain_generator(fn: Any, args: tuple[Any, ...], context: StepContext) -> Any:
    """Run a sync generator step in a worker thread, streaming the strings it yields."""
    pieces: list[str] = []
    final: Any = None
    for item in itertools.takewhile(lambda _: not context.cancelled, fn(*args)):
        if isinstance(item, str):
            pieces.append(item)
            context.output(item)
        else:
            final = item
    return final if final is not None else "".join(pieces)
