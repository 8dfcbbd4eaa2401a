"""A run's snapshot from PostgreSQL for the blocking `get_run` of the Python API, from
any thread: one reader thread with its own event loop keeps a connection per database,
so a script polling `get_run` costs one query a call, not one connection."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg

from . import sql
from .base import row_to_run
from .sql import POSTGRES

_SELECT = POSTGRES.sql(sql.GET_RUN)


class _Reader:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.conns: dict[str, asyncpg.Connection] = {}
        self.turns: dict[str, asyncio.Lock] = {}  # one query at a time on a connection
        threading.Thread(target=self.loop.run_forever, name="runcast-get-run", daemon=True).start()

    async def read(self, url: str, run_id: str) -> dict[str, Any] | None:
        async with self.turns.setdefault(url, asyncio.Lock()):
            return await self._read(url, run_id)

    async def _read(self, url: str, run_id: str) -> dict[str, Any] | None:
        conn = self.conns.get(url)
        if conn is None or conn.is_closed():
            conn = self.conns[url] = await asyncpg.connect(url, timeout=5)
        try:
            row = await conn.fetchrow(_SELECT, run_id)
        except asyncpg.UndefinedTableError:  # nothing was ever stored
            return None
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
            self.conns.pop(url, None)  # the next call connects again
            raise
        return row_to_run(tuple(row)) if row is not None else None


_reader: _Reader | None = None
_lock = threading.Lock()


def read_run_blocking(url: str, run_id: str) -> dict[str, Any] | None:
    """The committed snapshot of a run, or None; blocks the calling thread only."""
    global _reader
    with _lock:
        if _reader is None:
            _reader = _Reader()
    return asyncio.run_coroutine_threadsafe(_reader.read(url, run_id), _reader.loop).result(timeout=30)
