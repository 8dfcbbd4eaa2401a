"""The dashboard in real Chromium (Debian's package) against a real server on a free port.

Screenshots of each view go to artifacts/ (git-ignored). Every test fails on a console error or
an uncaught page error (the `page` fixture, conftest.py), except the one message the restart
test expects while the server is down.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .browser import WS_REFUSED, Console, get_run, post_run, screenshot, wait_finished
from .harness import ServerProcess, events_over_http, http


@pytest.fixture(autouse=True)
def close_clients() -> None:
    """Replaces conftest's async fixture of this name for this module: these tests open no
    harness Clients, and sync Playwright's event loop stays current in this thread while the
    browser lives, so no other event loop may run here (pytest-asyncio's would refuse to)."""


def step_texts(page: Page) -> dict[str, str]:
    """The streamed text each step shows, exactly (no whitespace folding)."""
    return dict(
        page.locator("#timeline .step").evaluate_all(
            "items => items.map(li => [li.dataset.step, li.querySelector('.step-text').textContent])"
        )
    )


def run_ids_shown(page: Page) -> list[str]:
    return list(page.locator("#runs-body tr").evaluate_all("rows => rows.map(row => row.dataset.runId)"))


def test_start_content_from_the_form(server: ServerProcess, page: Page) -> None:
    page.goto(server.http_url + "/#/workflows")
    expect(page.locator("#workflow-list .workflow")).to_have_count(7)
    content = page.locator('#workflow-list .workflow[data-workflow="content"]')
    expect(content.locator(".step-names li")).to_have_text(["research", "plan", "write"])
    expect(content).to_contain_text("research, plan and write")
    page.select_option("#start-workflow", "content")
    page.fill("#start-input", json.dumps({"topic": "AI trends"}))
    screenshot(page, "workflows.png")
    page.click("#start-button")

    expect(page).to_have_url(re.compile(r"#/runs/[A-Za-z0-9_.:-]+$"))
    run_id = page.url.split("#/runs/")[1]
    # Streamed text shows while the run is still going.
    page.wait_for_function(
        """() => document.querySelector('#view-run').dataset.status === 'running'
              && document.querySelector('[data-step="research"] .step-text')?.textContent.length > 0"""
    )
    expect(page.locator("#run-status")).to_have_text("completed", timeout=20_000)

    run = get_run(server, run_id)
    assert run["status"] == "completed"
    expect(page.locator("#timeline .step .status")).to_have_text(["completed"] * 3)
    texts = step_texts(page)
    assert texts["write"] == run["output"]
    assert texts == {step["name"]: step["output"] for step in run["steps"]}
    assert page.locator("#run-output").text_content() == run["output"]
    expect(page.locator("#run-cancel")).to_be_hidden()
    screenshot(page, "run.png")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "run-dark.png")


def test_the_tools_run_shows_its_tool_calls_inside_the_step(server: ServerProcess, page: Page) -> None:
    run_id = post_run(server, "tools", {"topic": "tool calls"})["run_id"]
    page.goto(f"{server.http_url}/#/runs/{run_id}")

    calls = page.locator('[data-step="research"] .step-tools .tool-call')
    expect(calls.locator(".tool-name")).to_have_text(["word_count", "search_notes"])
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(calls.locator(".status")).to_have_text(["completed", "completed"])
    expect(calls.nth(0)).to_contain_text('({"text":"tool calls"})')
    expect(calls.nth(0).locator(".tool-result")).to_have_text("→ 2")
    expect(calls.nth(1).locator(".tool-result")).to_contain_text("A run streams its events live")
    run = wait_finished(server, run_id)
    assert step_texts(page)["research"] == run["output"]
    screenshot(page, "run-tools.png")


def test_deep_link_to_finished_runs(server: ServerProcess, page: Page) -> None:
    chain = wait_finished(server, post_run(server, "chain", {"n": 3, "delay": 0.01})["run_id"])
    failed = wait_finished(server, post_run(server, "fail", {"message": "kaput"})["run_id"])

    page.goto(f"{server.http_url}/#/runs/{chain['run_id']}")
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#run-id")).to_have_text(chain["run_id"])
    expect(page.locator("#timeline .step-name")).to_have_text(["s1", "s2", "s3"])
    expect(page.locator("#timeline .step .status")).to_have_text(["completed"] * 3)
    expect(page.locator("#timeline .step-output")).to_have_text(["1", "2", "3"])
    expect(page.locator("#run-result-title")).to_have_text("Output")
    expect(page.locator("#run-output")).to_have_text("3")
    expect(page.locator("#view-run")).to_have_attribute("data-seq", str(chain["last_seq"]))
    expect(page.locator("#run-cancel")).to_be_hidden()

    page.goto(f"{server.http_url}/#/runs/{failed['run_id']}")
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("#timeline .step .status")).to_have_text(["completed", "failed"])
    expect(page.locator('[data-step="boom"] .step-error')).to_contain_text("kaput")
    expect(page.locator("#run-result-title")).to_have_text("Error")
    expect(page.locator("#run-output")).to_have_text(failed["error"])

    page.goto(f"{server.http_url}/#/runs/no-such-run")
    expect(page.locator("#run-message")).to_contain_text("There is no run with id no-such-run.")

    # A link that is not valid percent-encoding is shown as an error; the page stays alive.
    page.goto(f"{server.http_url}/#/runs/%")
    expect(page.locator("#run-message")).to_contain_text("run_id")
    page.evaluate(f"location.hash = '#/runs/{chain['run_id']}'")
    expect(page.locator("#run-id")).to_have_text(chain["run_id"])
    expect(page.locator("#run-status")).to_have_text("completed")


def test_reconnects_and_resumes_after_a_server_restart(server: ServerProcess, page: Page, console: Console) -> None:
    console.allow(WS_REFUSED)
    run_id = post_run(server, "content", {"topic": "AI trends"})["run_id"]
    page.goto(f"{server.http_url}/#/runs/{run_id}")
    expect(page.locator("#connection")).to_have_text("Connected")
    # Kill the server while the first step streams: after the restart that step runs again.
    page.wait_for_function("document.querySelector('[data-step=\"research\"] .step-text')?.textContent.length > 20")
    server.kill()
    expect(page.locator("#connection")).to_contain_text("reconnecting")
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    screenshot(page, "reconnecting.png", full_page=False)
    server.restart()
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(page.locator("#run-status")).to_have_text("completed", timeout=20_000)

    run = get_run(server, run_id)
    assert run["status"] == "completed"
    expect(page.locator("#run-resumed")).to_contain_text("Resumed after a server restart")
    for step in run["steps"]:  # the interrupted step ran again: its second attempt is shown
        attempt = f"attempt {step['attempts']}" if step["attempts"] > 1 else ""
        expect(page.locator(f'[data-step="{step["name"]}"] .step-attempt')).to_have_text(attempt)
    assert any(step["attempts"] == 2 for step in run["steps"])
    # Every event exactly once: the seq shown is the last one, and each text is its step's output.
    expect(page.locator("#view-run")).to_have_attribute("data-seq", str(run["last_seq"]))
    texts = step_texts(page)
    assert texts["write"] == run["output"]
    assert texts == {step["name"]: step["output"] for step in run["steps"]}


def test_a_run_with_ten_thousand_events(server: ServerProcess, page: Page) -> None:
    run_id = post_run(server, "count", {"n": 10_000, "delay": 0})["run_id"]
    page.goto(f"{server.http_url}/#/runs/{run_id}")  # opened while it runs: live, then caught up
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    run = get_run(server, run_id)
    expect(page.locator("#view-run")).to_have_attribute("data-seq", str(run["last_seq"]))
    expect(page.locator('[data-step="count"] .progress-label')).to_have_text("10000 / 10000")
    expect(page.locator('[data-step="count"] progress')).to_have_js_property("value", 10_000)
    expect(page.locator("#run-output")).to_have_text(json.dumps({"count": 10_000}, indent=2))


def test_the_form_checks_json_and_shows_server_errors(server: ServerProcess, page: Page) -> None:
    sent: list[dict[str, Any]] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
    page.goto(server.http_url + "/#/workflows")
    expect(page.locator("#start-workflow option")).to_have_count(7)
    page.select_option("#start-workflow", "count")
    expect(page.locator("#start-input")).to_have_value(json.dumps({"n": 5, "delay": 0.2}, indent=2))

    page.fill("#start-input", '{"n": 5,')
    page.click("#start-button")
    expect(page.locator("#input-error")).to_be_visible()
    expect(page.locator("#input-error")).to_contain_text("not valid JSON")
    expect(page.locator("#start-input")).to_have_attribute("aria-invalid", "true")
    assert [m for m in sent if m["type"] == "start"] == []

    page.fill("#start-input", '{"n": "five"}')
    expect(page.locator("#input-error")).to_be_hidden()
    page.click("#start-button")
    expect(page.locator("#start-error")).to_contain_text("invalid_input")
    expect(page.locator("#start-error")).to_contain_text("field 'n' must be an integer")
    assert [m["input"] for m in sent if m["type"] == "start"] == [{"n": "five"}]
    expect(page).to_have_url(re.compile(r"#/workflows$"))
    assert http("GET", server.http_url + "/api/runs")[1]["runs"] == []


def test_runs_table_order_filters_paging_and_live_status(server: ServerProcess, page: Page) -> None:
    echoes = [post_run(server, "echo", {"i": i})["run_id"] for i in range(52)]
    failed = post_run(server, "fail", {"message": "boom"})["run_id"]
    cancelled_here = post_run(server, "sleep", {"seconds": 60})["run_id"]
    cancelled_there = post_run(server, "sleep", {"seconds": 60})["run_id"]
    for run_id in [*echoes, failed]:
        wait_finished(server, run_id)

    page.goto(server.http_url + "/")
    expect(page.locator("#runs-body tr")).to_have_count(50)
    first_page = http("GET", server.http_url + "/api/runs?limit=50")[1]
    assert run_ids_shown(page) == [run["run_id"] for run in first_page["runs"]]
    assert run_ids_shown(page)[:3] == [cancelled_there, cancelled_here, failed]  # newest first
    created = [run["created_at"] for run in first_page["runs"]]
    assert created == sorted(created, reverse=True)
    row = page.locator(f'#runs-body tr[data-run-id="{cancelled_there}"]')
    expect(row.locator(".status")).to_have_text("running")
    screenshot(page, "runs.png", full_page=False)

    # A run that changes while the table is open changes its row.
    http("POST", f"{server.http_url}/api/runs/{cancelled_there}/cancel")
    expect(row.locator(".status")).to_have_text("cancelled")

    page.click("#runs-older")
    expect(page.locator("#runs-page")).to_have_text("Page 2")
    expect(page.locator("#runs-body tr")).to_have_count(5)
    assert run_ids_shown(page) == echoes[:5][::-1]
    expect(page.locator("#runs-older")).to_be_disabled()
    page.click("#runs-newer")
    expect(page.locator("#runs-body tr")).to_have_count(50)

    page.select_option("#filter-status", "failed")
    expect(page.locator("#runs-body tr")).to_have_count(1)
    assert run_ids_shown(page) == [failed]
    page.select_option("#filter-status", "completed")
    expect(page.locator("#runs-body tr")).to_have_count(50)
    expect(page.locator("#runs-body tr .status")).to_have_text(["completed"] * 50)
    page.select_option("#filter-status", "running")
    expect(page.locator("#runs-body tr")).to_have_count(1)
    page.select_option("#filter-workflow", "fail")
    expect(page.locator("#runs-empty")).to_be_visible()
    page.select_option("#filter-status", "")
    expect(page.locator("#runs-body tr")).to_have_count(1)
    page.select_option("#filter-workflow", "")

    # Open a run from the table and cancel it there.
    page.click(f'#runs-body a[href="#/runs/{cancelled_here}"]')
    expect(page.locator("#run-status")).to_have_text("running")
    page.click("#run-cancel")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    expect(page.locator("#run-cancel")).to_be_hidden()
    page.go_back()
    expect(page.locator(f'#runs-body tr[data-run-id="{cancelled_here}"] .status')).to_have_text("cancelled")

    page.set_viewport_size({"width": 390, "height": 800})
    screenshot(page, "runs-narrow.png", full_page=False)


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that wants a token; requested before `page`, so it outlives the page."""
    server = ServerProcess(tmp_path / "auth.db", "--token", "s3cret").start()
    yield server
    server.stop()


def test_asks_for_a_token_and_sends_it_first(token_server: ServerProcess, page: Page) -> None:
    page.goto(token_server.http_url + "/")
    expect(page.locator("#auth-form")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("Token needed")
    page.fill("#auth-token", "wrong")
    page.press("#auth-token", "Enter")
    expect(page.locator("#auth-message")).to_have_text("That token was not accepted.")
    page.fill("#auth-token", "s3cret")
    page.click("#auth-form button[type=submit]")
    expect(page.locator("#auth-form")).to_be_hidden()
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(page.locator("#runs-empty")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('runcast.token')") == "s3cret"

    # The stored token is the first message of the next connection.
    sent: list[dict[str, Any]] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
    page.reload()
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(page.locator("#runs-empty")).to_be_visible()
    expect(page.locator("#auth-form")).to_be_hidden()
    assert sent[0]["type"] == "auth" and sent[0]["token"] == "s3cret"


def test_custom_progress_fields_and_nested_steps(tmp_path: Path, page: Page) -> None:
    flows = Path(__file__).with_name("flows.py")
    server = ServerProcess(tmp_path / "flows.db", "--workflows", str(flows)).start()
    try:
        run = wait_finished(server, post_run(server, "refine", None)["run_id"])
        page.goto(f"{server.http_url}/#/runs/{run['run_id']}")
        expect(page.locator("#run-status")).to_have_text("completed")
        expect(page.locator("#timeline .step-name")).to_have_text(["refine", "refine/improve"])
        expect(page.locator('[data-step="refine"] .progress-label')).to_contain_text("iteration: 3")
    finally:
        page.goto("about:blank")  # leave before the server goes, or the page logs its reconnects
        server.stop()


def test_a_coordinating_team_shows_each_member_s_text_under_the_leader_s_call(tmp_path: Path, page: Page) -> None:
    flows = Path(__file__).with_name("agent_flows.py")
    server = ServerProcess(tmp_path / "agents.db", "--workflows", str(flows)).start()
    try:
        run = wait_finished(server, post_run(server, "desk", "Tidal power")["run_id"])
        page.goto(f"{server.http_url}/#/runs/{run['run_id']}")
        expect(page.locator("#run-status")).to_have_text("completed")
        calls = page.locator('[data-step="draft"] .step-tools .tool-call')
        expect(calls.locator(".tool-name")).to_have_text(["delegate_to_researcher", "delegate_to_writer"])
        events = events_over_http(server.http_url, run["run_id"])
        for i, name in enumerate(["researcher", "writer"]):
            spoken = "".join(
                e["data"]["delta"] for e in events if e["event"] == "step_output" and e["data"].get("agent") == name
            )
            expect(calls.nth(i).locator(".tool-text")).to_have_text(spoken)
            expect(calls.nth(i).locator(".tool-text")).to_have_attribute("aria-label", f"Text of {name}")
        assert step_texts(page)["draft"] == run["output"]  # the leader's own text, members' apart
    finally:
        page.goto("about:blank")
        server.stop()


def test_the_dashboard_shows_when_a_delayed_run_starts_and_its_priority(tmp_path: Path, page: Page) -> None:
    server = ServerProcess(tmp_path / "later.db").start()
    try:
        body = {"workflow": "echo", "input": 1, "delay": 120, "priority": 5, "concurrency_key": "acme"}
        status, run = http("POST", server.http_url + "/api/runs", body)
        assert status == 202
        page.goto(f"{server.http_url}/#/runs/{run['run_id']}")
        expect(page.locator("#run-status")).to_have_text("pending")
        expect(page.locator("#run-scheduled")).to_be_visible()
        expect(page.locator("#run-scheduled-for")).not_to_be_empty()
        expect(page.locator("#run-priority-value")).to_have_text("5")
        expect(page.locator("#run-key-value")).to_have_text("acme")
        page.goto(server.http_url + "/#/")
        row = page.locator(f'#runs-body tr[data-run-id="{run["run_id"]}"]')
        expect(row).to_contain_text("scheduled for")
        expect(row).to_contain_text("priority 5 · key acme")
    finally:
        page.goto("about:blank")  # leave before the server goes
        server.stop()


def test_a_sleeping_run_shows_when_it_wakes_and_draws_its_sleep(tmp_path: Path, page: Page) -> None:
    flows = Path(__file__).with_name("flows.py")
    server = ServerProcess(tmp_path / "nap.db", "--workflows", str(flows)).start()
    try:
        status, run = http("POST", server.http_url + "/api/runs", {"workflow": "nap", "input": {"seconds": 120}})
        assert status == 202
        page.goto(f"{server.http_url}/#/runs/{run['run_id']}")
        expect(page.locator("#run-status")).to_have_text("sleeping")
        expect(page.locator("#run-sleeping")).to_be_visible()
        expect(page.locator("#run-wake-at")).not_to_be_empty()
        sleep_bar = page.locator("#waterfall .wf-sleep")
        expect(sleep_bar).to_have_count(1)
        expect(sleep_bar).to_have_attribute("aria-label", re.compile(r"^nap sleeps .*, until 20\d\d-"))
        expect(page.locator('#timeline .step[data-step="nap"]')).to_have_attribute("data-status", "sleeping")
        page.goto(server.http_url + "/#/")
        row = page.locator(f'#runs-body tr[data-run-id="{run["run_id"]}"]')
        expect(row).to_contain_text("sleeping until")
        page.get_by_role("button", name=re.compile("sleeping")).click()  # the count filters by status
        expect(page.locator("#runs-body tr")).to_have_count(1)
        screenshot(page, "sleeping-run.png")
    finally:
        page.goto("about:blank")
        server.stop()


def test_the_schedules_page_lists_makes_and_deletes(tmp_path: Path, page: Page) -> None:
    flows = Path(__file__).with_name("schedule_flows.py")
    server = ServerProcess(tmp_path / "sched.db", "--workflows", str(flows)).start()
    try:
        page.goto(server.http_url + "/#/schedules")
        expect(page).to_have_title("Schedules · runcast")
        rows = page.locator("#schedule-rows tr")
        expect(rows).to_have_count(2)  # the two in code
        nightly = page.locator('#schedule-rows tr[data-schedule="nightly"]')
        expect(nightly).to_contain_text("cron 0 3 * * * (Europe/Paris)")
        expect(nightly).to_contain_text("in code")
        expect(page.locator('#schedule-rows tr[data-schedule="each-second"] .last a')).to_have_text(
            re.compile(r"^sched:each-second:\d{8}T\d{6}Z$"), timeout=10_000
        )
        page.fill("#schedule-name", "hourly-echo")
        page.select_option("#schedule-workflow", "echo")
        page.fill("#schedule-cron", "not a cron")
        page.click("#schedule-create")
        expect(page.locator("#schedule-error")).to_contain_text("is not a cron expression")
        page.fill("#schedule-cron", "0 * * * *")
        page.fill("#schedule-input", '{"hello": "world"}')
        page.click("#schedule-create")
        made = page.locator('#schedule-rows tr[data-schedule="hourly-echo"]')
        expect(made).to_contain_text("cron 0 * * * * (UTC)")
        expect(page.locator("#schedule-error")).to_be_hidden()
        status, listed = http("GET", server.http_url + "/api/schedules")
        mine = next(s for s in listed["schedules"] if s["name"] == "hourly-echo")
        assert status == 200 and mine["input"] == {"hello": "world"} and mine["source"] == "api"
        screenshot(page, "schedules.png")
        page.get_by_role("button", name="Delete schedule hourly-echo").click()
        expect(made).to_have_count(0)
        expect(rows).to_have_count(2)
    finally:
        page.goto("about:blank")
        server.stop()


def test_a_traced_run_links_to_its_trace(tmp_path: Path, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_traces import Receiver

    receiver = Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    template = "http://jaeger.example:16686/trace/{trace_id}"
    server = ServerProcess(tmp_path / "traced.db", "--otel", "--trace-url", template).start()
    try:
        status, run = http("POST", server.http_url + "/api/runs", {"workflow": "echo", "input": 1})
        assert status == 202
        page.goto(f"{server.http_url}/#/runs/{run['run_id']}")
        expect(page.locator("#run-status")).to_have_text("completed")
        link = page.locator("#run-trace")
        expect(link).to_be_visible()
        expect(link).to_have_attribute("href", re.compile(r"^http://jaeger\.example:16686/trace/[0-9a-f]{32}$"))
        trace_id = link.get_attribute("href").rsplit("/", 1)[1]
        spans = [s for s in receiver.spans if s["attrs"].get("runcast.run_id") == run["run_id"]]
        assert spans == [] or {s["trace"] for s in spans} == {trace_id}  # the link is the run's trace
    finally:
        page.goto("about:blank")
        server.stop()
        receiver.close()
