from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .harness import OPEN_CLIENTS, ServerProcess


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Every test's sockets are closed after it, whatever it did."""
    yield
    while OPEN_CLIENTS:
        client = OPEN_CLIENTS.pop()
        with contextlib.suppress(Exception):
            await client.ws.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh real server (uvicorn, SQLite file) on a free port, stopped after the test."""
    proc = ServerProcess(tmp_path / "runcast.db").start()
    yield proc
    proc.stop()
