"""Contract 8.3, schedules: their ticks (cron in time zones, `every`), the run id of each
tick, catch-up after downtime; create, list and delete over `/ws` and HTTP with the
contract's errors, on both databases; exactly one run per tick on a two-node cluster
with a node killed."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from client.view import TextView
from server.schedules import Schedule, ScheduleError, tick_run_id

from .harness import BACKENDS, Client, ServerProcess, http

both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
FLOWS = str(Path(__file__).with_name("schedule_flows.py"))
ROOT = Path(__file__).resolve().parent.parent
TICK_ID = re.compile(r"sched:([A-Za-z0-9_\-.]+):(\d{8}T\d{6}Z)")


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _tick_of(run_id: str) -> float:
    match = TICK_ID.fullmatch(run_id)
    assert match is not None, run_id
    return datetime.strptime(match.group(2), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


# ---- ticks, without a server -------------------------------------------------------------


def test_every_ticks_on_multiples_of_its_period_since_the_epoch() -> None:
    s = Schedule("poll", every=30)
    assert s.next_tick(_at("2026-12-07T10:00:10Z")) == _at("2026-12-07T10:00:30Z")
    assert s.next_tick(_at("2026-12-07T10:00:30Z")) == _at("2026-12-07T10:01:00Z")  # strictly after
    ticks = s.ticks_between(_at("2026-12-07T10:00:00Z"), _at("2026-12-07T10:02:00Z"), 100)
    assert ticks == [_at(f"2026-12-07T10:{m}Z") for m in ("00:30", "01:00", "01:30", "02:00")]
    assert s.ticks_between(0, _at("2026-12-07T10:02:00Z"), 2) == ticks[-2:]  # the latest ones


def test_cron_ticks_in_its_time_zone() -> None:
    paris = Schedule("nightly", cron="0 3 * * *", timezone="Europe/Paris")
    assert paris.next_tick(_at("2026-12-07T12:00:00Z")) == _at("2026-12-08T02:00:00Z")  # 03:00 in winter
    assert paris.next_tick(_at("2026-07-07T12:00:00Z")) == _at("2026-07-08T01:00:00Z")  # 03:00 in summer
    week = paris.ticks_between(_at("2026-12-01T00:00:00Z"), _at("2026-12-08T02:00:00Z"), 100)
    assert len(week) == 8 and week[0] == _at("2026-12-01T02:00:00Z") and week[-1] == _at("2026-12-08T02:00:00Z")
    assert tick_run_id("nightly", week[-1]) == "sched:nightly:20261208T020000Z"


def test_catchup_chooses_among_the_ticks_missed_while_no_server_ran() -> None:
    last, now = _at("2026-12-07T10:00:00Z"), _at("2026-12-07T10:00:05.5Z")
    missed = [_at(f"2026-12-07T10:00:0{s}Z") for s in range(1, 6)]
    assert Schedule("a", every=1, catchup="all").due(last, now, catching_up=True) == missed
    assert Schedule("l", every=1).due(last, now, catching_up=True) == missed[-1:]  # "latest", the default
    assert Schedule("s", every=1, catchup="skip").due(last, now, catching_up=True) == []
    assert Schedule("s", every=1, catchup="skip").due(last, now) == missed  # while running, every tick
    assert len(Schedule("a", every=1, catchup="all").due(0, now, catching_up=True)) == 100  # at most 100


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"name": "x"}, "either 'cron' or 'every'"),
        ({"name": "x", "cron": "0 3 * * *", "every": 5}, "either 'cron' or 'every'"),
        ({"name": "x", "cron": "every night"}, "not a cron expression"),
        ({"name": "x", "every": 0.5}, "whole seconds"),
        ({"name": "x", "every": 10, "timezone": "Mars/Olympus"}, "not a time zone"),
        ({"name": "x", "every": 10, "catchup": "some"}, "'catchup' must be one of"),
        ({"name": "a b", "every": 10}, "1 to 40 characters"),
        ({"name": "x" * 41, "every": 10}, "1 to 40 characters"),
    ],
)
def test_a_schedule_that_cannot_be_says_why(fields: dict[str, Any], why: str) -> None:
    with pytest.raises(ScheduleError, match=why):
        Schedule(**fields)


# ---- over the wire -----------------------------------------------------------------------


@both_backends
async def test_schedules_are_made_listed_and_deleted_through_both_doors(
    new_server: Callable[..., ServerProcess],
) -> None:
    server = new_server("--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        listed = (await c.request({"type": "list_schedules"}))["schedules"]
        assert [(s["name"], s["source"]) for s in listed] == [("each-second", "code"), ("nightly", "code")]
        nightly = listed[1]
        assert nightly == {
            **nightly,
            "workflow": "nightly",
            "cron": "0 3 * * *",
            "every": None,
            "timezone": "Europe/Paris",
            "catchup": "latest",
            "input": {"customers": "all"},
        }
        assert datetime.fromisoformat(nightly["next_at"]).astimezone(UTC).hour in (1, 2)  # 03:00 in Paris
        made = await c.request(
            {"type": "create_schedule", "name": "hourly", "workflow": "echo", "cron": "0 * * * *", "input": [1]}
        )
        assert made["type"] == "schedule" and made["schedule"]["source"] == "api"
        assert made["schedule"]["timezone"] == "UTC" and made["schedule"]["last_run_id"] is None
        assert _at(made["schedule"]["next_at"]) % 3600 == 0
        base = server.http_url
        status, body = await asyncio.to_thread(
            http, "POST", f"{base}/api/schedules", {"name": "often", "workflow": "echo", "every": 3600}
        )
        assert status == 201 and body["every"] == 3600 and body["cron"] is None
        status, body = await asyncio.to_thread(http, "GET", f"{base}/api/schedules")
        assert status == 200 and [s["name"] for s in body["schedules"]] == ["each-second", "hourly", "nightly", "often"]
        errors = [
            ({"name": "hourly", "workflow": "echo", "every": 60}, "conflict", 409),  # taken
            ({"name": "nightly", "workflow": "echo", "every": 60}, "conflict", 409),  # taken in code
            ({"name": "x", "workflow": "echo", "cron": "nope"}, "bad_request", 400),
            ({"name": "x", "workflow": "echo"}, "bad_request", 400),
            ({"name": "x", "workflow": "echo", "every": 60, "cron": "* * * * *"}, "bad_request", 400),
            ({"name": "x", "workflow": "missing", "every": 60}, "unknown_workflow", 404),
            ({"name": "x", "workflow": "echo", "every": "60"}, "bad_request", 400),
        ]
        for fields, code, http_status in errors:
            reply = await c.request({"type": "create_schedule", **fields})
            assert reply["type"] == "error" and reply["code"] == code, (fields, reply)
            status, body = await asyncio.to_thread(http, "POST", f"{base}/api/schedules", fields)
            assert (status, body["error"]["code"]) == (http_status, code), fields
        deleted = await c.request({"type": "delete_schedule", "name": "hourly"})
        assert deleted["type"] == "schedule_deleted" and deleted["schedule"]["name"] == "hourly"
        status, body = await asyncio.to_thread(http, "DELETE", f"{base}/api/schedules/often")
        assert status == 200 and body["name"] == "often"
        for name, code, http_status in (("hourly", "schedule_not_found", 404), ("nightly", "conflict", 409)):
            reply = await c.request({"type": "delete_schedule", "name": name})
            assert reply["code"] == code
            status, body = await asyncio.to_thread(http, "DELETE", f"{base}/api/schedules/{name}")
            assert (status, body["error"]["code"]) == (http_status, code)
    finally:
        server.stop()


async def _runs_of(c: Client, name: str) -> list[dict[str, Any]]:
    runs = (await c.request({"type": "list_runs", "limit": 500}))["runs"]
    return sorted((r for r in runs if r["run_id"].startswith(f"sched:{name}:")), key=lambda r: r["run_id"])


@both_backends
async def test_each_tick_starts_one_run_and_a_schedule_survives_a_restart(
    new_server: Callable[..., ServerProcess],
) -> None:
    server = new_server("--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        await c.request({"type": "create_schedule", "name": "pulse", "workflow": "echo", "every": 1, "input": "p"})
        await asyncio.sleep(3.2)
        runs = await _runs_of(c, "pulse")
        ticks = [_tick_of(r["run_id"]) for r in runs]
        assert len(ticks) >= 2 and ticks == [ticks[0] + i for i in range(len(ticks))], ticks  # each tick, once
        for run in runs:
            assert run["input"] == "p" and _at(run["created_at"]) - _tick_of(run["run_id"]) < 1.0  # on time
        listed = {s["name"]: s for s in (await c.request({"type": "list_schedules"}))["schedules"]}
        assert listed["pulse"]["last_run_id"] in {r["run_id"] for r in runs}
        await c.close()
        server.stop()
        server.start()
        c = await Client.connect(server.url)
        listed = {s["name"]: s for s in (await c.request({"type": "list_schedules"}))["schedules"]}
        assert listed["pulse"]["source"] == "api"  # created over the wire: stored
        await asyncio.sleep(2.2)
        later = [_tick_of(r["run_id"]) for r in await _runs_of(c, "pulse")]
        assert len(later) == len(set(later)) and max(later) > max(ticks)  # ticking again, no tick twice
    finally:
        server.stop()


async def test_ticks_missed_while_down_are_caught_up_as_each_schedule_says(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "c.db", "--workflows", FLOWS).start()
    policies = ("all", "latest", "skip")
    try:
        c = await Client.connect(server.url)
        for catchup in policies:
            made = {"type": "create_schedule", "name": catchup, "workflow": "echo", "every": 1, "catchup": catchup}
            await c.request(made)
        await asyncio.sleep(1.5)
        await c.close()
        server.kill()
        down = time.time()
        await asyncio.sleep(4)
        server.start()
        up = time.time()
        c = await Client.connect(server.url)
        await asyncio.sleep(1.5)
        for catchup in policies:
            ticks = [_tick_of(r["run_id"]) for r in await _runs_of(c, catchup)]
            assert len(ticks) == len(set(ticks)) and any(t >= up for t in ticks), (catchup, ticks)  # and it goes on
            # Surely missed while no server ran, and not the latest missed (the server
            # takes up to a second or so to start, and the tick during it is on time):
            missed = [t for t in ticks if down + 0.5 < t < up - 2.0]
            if catchup == "all":
                assert len(missed) >= 1 and ticks == [ticks[0] + i for i in range(len(ticks))], ticks  # no gap
            else:  # "latest" starts one (the latest missed), "skip" none
                assert missed == [] and len(ticks) < ticks[-1] - ticks[0] + 1, ticks
    finally:
        server.stop()


async def test_one_run_per_tick_across_a_cluster_while_a_node_dies(postgres: Any, tmp_path: Path) -> None:
    url = postgres.new_database()
    flags = ("--workflows", FLOWS, "--takeover-seconds", "1")
    nodes = [ServerProcess.node(url, tmp_path, name, *flags).start() for name in ("n1", "n2")]
    try:
        c = await Client.connect(nodes[1].url)
        await c.request({"type": "create_schedule", "name": "both", "workflow": "echo", "every": 1})
        await asyncio.sleep(2.5)
        nodes[0].kill()  # kill -9: the other node goes on ticking, alone
        killed = time.time()
        await asyncio.sleep(2.5)
        runs = await _runs_of(c, "both") + await _runs_of(c, "each-second")
        for name in ("both", "each-second"):  # made over the wire, and in code
            ticks = sorted(_tick_of(r["run_id"]) for r in runs if r["run_id"].startswith(f"sched:{name}:"))
            assert len(ticks) >= 4 and ticks == [ticks[0] + i for i in range(len(ticks))], (name, ticks)
            assert max(ticks) > killed + 1  # none missed after the kill
        assert all(r["status"] == "completed" for r in runs if _tick_of(r["run_id"]) < killed - 1)
    finally:
        for node in nodes:
            node.stop()


def test_the_cli_lists_makes_and_deletes_schedules(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "cli.db", "--workflows", FLOWS) as server:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "client", "schedules", *args, "--url", server.url]
            return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)

        made = cli("--create", "weekly", "--workflow", "echo", "--cron", "0 9 * * 1", "--timezone", "Asia/Tokyo")
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["next_at"].endswith("T00:00:00.000Z")  # 09:00 in Tokyo
        time.sleep(1.2)
        listed = [json.loads(line) for line in cli("--json").stdout.splitlines()]
        assert [s["name"] for s in listed] == ["each-second", "nightly", "weekly"]
        out = io.StringIO()
        TextView(out).schedules(listed)  # what a person at a terminal reads
        text = out.getvalue()
        assert "each-second      ticker       every 1s" in text and "last run sched:each-second:" in text
        assert "cron 0 9 * * 1 (Asia/Tokyo)" in text and "api, catchup latest, last run none yet" in text
        taken = cli("--create", "weekly", "--workflow", "echo", "--every", "60")
        assert taken.returncode == 2 and "exists already" in taken.stderr
        assert cli("--create", "x", "--cron", "* * * * *").returncode == 2  # no --workflow: told what is missing
        assert cli("--delete", "weekly").returncode == 0
        gone = cli("--delete", "weekly")
        assert gone.returncode == 2 and "no schedule named 'weekly'" in gone.stderr
