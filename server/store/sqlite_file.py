"""Whether a file can be runcast's SQLite database, said before anything is written to it:
another application's database, a newer schema, a truncated file, a full disk, a folder
that cannot be written, or one in use by another process, each in one plain line."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from typing import IO
from urllib.parse import quote

from .base import StoreError, StoreLocked

MIN_FREE_BYTES = 1 << 20  # below this, a failure to open is put down to a full disk
APPLICATION_ID = 0x52434153  # "RCAS", in the file header: tells runcast's files from others'


def check_file(path: str, schema_version: int) -> None:
    """Raise StoreError, naming the file and what to do, unless `path` is a runcast
    database (or absent or empty, to be made one) of a schema version this runcast knows.
    Reads only: another application's database is never altered."""
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory; give --db the path of a file (e.g. {path}/runcast.db)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path):
        if not os.access(parent, os.W_OK):
            raise StoreError(f"cannot create {path}: its folder is not writable; choose another --db")
        return
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(parent, os.W_OK):
        raise StoreError(f"{path} is not writable by this process (or its folder is not); fix its permissions")
    if os.path.getsize(path) == 0:
        return
    with open(path, "rb") as handle:
        header = handle.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        raise StoreError(f"{path} is not an SQLite database; move it away or choose another --db")
    if int.from_bytes(header[68:72], "big") not in (0, APPLICATION_ID):
        raise StoreError(f"{path} is another application's SQLite database; choose another --db")
    # With a -wal beside it the file may be short: a checkpoint cut off by a full disk wrote
    # the header but not every page, and the WAL still holds them all.
    whole = _wal_size(path) == 0
    if whole and _truncated(path, header):
        raise StoreError(f"{path} is shorter than its header says (truncated); restore it from a backup")
    application_id, version, tables = _read_identity(path, immutable=whole)
    if application_id not in (0, APPLICATION_ID):
        raise StoreError(f"{path} is another application's SQLite database; choose another --db")
    if application_id == 0 and tables and tables != {"runs", "events"} | ({"sqlite_sequence"} & tables):
        raise StoreError(f"{path} is another application's SQLite database; choose another --db")
    if version > schema_version:
        raise StoreError(
            f"{path} has schema version {version}, newer than this runcast knows ({schema_version}); upgrade runcast"
        )


def _wal_size(path: str) -> int:
    """The size of the -wal file beside `path` (0 when there is none)."""
    try:
        return os.path.getsize(path + "-wal")
    except FileNotFoundError:
        return 0


def _read_identity(path: str, *, immutable: bool) -> tuple[int, int, set[str]]:
    """(application_id, user_version, table names) as SQLite sees them, WAL included."""
    # When the file alone is the whole database, read it as immutable: so that a WAL-mode
    # database of another application gets no -wal/-shm files from us.
    mode = "ro&immutable=1" if immutable else "ro"
    try:
        # Quoted: in a URI, `#`, `?` and `//` would mean something else than the file's name.
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode={mode}", uri=True, timeout=5)
        try:
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} cannot be read as an SQLite database ({exc}); move it away or restore it") from None
    return int(application_id), int(version), tables


def _truncated(path: str, header: bytes) -> bool:
    """True if the header's page count (when valid) says the file should be longer."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size_valid = header[24:28] == header[92:96]  # the count is kept only by SQLite 3.7.0 and later
    return size_valid and pages * page_size > os.path.getsize(path)


def take_lock(path: str) -> IO[str]:
    """Hold `path` locked for this process: one process runs a database's runs (a second
    would run the same runs twice)."""
    handle = open(path, "a+")  # noqa: SIM115 - held open for the store's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreLocked(
            f"{path[:-5]} is in use by another runcast process (pid {holder}); "
            "stop it first, or give this one another --db"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def ensure_usable(path: str, schema_version: int) -> None:
    """Raise StoreError (naming the file and what to do) unless this process can open
    the database at `path`: before the server starts, so that it fails fast and plainly.
    A refused start leaves nothing behind: what this made (files, folders) is removed."""
    made = _not_there([path, *(path + end for end in ("-wal", "-shm", ".lock"))], _folders_of(path))
    try:
        _make_folder(path)
        check_file(path, schema_version)
        try:
            lock = take_lock(path + ".lock")
        except OSError as exc:
            raise StoreError(f"cannot lock {path}.lock: {exc.strerror}; {_os_advice(exc)}") from None
        try:
            _try_open(path)
        finally:
            lock.close()
    except BaseException:
        _remove(made)
        raise


def _folders_of(path: str) -> list[str]:
    """The folders above `path`, nearest first."""
    folders, folder = [], os.path.dirname(os.path.abspath(path))
    while folder != os.path.dirname(folder):
        folders.append(folder)
        folder = os.path.dirname(folder)
    return folders


def _not_there(files: list[str], folders: list[str]) -> list[str]:
    """Those of `files` and `folders` that do not exist yet, files first, folders nearest first."""
    return [name for name in [*files, *folders] if not os.path.lexists(name)]


def _remove(names: list[str]) -> None:
    """Remove what a refused start made (files, then empty folders), as far as it can."""
    for name in names:
        with contextlib.suppress(OSError):
            if os.path.isdir(name):
                os.rmdir(name)
            else:
                os.unlink(name)


def _make_folder(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of {path}: {exc.strerror}; choose another --db") from None


def _try_open(path: str) -> None:
    """Open the database as the writer will (WAL mode needs room for its -wal and -shm files),
    and close it again; raise StoreError saying what to do if it cannot be opened."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}; {_disk_advice(path)}") from None


def _disk_advice(path: str) -> str:
    """What to do when SQLite cannot open a file: most often, its disk is full."""
    disk = os.statvfs(os.path.dirname(os.path.abspath(path)))
    if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
        return "free some space on its disk"
    return "check the file, its folder and its disk"


def _os_advice(exc: OSError) -> str:
    """What to do about a failed file operation, in a few words."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space on its disk"
    if exc.errno == errno.EROFS:
        return "its file system is read-only; choose another --db"
    return "check the folder's permissions"
