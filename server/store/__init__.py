"""Persistence: the `RunStore` interface, the backend-neutral group-commit writer, and the
backends, each picked by the `--db` URL's scheme and imported only when used."""

from __future__ import annotations

import importlib

from .base import (
    ANY_RUN,
    Backend,
    BatchStats,
    Coordination,
    RunExists,
    RunFilter,
    RunLost,
    RunStore,
    StoredEvent,
    StoreError,
    StoreLocked,
)
from .urls import parse_db_url
from .writer import Store

# kind -> (module, class): a new database is one module and one line here (and its URL
# form in urls.py).
BACKENDS = {
    "sqlite": ("server.store.sqlite", "SqliteBackend"),
    "postgresql": ("server.store.postgres", "PostgresBackend"),
}


def backend_for(url: str, node_id: str | None = None) -> Backend:
    """The backend named by a `--db` value (a file path, or a URL: see urls.py); `node_id`
    names this process among the nodes of a shared database."""
    kind, target = parse_db_url(url)
    if kind not in BACKENDS:
        raise StoreError(
            f"--db {url}: unsupported scheme '{kind}://'; use a file path, sqlite:///PATH or postgresql://..."
        )
    module, name = BACKENDS[kind]
    try:
        backend_class = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise StoreError(f"--db {kind}:// needs {exc.name}: pip install 'runcast[postgres]'") from None
    backend: Backend = backend_class(target) if kind == "sqlite" else backend_class(target, node_id)
    return backend


def open_store(url: str, node_id: str | None = None) -> Store:
    """The store named by a `--db` value (not opened yet)."""
    return Store(backend_for(url, node_id))


__all__ = [
    "ANY_RUN",
    "BACKENDS",
    "Backend",
    "BatchStats",
    "Coordination",
    "RunExists",
    "RunFilter",
    "RunLost",
    "RunStore",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoredEvent",
    "backend_for",
    "open_store",
]
