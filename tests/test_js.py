"""The JavaScript client (js/, `runcast-client`): its own tests (`node --test js/tests/`)
against real servers, run from here so that they get this session's throwaway PostgreSQL
for the cluster case. In CI, Node must be there (make test installs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .pg import Postgres

JS = Path(__file__).resolve().parent.parent / "js"


def test_the_javascript_client_against_real_servers(node: str, postgres: Postgres) -> None:
    env = {**os.environ, "RUNCAST_PYTHON": sys.executable, "RUNCAST_TEST_PG": postgres.new_database()}
    done = subprocess.run([node, "--test", "tests/"], cwd=JS, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = done.stdout[-2000:]
    assert "# fail 0" in summary and "# pass 8" in summary and "# skipped 0" in summary, summary


def test_the_type_declarations_describe_the_api(node: str) -> None:
    """js/tests/typed-example.ts uses every call of the package; tsc --strict accepts it."""
    tsc = JS / "node_modules" / ".bin" / "tsc"
    flags = ["--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext"]
    done = subprocess.run(
        [str(tsc), *flags, "--skipLibCheck", "tests/typed-example.ts"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
