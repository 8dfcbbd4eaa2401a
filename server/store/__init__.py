"""Persistence: the `RunStore` interface, the backend-neutral group-commit writer, and the
backends, each picked by the `--db` URL's scheme and imported only when used."""

from __future__ import annotations

import importlib

from .base import Backend, BatchStats, RunStore, StoredEvent, StoreError, StoreLocked
from .writer import Store

# scheme -> (module, class): a new database is one module and one line here.
BACKENDS = {
    "sqlite": ("server.store.sqlite", "SqliteBackend"),
}


def backend_for(url: str) -> Backend:
    """The backend named by a `--db` value: a file path, or `scheme://...`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "sqlite", url
    if scheme not in BACKENDS:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise StoreError(f"--db {url}: unsupported scheme '{scheme}://'; use a file path or one of {known}")
    module, name = BACKENDS[scheme]
    backend: Backend = getattr(importlib.import_module(module), name)(rest if scheme == "sqlite" else url)
    return backend


def open_store(url: str) -> Store:
    """The store named by a `--db` value (not opened yet)."""
    return Store(backend_for(url))


__all__ = [
    "BACKENDS",
    "Backend",
    "BatchStats",
    "RunStore",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoredEvent",
    "backend_for",
    "open_store",
]
