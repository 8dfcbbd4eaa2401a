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
from .writer import Store

# scheme -> (module, class): a new database is one module and one line here.
BACKENDS = {
    "sqlite": ("server.store.sqlite", "SqliteBackend"),
    "postgresql": ("server.store.postgres", "PostgresBackend"),
    "postgres": ("server.store.postgres", "PostgresBackend"),
}


def backend_for(url: str, node_id: str | None = None) -> Backend:
    """The backend named by a `--db` value: a file path, or `scheme://...`; `node_id`
    names this process among the nodes of a shared database."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "sqlite", url
    if scheme not in BACKENDS:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise StoreError(f"--db {url}: unsupported scheme '{scheme}://'; use a file path or one of {known}")
    module, name = BACKENDS[scheme]
    try:
        kind = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise StoreError(f"--db {scheme}:// needs {exc.name}: pip install 'runcast[postgres]'") from None
    backend: Backend = kind(rest) if scheme == "sqlite" else kind(url, node_id)
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
