"""One function per operation of the contract: who asks and the parsed request in, the
reply's data out, or one error of the `RuncastError` tree.

`/ws`, HTTP and event streams parse what a client sent, call these, and encode what they
return; no door talks to the engine or the store itself. So every operation answers the
same through every door, and who may do what (contract 7.2) is decided here, once, for
all of them: each operation first asks whether the caller's scope allows it
(`forbidden`), then whether the caller reaches the run; a run it does not reach is, to
it, a run that does not exist (`run_not_found`, the same message, the same store read).
Snapshots come out bounded (`bounds.bounded_run`): under a reply's budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .bounds import bounded_run, check_depth
from .engine.runs import Order
from .identities import ANYONE, Authenticator, Identity
from .jsontext import json_bytes
from .protocol import (
    BadRequest,
    Conflict,
    ErrorCode,
    Forbidden,
    InvalidInput,
    RuncastError,
    RunNotFound,
    ScheduleNotFound,
    StartOptions,
    UnknownWorkflow,
)
from .runtime import Runtime
from .schedules import Schedule, ScheduleError
from .store import RunFilter, StoredEvent
from .store.schedules import row_schedule
from .wire import utc_iso

Snapshot = dict[str, Any]
START_NOW = StartOptions()  # a start with no delay, priority 0 and no key


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks (the identity of the token the door accepted) and through which door."""

    door: str = "python"  # "ws", "http", "python"
    identity: Identity = ANYONE


class Commands:
    """The operations of the contract on one runtime."""

    def __init__(self, runtime: Runtime, *, max_input_bytes: int, auth: Authenticator | None = None) -> None:
        self.runtime = runtime
        self.max_input_bytes = max_input_bytes
        self.auth = auth or Authenticator()

    # ---- runs --------------------------------------------------------------------------

    async def start(
        self,
        caller: Caller,
        workflow: str,
        input: Any = None,
        run_id: str | None = None,
        options: StartOptions = START_NOW,
    ) -> tuple[Snapshot, bool]:
        """`start`: (the run's snapshot, whether it existed already: an idempotent start).
        `options` say when it may start and in which order (contract 8.2)."""
        who = caller.identity
        who.require("start")
        if who.runs is not None:
            raise Forbidden("this token reaches only the runs it names: it cannot start runs")
        if not who.may_start(workflow):
            raise Forbidden(f"this token may not start workflow {workflow!r}")
        self._check_value("input", input)
        order = Order(options.scheduled_for(time.time()), options.priority, options.concurrency_key)
        run, existing = await self.runtime.engine.start(workflow, input, run_id, owner=who.sub, order=order)
        return bounded_run(run), existing

    async def get_run(self, caller: Caller, run_id: str) -> Snapshot:
        """`poll`, and what `subscribe` answers first: the run's snapshot."""
        return bounded_run(await self._run(caller, "read", run_id))

    async def cancel(self, caller: Caller, run_id: str) -> Snapshot:
        await self._run(caller, "cancel", run_id, steps=False)
        return bounded_run(await self.runtime.engine.cancel(run_id, by=caller.identity.sub))

    async def respond(self, caller: Caller, run_id: str, request_id: str, value: Any) -> Snapshot:
        await self._run(caller, "respond", run_id, steps=False)
        self._check_value("answer", value)
        return bounded_run(await self.runtime.engine.respond(run_id, request_id, value, by=caller.identity.sub))

    async def read_events(self, caller: Caller, run_id: str, after: int, limit: int) -> list[StoredEvent]:
        """Stored events with seq > after, at most `limit`; RunNotFound for an unknown run."""
        await self._run(caller, "read", run_id, steps=False)
        return await self.runtime.store.read_events(run_id, after, limit)

    async def follow(self, caller: Caller, run_id: str) -> Snapshot:
        """May `caller` follow this run's events (`subscribe`, an event stream)? Its
        snapshot (unbounded: for deciding), or RunNotFound."""
        return await self._run(caller, "read", run_id, steps=False)

    # ---- lists -------------------------------------------------------------------------

    def list_workflows(self, caller: Caller) -> list[dict[str, Any]]:
        """The workflows the caller may start (all of them, but for a `workflows` claim)."""
        who = caller.identity
        who.require("read")
        return [wf.describe() for name, wf in self.runtime.engine.workflows.items() if who.may_start(name)]

    async def list_runs(
        self,
        caller: Caller,
        workflow: str | None,
        status: str | None,
        limit: int,
        before: str | None,
        owner: str | None = None,
    ) -> tuple[list[Snapshot], str | None]:
        """A page of the runs the caller reaches, newest first, and the cursor of the next
        page (or None). `owner` filters, for admins (others see only what they reach)."""
        try:
            return await self.runtime.store.list_runs(self.visible(caller, workflow, status, owner), limit, before)
        except ValueError as exc:  # a cursor this server did not give
            raise RuncastError(str(exc), ErrorCode.BAD_REQUEST) from None

    def visible(
        self, caller: Caller, workflow: str | None = None, status: str | None = None, owner: str | None = None
    ) -> RunFilter:
        """The runs a list or the runs feed shows the caller: those it reaches, filtered."""
        who = caller.identity
        who.require("read")
        if who.admin:
            return RunFilter(workflow, status, owner)
        if who.runs is not None:
            return RunFilter(workflow, status, owner, who.runs)
        if owner is not None and owner != who.sub:
            return RunFilter(workflow, status, owner, frozenset())  # another's runs: none
        return RunFilter(workflow, status, who.sub)

    # ---- schedules (8.3) -------------------------------------------------------------------

    async def create_schedule(self, caller: Caller, fields: dict[str, Any]) -> dict[str, Any]:
        """`create_schedule`: store it and let it tick; its runs are the caller's."""
        who = caller.identity
        who.require("start")
        if who.runs is not None:
            raise Forbidden("this token reaches only the runs it names: it cannot make schedules")
        if not who.may_start(fields["workflow"]):
            raise Forbidden(f"this token may not start workflow {fields['workflow']!r}")
        try:
            schedule = Schedule(**fields, source="api", owner=who.sub)
        except ScheduleError as exc:
            raise BadRequest(str(exc)) from None
        workflow = self.runtime.engine.workflows.get(schedule.workflow)
        if workflow is None:
            known = ", ".join(sorted(self.runtime.engine.workflows)) or "none"
            raise UnknownWorkflow(f"no workflow named {schedule.workflow!r}; known workflows: {known}")
        self._check_value("input", schedule.input)
        workflow.checked_input(schedule.input)  # an input that does not fit fails now, not at each tick
        row = await self.runtime.scheduler.create(schedule)
        return row_schedule(row).describe(time.time(), row.last_run_id)

    async def list_schedules(self, caller: Caller) -> list[dict[str, Any]]:
        """`list_schedules`: those in code, and those made over the wire that the caller
        reaches (an admin: all), of the workflows it may start; by name."""
        who = caller.identity
        who.require("read")
        stored = await self.runtime.scheduler.stored()
        in_code = {s.name: s for s in self.runtime.scheduler.in_code()}
        now, shown = time.time(), []
        for name in sorted(set(stored) | set(in_code)):
            row = stored.get(name)
            schedule = in_code.get(name) or (row_schedule(row) if row is not None and row.source == "api" else None)
            if schedule is None or not who.may_start(schedule.workflow):
                continue
            if schedule.source == "api" and not who.admin and (who.runs is not None or schedule.owner != who.sub):
                continue
            shown.append(schedule.describe(now, row.last_run_id if row is not None else None))
        return shown

    async def delete_schedule(self, caller: Caller, name: str) -> dict[str, Any]:
        """`delete_schedule`: one made over the wire (by the caller, unless an admin)."""
        who = caller.identity
        who.require("start")
        if any(s.name == name for s in self.runtime.scheduler.in_code()):
            raise Conflict(f"schedule {name!r} is defined in code; remove it there")
        row = (await self.runtime.scheduler.stored()).get(name)
        if row is None or row.source != "api" or not (who.admin or (who.runs is None and row.owner == who.sub)):
            raise ScheduleNotFound(f"no schedule named {name!r}")
        await self.runtime.scheduler.delete(name)
        return row_schedule(row).describe(time.time(), row.last_run_id)

    # ---- tokens ------------------------------------------------------------------------

    def mint_token(self, caller: Caller, fields: dict[str, Any]) -> dict[str, Any]:
        """`mint_token`: a token that can do no more than the caller (contract 7.3)."""
        token, expires = self.auth.mint(caller.identity, fields)
        return {"token": token, "expires_at": utc_iso(expires)}

    # ---- helpers -----------------------------------------------------------------------

    async def _run(self, caller: Caller, action: str, run_id: str, *, steps: bool = True) -> Snapshot:
        """The run, if the caller's scope allows `action` (else Forbidden) and it reaches
        the run; a run it does not reach is RunNotFound, exactly as one that does not exist."""
        caller.identity.require(action)
        run = await self.runtime.store.get_run(run_id, steps=steps)
        if run is None or not caller.identity.reaches(run_id, run.get("owner")):
            raise RunNotFound(f"no run with id {run_id!r}")
        return run

    def _check_value(self, what: str, value: Any) -> None:
        """A run's input or an answer: at most --max-input-bytes of JSON, not too deep."""
        size = len(json_bytes(value))
        if size > self.max_input_bytes:
            raise InvalidInput(
                f"{what} is {size} bytes of JSON; the limit is {self.max_input_bytes} (--max-input-bytes)"
            )
        check_depth(value, what)
