"""A run's snapshot from PostgreSQL for the blocking `get_run` of the Python API, from
any thread: one short connection, in a thread of its own with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg

from .base import RUN_COLUMNS, row_to_run


async def _read(url: str, run_id: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        row = await conn.fetchrow(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = $1", run_id)
    except asyncpg.UndefinedTableError:  # nothing was ever stored
        return None
    finally:
        await conn.close()
    return row_to_run(tuple(row)) if row is not None else None


def read_run_blocking(url: str, run_id: str) -> dict[str, Any] | None:
    """The committed snapshot of a run, or None; blocks the calling thread only."""
    result: list[dict[str, Any] | None] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(_read(url, run_id)))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=work, name="runcast-get-run")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
