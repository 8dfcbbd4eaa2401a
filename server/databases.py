"""Where a workflow's runs are kept when it is used straight from Python: `SqliteDb` and
`PostgresDb` (the names Agno users know), each a runtime of its own opened on first use.

`arun` and `arespond` go through the same command functions as /ws and HTTP
(server/commands.py), as a caller with no token: the same checks, the same answers.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from typing import Any

from .commands import START_NOW, Caller, Commands
from .engine import Engine
from .protocol import StartOptions
from .runtime import Runtime
from .settings import Settings
from .store.sqlite import read_run_sync
from .store.urls import parse_db_url
from .workflow import RunOutput, Workflow

PYTHON = Caller("python")  # who asks through the Python API: the process itself, no token


class Database:
    """Where a workflow's runs are kept when it is used straight from Python: a runtime
    on `url`, opened on first use in the running loop. See SqliteDb and PostgresDb."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._runtime: Runtime | None = None
        self._commands: Commands | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self._guard: asyncio.Task[None] | None = None

    async def engine_for(self, workflow: Workflow) -> Engine:
        """The engine on this database, opened on first use in the running loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._runtime is not None:  # its loop is gone (a second asyncio.run): let go of it
                self._runtime.abandon()
            self._runtime, self._loop, self._opening = None, loop, asyncio.Lock()
        assert self._opening is not None
        async with self._opening:
            if self._runtime is None:
                settings = self._settings()
                runtime = Runtime(self.url, settings=settings)
                await runtime.open(recover=False)
                self._runtime = runtime
                self._commands = Commands(runtime, max_input_bytes=settings.limits.max_input_bytes)
                self._guard = asyncio.create_task(self._let_go_with_the_loop(runtime))
            engine = self._runtime.engine
            if engine.workflows.get(workflow.name) is not workflow:
                engine.register(workflow)
                self._runtime.scheduler.changed()
                await engine.recover(only={workflow.name})
        return engine

    def _settings(self) -> Settings:
        """Its runtime's settings: a script's runs are kept (no retention), and a kind of
        database may add its own (e.g. a node id)."""
        return Settings(retention_days=0)

    async def _let_go_with_the_loop(self, runtime: Runtime) -> None:
        # asyncio.run() cancels every task when the program's main coroutine returns: that is
        # the moment to let go, so that a script that never calls close() still exits.
        try:
            await asyncio.Event().wait()
        finally:
            if self._runtime is runtime:
                self._runtime = None
                await runtime.close()

    async def commands_for(self, workflow: Workflow) -> Commands:
        """The operations of the contract on this database, with `workflow` registered."""
        await self.engine_for(workflow)
        assert self._commands is not None
        return self._commands

    async def start_run(
        self, workflow: Workflow, input: Any, run_id: str | None, options: StartOptions = START_NOW
    ) -> dict[str, Any]:
        """Start a run of `workflow` on this database (opened on first use)."""
        commands = await self.commands_for(workflow)
        snapshot, _ = await commands.start(PYTHON, workflow.name, input, run_id, options)
        return snapshot

    async def wait_run(self, workflow: Workflow, run_id: str) -> dict[str, Any]:
        """Wait for a run to finish; its final snapshot."""
        engine = await self.engine_for(workflow)
        return await engine.wait(run_id)

    async def respond_run(self, workflow: Workflow, run_id: str, request_id: str, value: Any) -> dict[str, Any]:
        """Answer a request of a waiting run (the run then goes on in this process)."""
        return await (await self.commands_for(workflow)).respond(PYTHON, run_id, request_id, value)

    def _read_run(self, run_id: str) -> dict[str, Any] | None:
        """A run's committed snapshot, from any thread (for the blocking get_run)."""
        raise NotImplementedError

    def get_run(self, run_id: str) -> RunOutput | None:
        snapshot = self._read_run(run_id)
        return RunOutput.from_snapshot(snapshot) if snapshot is not None else None

    async def aget_run(self, run_id: str) -> RunOutput | None:
        if self._runtime is not None and self._loop is asyncio.get_running_loop():
            snapshot: dict[str, Any] | None = await self._runtime.store.get_run(run_id)
        else:
            snapshot = await asyncio.to_thread(self._read_run, run_id)
        return RunOutput.from_snapshot(snapshot) if snapshot is not None else None

    async def close(self) -> None:
        """Stop this database's runs (they resume next time) and close it."""
        runtime, self._runtime, self._commands = self._runtime, None, None
        if runtime is not None:
            await runtime.close()
        if self._guard is not None:
            self._guard.cancel()


class SqliteDb(Database):
    """The runs in one SQLite file."""

    def __init__(self, db_file: str | None = None, db_url: str | None = None, **_options: Any) -> None:
        # The file, or a URL as SQLAlchemy writes it (sqlite:///relative.db, sqlite:////abs.db).
        # Other options (e.g. session_table) are accepted so that code written for other
        # frameworks runs unchanged; runcast keeps its own tables.
        if db_file is None and db_url is not None:
            kind, db_file = parse_db_url(db_url)
            if kind != "sqlite":
                raise ValueError(f"SqliteDb(db_url={db_url!r}) is not an SQLite URL; for PostgreSQL use PostgresDb")
        db_file = db_file or "tmp/runcast.db"
        super().__init__(db_file)
        self.db_file = db_file

    def _read_run(self, run_id: str) -> dict[str, Any] | None:
        return read_run_sync(self.db_file, run_id)


_instances = itertools.count(1)


class PostgresDb(Database):
    """The runs in a cluster's PostgreSQL database (`postgresql://user@host/dbname`):
    runs started here may be run by any node, and any node's runs can be read here.

    Each `PostgresDb` is a node of its own, named `node_id` (default: host name, pid and a
    number); give a fixed one to take this node's unfinished runs back at once on the next
    start, rather than after --takeover-seconds."""

    def __init__(self, db_url: str, node_id: str | None = None, **_options: Any) -> None:
        super().__init__(db_url)
        self.db_url = db_url
        # Two of these in one process must not share a name: a node that opens releases
        # the runs of its name, and one that closes leaves for both.
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}-db{next(_instances)}"

    def _settings(self) -> Settings:
        return Settings(retention_days=0, node_id=self.node_id)

    def _read_run(self, run_id: str) -> dict[str, Any] | None:
        from .store.postgres_sync import read_run_blocking  # asyncpg is an extra: imported when used

        return read_run_blocking(self.db_url, run_id)
