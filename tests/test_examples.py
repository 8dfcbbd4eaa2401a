"""Every program in examples/ runs to the end, offline."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, cwd: Path, *args: str) -> str:
    # PYTHONPATH: the examples import `server` from this checkout, not whichever one is installed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")} | {
        "RUNCAST_POLL_SECONDS": "0.2",
        "PYTHONPATH": str(EXAMPLES.parent),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_background_poll_port(tmp_path: Path) -> None:
    out = run_example("background_poll.py", tmp_path)
    assert "Run ID:" in out and "Poll #1" in out
    assert "(Content Creation Workflow): completed" in out
    assert "Research Step                completed" in out and "AI trends in 2024" in out
    assert (tmp_path / "tmp" / "workflow.db").exists()
    with contextlib.closing(sqlite3.connect(tmp_path / "tmp" / "workflow.db")) as db:
        rows = db.execute("SELECT frame FROM events WHERE event = 'tool_call_completed' ORDER BY seq").fetchall()
    done = [json.loads(frame) for (frame,) in rows]
    assert [(e["step"], e["data"]["tool"]) for e in done] == [
        ("Research Step", "get_top_hackernews_stories"),
        ("Research Step", "web_search"),
    ]


def test_parallel_research(tmp_path: Path) -> None:
    out = run_example("parallel_research.py", tmp_path)
    for source in ("web", "papers", "forums"):
        assert f"gather/{source:<9} completed" in out and f"- {source}: 3 notes" in out


@pytest.mark.parametrize("times", [1, 2])
def test_flaky_retry(tmp_path: Path, times: int) -> None:
    for _ in range(times):  # a second run in the same folder starts afresh
        assert "completed: answer after 3 attempts (3 attempts)" in run_example("flaky_retry.py", tmp_path)


@pytest.mark.parametrize(("args", "output"), [([], "{'published': "), (["--revise", "shorter"], "(revised: shorter)")])
def test_approval(tmp_path: Path, args: list[str], output: str) -> None:
    out = run_example("approval.py", tmp_path, *args)
    assert out.startswith("waiting: Publish this draft?\ncompleted: ") and output in out


def test_app_backend_hands_the_browser_a_token_for_one_run(tmp_path: Path) -> None:
    import jwt

    from .harness import ServerProcess, http

    secret = "e" * 40
    flows = Path(__file__).with_name("ask_flows.py")
    with ServerProcess(tmp_path / "app.db", "--auth-secret", secret, "--workflows", str(flows)) as server:
        env_extra = {"RUNCAST_URL": server.http_url, "RUNCAST_AUTH_SECRET": secret}
        os.environ.update(env_extra)
        try:
            out = json.loads(run_example("app_backend.py", tmp_path, "--once", "alice"))
        finally:
            for key in env_extra:
                os.environ.pop(key)
        claims = jwt.decode(out["token"], secret, algorithms=["HS256"])
        assert (claims["sub"], claims["scope"], claims["runs"]) == ("alice", "read respond", [out["run_id"]])
        assert out["watch"].endswith(f"#/runs/{out['run_id']}?token={out['token']}")
        status, run = http(
            "GET", f"{server.http_url}/api/runs/{out['run_id']}", None, {"Authorization": f"Bearer {out['token']}"}
        )
        assert status == 200 and run["owner"] == "alice"
        status, _ = http(
            "POST", server.http_url + "/api/runs", {"workflow": "echo"}, {"Authorization": f"Bearer {out['token']}"}
        )
        assert status == 403  # it can watch and answer that run, and nothing more


def test_follow_up_sleeps_durably_and_sends_once(tmp_path: Path) -> None:
    out = run_example("follow_up.py", tmp_path, "--in", "1")
    lines = out.splitlines()
    assert "welcome sent to ada@example.com; sleeping until 20" in lines[0]
    assert lines[-1] == "completed: follow-up sent to ada@example.com"
    with contextlib.closing(sqlite3.connect(tmp_path / "tmp" / "examples.db")) as db:
        events = [e for (e,) in db.execute("SELECT event FROM events ORDER BY seq")]
    assert events.count("sleep_started") == events.count("sleep_ended") == 1


def test_nightly_batch_runs_each_customer_once_a_tick(tmp_path: Path) -> None:
    out = run_example("nightly_batch.py", tmp_path, "--every", "1", "--for", "2.2")
    lines = out.splitlines()
    assert lines[-1].endswith("runs for 3 customers")
    runs = [line.split() for line in lines[:-1]]
    ticks: dict[str, set[str]] = {}
    for run_id, status, *output in runs:
        _, schedule, tick = run_id.split(":")
        ticks.setdefault(tick, set()).add(schedule)
        assert status == "completed" and " ".join(output) == f"invoiced {schedule.removeprefix('invoices-')}"
    assert len(ticks) >= 2 and all(
        names == {"invoices-acme", "invoices-globex", "invoices-initech"} for names in ticks.values()
    )
