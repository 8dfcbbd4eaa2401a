"""A throwaway PostgreSQL for tests: `initdb` and `pg_ctl` from Debian's `postgresql`
package, run as the `postgres` user when the tests run as root, on a free port, in a
temp folder. Starts in about a second; gone when the session ends."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from server.store import Store

from .harness import free_port


class PgStore(Store):
    """A store on PostgreSQL as node `node_id`, for store tests: it owns each run it creates,
    as the engine's node does when it has a free slot (take_new, then create_run)."""

    def __init__(self, url: str, node_id: str = "t") -> None:
        from server.store.postgres import PostgresBackend  # asyncpg is an extra: only these tests need it

        super().__init__(PostgresBackend(url, node_id))

    async def create_run(self, row: dict[str, Any]) -> None:
        assert self.coordination is not None
        self.coordination.take_new(row["run_id"])
        await super().create_run(row)


def pg_bin(name: str) -> str | None:
    """A PostgreSQL program: on PATH, or where Debian puts it (/usr/lib/postgresql/N/bin)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def available() -> bool:
    return pg_bin("initdb") is not None and pg_bin("pg_ctl") is not None


class Postgres:
    """One PostgreSQL server of our own: start, restart, stop, and a fresh database per test."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.log = base / "postgres.log"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else list(cmd)
        return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60, cwd="/")

    def start(self) -> Postgres:
        self.base.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.base, "postgres")
            self.base.chmod(0o755)
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        assert initdb and pg_ctl, "PostgreSQL is not installed (make test installs Debian's postgresql when root)"
        self._pg_ctl = pg_ctl
        self._run(initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self._ctl("start")
        return self

    def _ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        result = self._run(
            self._pg_ctl,
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "30",
            action,
            *extra,
            check=False,
        )
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise AssertionError(f"pg_ctl {action} failed: {result.stdout}{result.stderr}{tail}")

    def restart(self) -> None:
        """pg_ctl restart -m fast: every connection is cut, then the server is back."""
        self._ctl("restart", "-m", "fast")

    def outage(self, seconds: float) -> None:
        """Down for `seconds` (pg_ctl stop -m fast), then started again, whatever happens."""
        try:
            self._ctl("stop", "-m", "fast")
            time.sleep(seconds)
        finally:
            self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "immediate")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh, empty database on this server; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        psql = pg_bin("psql") or "psql"
        subprocess.run(
            [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q", "-c", f"CREATE DATABASE {name}"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return self.url(name)
