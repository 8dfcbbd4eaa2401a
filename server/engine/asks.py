"""What waiting runs need around the engine: one answer (or cancel, or timeout) of a run
at a time on this node, the requests' schemas compiled once, and the watch over the
requests' deadlines. The answers themselves change the run, so they are the engine's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..store import RunStore
from ..waiting import cancelled, wait_set
from ..workflow import FINISHED, RunStatus
from ..workflow.schema import Check, compile_schema

log = logging.getLogger("runcast.engine")

LONE_CHECK_SECONDS = 60.0  # how often a lone server looks for expired requests it was not told of
DEADLINES_PAGE = 100  # expired requests closed per look
MAX_CHECKS = 256  # compiled request schemas kept


def open_request(run: dict[str, Any], request_id: str) -> dict[str, Any] | None:
    """The open request `request_id` of a run (its waiting_for entry), or None."""
    return next((w for w in run.get("waiting_for") or () if w.get("request_id") == request_id), None)


def expired(request: dict[str, Any], now: float) -> bool:
    expires_at = request.get("expires_at")
    return expires_at is not None and expires_at <= now


def slept_enough(step: dict[str, Any], now: float) -> bool:
    """True if the step sleeps (`wake_at`, a wire time) and that time has come."""
    until = step.get("wake_at")
    return until is not None and datetime.fromisoformat(until).timestamp() <= now


def not_waiting(run: dict[str, Any], request_id: str) -> str:
    """Why an answer to `request_id` is a conflict, in a line."""
    if run["status"] in FINISHED:
        return f"run {run['run_id']!r} has already {run['status']}; it waits for nothing"
    if run["status"] != RunStatus.WAITING:
        return f"run {run['run_id']!r} is {run['status']}, not waiting for request {request_id!r}"
    open_ids = ", ".join(repr(w["request_id"]) for w in run["waiting_for"]) or "nothing"
    return (
        f"run {run['run_id']!r} does not wait for request {request_id!r} (already answered, or never asked); "
        f"it waits for {open_ids}"
    )


@dataclass
class _Lock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class RunLocks:
    """One holder at a time per run id, with nothing kept for runs nobody holds."""

    def __init__(self) -> None:
        self._locks: dict[str, _Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, run_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(run_id)
        if lock is None:
            lock = self._locks[run_id] = _Lock()
        lock.users += 1
        try:
            async with lock.lock:
                yield
        finally:
            lock.users -= 1
            if lock.users == 0:
                del self._locks[run_id]


class AnswerChecks:
    """Request schemas compiled once (a bounded number of them), by their JSON."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def __call__(self, schema: dict[str, Any]) -> Check:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        check = self._checks.get(key)
        if check is None:
            if len(self._checks) >= MAX_CHECKS:
                self._checks.clear()  # recompiling now and then is cheap
            check = self._checks[key] = compile_schema(schema)
        return check


class Deadlines:
    """Closes expired requests and ended sleeps (by calling `expire(run_id)`), read from
    the store: it survives restarts and does not need the node that asked or slept. A lone
    server sleeps until the next time it knows of (`wake()` when a new one is stored); a
    cluster's nodes also look every `every` seconds, for what other nodes stored."""

    def __init__(
        self,
        store: RunStore,
        workflows: Callable[[], list[str]],
        expire: Callable[[str], Awaitable[None]],
        every: float = LONE_CHECK_SECONDS,
    ) -> None:
        self.store = store
        self._workflows = workflows
        self._expire = expire
        self.every = every
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="runcast-deadlines")

    def wake(self) -> None:
        """Look again now (a request with a timeout or a sleep was stored, a workflow registered)."""
        self._due.set()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)

    async def _watch(self) -> None:
        while True:
            await wait_set(self._due, max(0.0, await self.close_expired()))
            self._due.clear()

    async def _close_one(self, run_id: str) -> bool:
        try:
            await self._expire(run_id)
        except Exception as exc:  # e.g. held by another node for too long: next round
            log.warning("run %s: what it waits for could not be closed: %s", run_id, exc)
            return False
        return True

    async def close_expired(self) -> float:
        """Close what has expired; the seconds until the next look."""
        delay = self.every
        try:
            # Only the workflows this server has: it could not continue the others' runs.
            due = await self.store.due_waits(self._workflows(), DEADLINES_PAGE)
        except Exception as exc:  # the store is away: try again in a while
            log.warning("checking for expired requests and ended sleeps failed: %s", exc)
            return 1.0
        now = time.time()
        # All that is due at once: their writes share commits (10,000 sleeps ending together).
        closed = await asyncio.gather(*(self._close_one(run_id) for run_id, at in due if at <= now))
        if not all(closed):
            delay = 1.0
        later = [at for _, at in due if at > now]
        if later:
            return min(delay, min(later) - time.time())
        if len(due) == DEADLINES_PAGE and delay == self.every:
            return 0.0  # a full page, all closed: there may be more
        return delay
