"""Workflow: a named sequence of steps, and the background-run API users know."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from ..protocol import InvalidInput, StartOptions, parse_start_options
from ..schedules import Schedule
from .composition import Node
from .run import RunOutput
from .schema import checker


class RunDatabase(Protocol):
    """Where a workflow used straight from Python keeps its runs (e.g. `SqliteDb`): the
    small interface through which `arun` and `get_run` reach the runtime."""

    async def start_run(
        self, workflow: Workflow, input: Any, run_id: str | None, options: StartOptions = ...
    ) -> dict[str, Any]: ...
    async def wait_run(self, workflow: Workflow, run_id: str) -> dict[str, Any]: ...
    async def respond_run(self, workflow: Workflow, run_id: str, request_id: str, value: Any) -> dict[str, Any]: ...
    def get_run(self, run_id: str) -> RunOutput | None: ...
    async def aget_run(self, run_id: str) -> RunOutput | None: ...
    async def close(self) -> None: ...


InputCheck = Callable[[Any], Any]
OnCrash = Literal["resume", "fail"]
KeyOf = str | Callable[[Any], str | None]  # an input field's name, or a function of the input


class Workflow:
    """A named sequence of steps that runs in the background and streams its events.

    `input_schema` (a JSON Schema subset, see server.schema) declares the input's shape:
    bad input is refused with `invalid_input` naming the field and why, and defaults are
    filled in; `list_workflows` shows it. `validate_input`, if given instead, takes the
    run's input and returns it with defaults filled in, or raises `InvalidInput`.
    `on_crash` says what a restart does with a run that a crash interrupted: "resume" it
    from the first unfinished step, or "fail" it. `concurrency_key` (the name of a top-level
    input field, or a function of the input) gives runs a key: at most `concurrency_limit`
    (default 1) runs with one key run at once; the others wait, pending. `schedules` start
    runs on a clock (`Schedule("nightly", cron="0 3 * * *")`), wherever the workflow is served.
    """

    def __init__(
        self,
        name: str,
        steps: Sequence[Node],
        *,
        description: str = "",
        db: RunDatabase | None = None,
        validate_input: InputCheck | None = None,
        input_schema: dict[str, Any] | None = None,
        on_crash: OnCrash = "resume",
        concurrency_key: KeyOf | None = None,
        concurrency_limit: int | None = None,
        schedules: Sequence[Schedule] = (),
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
            validate_input = checker(input_schema)
        self.validate_input = validate_input
        self.on_crash: OnCrash = on_crash
        if concurrency_limit is not None and concurrency_limit < 1:
            raise ValueError("concurrency_limit must be 1 or more")
        self.concurrency_key = concurrency_key
        self.concurrency_limit = concurrency_limit or 1
        self.schedules = [s.for_workflow(name) for s in schedules]
        if len({s.name for s in self.schedules}) != len(self.schedules):
            raise ValueError(f"workflow {name!r} has two schedules with the same name")

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, steps={[s.name for s in self.steps]})"

    def key_for(self, input: Any) -> str | None:
        """A run's concurrency key from its (checked) input: the named field's value (an
        input without it has none), or what the key function returns."""
        if callable(self.concurrency_key):
            key = self.concurrency_key(input)
        elif self.concurrency_key is not None and isinstance(input, dict):
            key = input.get(self.concurrency_key)
        else:
            key = None
        return None if key is None else str(key)

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

    def _db(self) -> RunDatabase:
        if self.db is None:
            raise RuntimeError(f"workflow {self.name!r} has no db: pass db=SqliteDb(db_file=...)")
        return self.db

    async def arun(
        self,
        input: Any = None,
        *,
        background: bool = False,
        run_id: str | None = None,
        delay: float | None = None,
        start_at: str | datetime | None = None,
        priority: int = 0,
        concurrency_key: str | None = None,
    ) -> RunOutput:
        """Start a run. With background=True return at once (run_id, status); otherwise
        wait for the run to finish and return it. `delay` (seconds) or `start_at` (a
        datetime, or an ISO 8601 string) put its start off; among due pending runs, higher
        `priority` (-100..100) starts first; `concurrency_key` overrides the workflow's."""
        db = self._db()
        when = start_at.isoformat() if isinstance(start_at, datetime) else start_at
        fields = {"delay": delay, "start_at": when, "priority": priority, "concurrency_key": concurrency_key}
        options = parse_start_options(fields)
        snapshot = await db.start_run(self, input, run_id, options)
        if not background:
            snapshot = await db.wait_run(self, snapshot["run_id"])
        return RunOutput.from_snapshot(snapshot)

    async def arespond(self, run_id: str, request_id: str, value: Any) -> RunOutput:
        """Answer a request of a waiting run (see `StepContext.ask`); the run as it is once
        the answer is stored. Raises Conflict, InvalidInput or RunNotFound as `respond` does."""
        return RunOutput.from_snapshot(await self._db().respond_run(self, run_id, request_id, value))

    def get_run(self, run_id: str) -> RunOutput | None:
        """The run as last stored, or None while unknown. Safe from any thread or loop."""
        return self._db().get_run(run_id)

    async def aget_run(self, run_id: str) -> RunOutput | None:
        """The async twin of get_run."""
        return await self._db().aget_run(run_id)
