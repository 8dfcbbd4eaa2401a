"""Step and the values steps receive and return: the words users already know."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


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


Executor = Callable[..., Any]
ExecutorKind = Literal["async", "async_gen", "sync", "sync_gen"]


class Step:
    """One named unit of work. The executor may be an async function, a plain function
    (run in a worker thread), or a generator of either kind whose yielded strings are
    streamed as `step_output` deltas. It takes a `StepInput`, and a `StepContext` too
    if it accepts a second argument. Instead of an executor, give an `agent` or a `team`.

    A failing attempt is tried again up to `max_retries` times, waiting `retry_delay`
    seconds, doubled each time; `timeout_seconds` fails an attempt that runs longer;
    `skip_on_failure` marks the step skipped instead of failing the run.

    `requires_confirmation=True` asks a yes/no question (`confirmation_message`, answered
    with JSON `true` or `false`) before the executor runs; a "no" skips the step, or
    cancels the run with `on_reject="cancel"`."""

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
        requires_confirmation: bool = False,
        confirmation_message: str | None = None,
        on_reject: Literal["skip", "cancel"] = "skip",
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
        if on_reject not in ("skip", "cancel"):
            raise ValueError(f"step {name!r}: on_reject must be 'skip' or 'cancel', not {on_reject!r}")
        self.requires_confirmation = requires_confirmation
        self.confirmation_message = confirmation_message or f"Run step {name!r}?"
        self.on_reject = on_reject
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
