"""What a `--db` value names, in the forms people type: a database kind and its target.

- A path is an SQLite file: `runs.db`, `./data/runcast.db`, `/var/lib/runcast/runs.db`
  (every character is the file's, `#` and `?` included).
- SQLAlchemy's URLs, which Agno's `SqliteDb(db_url=...)` takes too: `sqlite:///data/x.db`
  is relative to the current folder, `sqlite:////var/x.db` (four slashes) absolute; a
  driver may be named (`sqlite+aiosqlite:///x.db`); `%xx` escapes are decoded.
- `postgresql://user:pass@host:port/db` (or `postgres://`); a driver named the SQLAlchemy
  way (`postgresql+psycopg://`, as in Agno's `PostgresDb`) is dropped: runcast's is asyncpg.
"""

from __future__ import annotations

from urllib.parse import unquote

from .base import StoreError

POSTGRES_SCHEMES = ("postgresql", "postgres")


def parse_db_url(url: str) -> tuple[str, str]:
    """(kind, target): ("sqlite", a file path) or ("postgresql", a URL asyncpg takes), or the
    scheme as written (lowercase, no driver) and the URL for a kind runcast does not know."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "sqlite", url
    kind = scheme.lower().partition("+")[0]
    if kind == "sqlite":
        return "sqlite", _sqlite_path(url, rest)
    if kind in POSTGRES_SCHEMES:
        return "postgresql", f"{kind}://{rest}"
    return kind, url


def _sqlite_path(url: str, rest: str) -> str:
    """The file of `sqlite://` + `rest`, read as SQLAlchemy reads it."""
    if "?" in rest:
        raise StoreError(f"--db {url}: runcast takes no options in an SQLite URL; give the file alone")
    path = unquote(rest.removeprefix("/"))
    if path in ("", ":memory:"):
        raise StoreError(
            f"--db {url}: an in-memory database would lose every run at the first stop; "
            "give a file, e.g. sqlite:///data/runcast.db"
        )
    return path
