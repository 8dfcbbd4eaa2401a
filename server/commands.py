"""One function per operation of the contract: who asks and the parsed request in, the
reply's data out, or one error of the `RuncastError` tree.

`/ws`, HTTP and event streams parse what a client sent, call these, and encode what they
return; no door talks to the engine or the store itself. So every operation answers the
same through every door, and a rule added here (who may do what, next) holds at all of
them at once. Snapshots come out bounded (`bounds.bounded_run`): under a reply's budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .bounds import bounded_run, check_depth
from .protocol import ErrorCode, InvalidInput, RuncastError, RunNotFound, json_bytes
from .runtime import Runtime
from .store import StoredEvent

Snapshot = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, as the door that let them in tells it. Every caller past a door may do
    everything today; identities and what each may reach come next, here."""

    door: str = "python"  # "ws", "http", "python"


class Commands:
    """The operations of the contract on one runtime."""

    def __init__(self, runtime: Runtime, *, max_input_bytes: int) -> None:
        self.runtime = runtime
        self.max_input_bytes = max_input_bytes

    # ---- runs --------------------------------------------------------------------------

    async def start(
        self, caller: Caller, workflow: str, input: Any = None, run_id: str | None = None
    ) -> tuple[Snapshot, bool]:
        """`start`: (the run's snapshot, whether it existed already: an idempotent start)."""
        self._check_value("input", input)
        run, existing = await self.runtime.engine.start(workflow, input, run_id)
        return bounded_run(run), existing

    async def get_run(self, caller: Caller, run_id: str) -> Snapshot:
        """`poll`, and what `subscribe` answers first: the run's snapshot."""
        return bounded_run(await self._run(run_id))

    async def cancel(self, caller: Caller, run_id: str) -> Snapshot:
        return bounded_run(await self.runtime.engine.cancel(run_id))

    async def respond(self, caller: Caller, run_id: str, request_id: str, value: Any) -> Snapshot:
        self._check_value("answer", value)
        return bounded_run(await self.runtime.engine.respond(run_id, request_id, value))

    async def read_events(self, caller: Caller, run_id: str, after: int, limit: int) -> list[StoredEvent]:
        """Stored events with seq > after, at most `limit`; RunNotFound for an unknown run."""
        await self._run(run_id, steps=False)
        return await self.runtime.store.read_events(run_id, after, limit)

    async def follow(self, caller: Caller, run_id: str) -> Snapshot:
        """May `caller` follow this run's events (`subscribe`, an event stream)? Its
        snapshot (unbounded: for deciding), or RunNotFound."""
        return await self._run(run_id, steps=False)

    # ---- lists -------------------------------------------------------------------------

    def list_workflows(self, caller: Caller) -> list[dict[str, Any]]:
        return [wf.describe() for wf in self.runtime.engine.workflows.values()]

    async def list_runs(
        self, caller: Caller, workflow: str | None, status: str | None, limit: int, before: str | None
    ) -> tuple[list[Snapshot], str | None]:
        """A page of runs, newest first, and the cursor of the next page (or None)."""
        try:
            return await self.runtime.store.list_runs(workflow, status, limit, before)
        except ValueError as exc:  # a cursor this server did not give
            raise RuncastError(str(exc), ErrorCode.BAD_REQUEST) from None

    def watch_runs(self, caller: Caller) -> None:
        """May `caller` watch the runs feed? (Everyone past a door may, today.)"""

    # ---- helpers -----------------------------------------------------------------------

    async def _run(self, run_id: str, *, steps: bool = True) -> Snapshot:
        run = await self.runtime.store.get_run(run_id, steps=steps)
        if run is None:
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
