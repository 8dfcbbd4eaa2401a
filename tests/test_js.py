"""The JavaScript client (js/, `runcast-client`): its own tests (`node --test js/tests/`)
against real servers, run from here so that they get this session's throwaway PostgreSQL
for the cluster case. In CI, Node must be there (make test installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .pg import Postgres

JS = Path(__file__).resolve().parent.parent / "js"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None or shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no node or npm on PATH; in CI, make test must install them (make node)")
        pytest.skip("Node is not installed")
    if not (JS / "node_modules" / "ws").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True)
    return found


def test_the_javascript_client_against_real_servers(node: str, postgres: Postgres) -> None:
    env = {**os.environ, "RUNCAST_PYTHON": sys.executable, "RUNCAST_TEST_PG": postgres.new_database()}
    done = subprocess.run([node, "--test", "tests/"], cwd=JS, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = done.stdout[-2000:]
    assert "# fail 0" in summary and "# pass 7" in summary and "# skipped 0" in summary, summary
