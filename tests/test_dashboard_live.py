"""The dashboard as a control room, in real Chromium against a real server: runs appear and
change live, a waiting run is answered with the form made from its question's schema, the
timeline draws one bar per attempt, unknown events are shown, and all of it survives a kill -9
of the server while the page stays open. Every test fails on a console or page error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .browser import WS_REFUSED, Console, get_run, post_run, screenshot, wait_finished, wait_status
from .harness import ROOT, ServerProcess, http

APPROVAL = str(ROOT / "examples" / "approval.py")
FLOWS = ("--workflows", APPROVAL, "--workflows", str(Path(__file__).with_name("dashboard_flows.py")))
TOPIC = {"topic": "background workflows"}
DRAFT = "Background workflows: start the work, close the tab, and come back to a finished result."


@pytest.fixture(autouse=True)
def close_clients() -> None:
    """No harness Clients here, and no second event loop while sync Playwright's runs (see
    test_dashboard.py)."""


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """Requested before `page`, so that it outlives the page."""
    server = ServerProcess(tmp_path / "live.db", *FLOWS).start()
    yield server
    server.stop()


@pytest.fixture
def clis() -> Iterator[list[subprocess.Popen[str]]]:
    """The CLI processes a test starts; any still running at its end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for cli in started:
        cli.kill()
        cli.wait(10)


def run_from_the_cli(server: ServerProcess, clis: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """`python -m client run approval`, which watches its run to the end (reconnecting if need be)."""
    command = ["run", "approval", "--input", json.dumps(TOPIC)]
    cli = subprocess.Popen(
        [sys.executable, "-m", "client", "--url", server.url, "--json", *command],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,  # no terminal: the CLI asks nobody, it watches
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    clis.append(cli)
    return cli


def cli_outputs(cli: subprocess.Popen[str]) -> list[Any]:
    """Wait for the CLI to end (it must succeed); the outputs of the run_completed it printed."""
    out, err = cli.communicate(timeout=20)
    assert cli.returncode == 0, err
    return [json.loads(line)["data"]["output"] for line in out.splitlines() if '"run_completed"' in line]


def row_of(page: Page, run_id: str) -> Any:
    return page.locator(f'#runs-body tr[data-run-id="{run_id}"]')


def frames_sent(page: Page) -> list[dict[str, Any]]:
    """Every message the page sends over its WebSockets from now on, as it sends them."""
    sent: list[dict[str, Any]] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
    return sent


def request_id_of(server: ServerProcess, run_id: str) -> str:
    run = wait_status(server, run_id, {"waiting"})
    return str(run["waiting_for"][0]["request_id"])


def test_a_run_started_from_the_cli_shows_up_live_and_is_answered_by_a_click(
    live_server: ServerProcess, page: Page, clis: list[subprocess.Popen[str]]
) -> None:
    page.goto(live_server.http_url + "/")
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(page.locator("#runs-empty")).to_be_visible()
    cli = run_from_the_cli(live_server, clis)
    # No click, no reload: the run appears, streams its draft, then waits for an answer.
    rows = page.locator("#runs-body tr")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_have_attribute("data-workflow", "approval")
    expect(row).to_have_attribute("data-status", "waiting")
    expect(row.locator(".answer-link")).to_have_text("Answer: Publish this draft?")
    expect(row.locator(".step-now")).to_have_text("review · 1/4 steps")
    expect(page.locator('.count[data-status="waiting"]')).to_have_attribute("data-count", "1")
    screenshot(page, "control-room.png", full_page=False)

    row.locator(".answer-link").click()
    form = page.locator("#run-asks form.ask")
    expect(form.locator(".ask-prompt")).to_have_text("Publish this draft?")
    expect(page.locator("#run-status")).to_have_text("waiting")
    expect(page.locator('.wf-row[data-step="review"] .wf-wait')).to_have_count(1)
    screenshot(page, "run-waiting.png")
    form.get_by_label("Approve").check()
    form.get_by_role("button", name="Send answer").click()
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#run-asks")).to_be_hidden()
    expect(page.locator("#run-output")).to_have_text(json.dumps({"published": DRAFT}, indent=2))
    # The timeline: a row per step that ran, a nested one under its group by its own name.
    expect(page.locator(".wf-row .wf-label")).to_have_text(["draft", "review", "decide", "publish"])
    expect(page.locator('.wf-row[data-step="decide/publish"] .wf-label')).to_have_attribute("title", "decide/publish")

    page.go_back()
    expect(row).to_have_attribute("data-status", "completed")
    expect(page.locator('.count[data-status="waiting"]')).to_have_attribute("data-count", "0")
    assert cli_outputs(cli) == [{"published": DRAFT}]


def test_the_control_room_carries_on_across_a_server_restart(
    live_server: ServerProcess, page: Page, console: Console, clis: list[subprocess.Popen[str]]
) -> None:
    console.allow(WS_REFUSED)
    page.goto(live_server.http_url + "/")
    expect(page.locator("#runs-empty")).to_be_visible()
    cli = run_from_the_cli(live_server, clis)
    rows = page.locator("#runs-body tr")
    expect(rows).to_have_count(1)
    first = str(rows.first.get_attribute("data-run-id"))
    expect(row_of(page, first)).to_have_attribute("data-status", "waiting")
    request_id = request_id_of(live_server, first)
    # A second tab follows the run itself.
    tab = page.context.new_page()
    tab.on("console", console.on_console)
    tab.on("pageerror", console.on_page_error)
    tab.goto(f"{live_server.http_url}/#/runs/{first}")
    expect(tab.locator("#run-asks .ask-prompt")).to_have_text("Publish this draft?")
    seq_before = int(tab.locator("#view-run").get_attribute("data-seq") or 0)

    live_server.kill()
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    expect(tab.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    live_server.restart()
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(tab.locator("#connection")).to_have_text("Connected")

    # Listed again without duplicates, still waiting with the same question; and the feed is
    # subscribed again: a run started now appears by itself.
    expect(page.locator("#runs-body tr")).to_have_count(1)
    expect(row_of(page, first)).to_have_attribute("data-status", "waiting")
    assert get_run(live_server, first)["waiting_for"][0]["request_id"] == request_id
    second = post_run(live_server, "approval", TOPIC)["run_id"]
    expect(row_of(page, second)).to_have_attribute("data-status", "waiting")
    expect(page.locator("#runs-body tr")).to_have_count(2)
    assert [r for r in page.locator("#runs-body tr").evaluate_all("rs => rs.map(r => r.dataset.runId)")] == [
        second,
        first,
    ]

    # The run's tab answers the question it was showing before the kill.
    form = tab.locator("#run-asks form.ask")
    expect(form).to_have_attribute("data-request-id", request_id)
    form.get_by_label("Note").fill("say more")
    form.get_by_role("button", name="Send answer").click()
    expect(tab.locator("#run-status")).to_have_text("completed")
    run = wait_finished(live_server, first)
    assert run["output"] == {"revised": f"{DRAFT} (revised: say more)"}
    expect(tab.locator("#view-run")).to_have_attribute("data-seq", str(run["last_seq"]))
    assert run["last_seq"] > seq_before
    expect(row_of(page, first)).to_have_attribute("data-status", "completed")
    expect(page.locator("#runs-body tr")).to_have_count(2)
    steps = [s["name"] for s in run["steps"] if s["status"] == "completed"]
    assert "decide/revise" in steps and "decide/publish" not in steps
    tab.close()
    # The CLI that started the run followed it across the restart to its end.
    assert cli_outputs(cli) == [run["output"]]


def test_an_answer_the_server_refuses_shows_its_error(live_server: ServerProcess, page: Page) -> None:
    sent = frames_sent(page)
    run_id = post_run(live_server, "rate", None)["run_id"]
    page.goto(f"{live_server.http_url}/#/runs/{run_id}")
    form = page.locator("#run-asks form.ask")
    expect(form.locator(".ask-prompt")).to_have_text("How many stars?")
    field = form.get_by_label("Answer")
    expect(field).to_have_attribute("type", "number")
    expect(form).to_contain_text("1 (poor) to 5 (great)")

    field.fill("2.5")  # the form itself knows an integer is whole; nothing is sent
    form.get_by_role("button", name="Send answer").click()
    expect(form.locator(".ask-error")).to_have_text("Answer must be a whole number")
    expect(field).to_have_attribute("aria-invalid", "true")
    assert [m for m in sent if m["type"] == "respond"] == []

    field.fill("9")  # the schema's maximum is the server's to check
    form.get_by_role("button", name="Send answer").click()
    expect(form.locator(".ask-error")).to_contain_text("invalid_input")
    expect(form.locator(".ask-error")).to_contain_text("5")
    assert [m["value"] for m in sent if m["type"] == "respond"] == [9]
    expect(page.locator("#run-status")).to_have_text("waiting")
    assert get_run(live_server, run_id)["status"] == "waiting"

    field.fill("4")
    form.get_by_role("button", name="Send answer").click()
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#run-output")).to_have_text("4")
    expect(page.locator("#run-asks")).to_be_hidden()


def test_a_yes_or_no_question_has_two_buttons(live_server: ServerProcess, page: Page) -> None:
    yes, no = (post_run(live_server, "confirm", None)["run_id"] for _ in range(2))
    for run_id, button in ((yes, "Yes"), (no, "No")):
        page.goto(f"{live_server.http_url}/#/runs/{run_id}")
        form = page.locator("#run-asks form.ask")
        expect(form.locator(".ask-prompt")).to_have_text("Deploy to production?")
        expect(form.locator("input")).to_have_count(0)
        form.get_by_role("button", name=button, exact=True).click()
        expect(page.locator("#run-status")).to_have_text("completed")
    assert wait_finished(live_server, yes)["output"] == "told everyone: deployed"
    skipped = wait_finished(live_server, no)
    assert [s["status"] for s in skipped["steps"]] == ["skipped", "completed"]

    # A question with a timeout says by when, and what happens then.
    timed = post_run(live_server, "deadline", None)["run_id"]
    page.goto(f"{live_server.http_url}/#/runs/{timed}")
    hint = page.locator("#run-asks .ask-deadline")
    expect(hint).to_have_text(re.compile(r"^Answer by .+; after that the step goes on with false\.$"))
    page.locator("#run-asks").get_by_role("button", name="Yes", exact=True).click()
    expect(page.locator("#run-output")).to_have_text("true")

    # Answered by someone else while the page shows the question: the form goes away.
    elsewhere = post_run(live_server, "confirm", None)["run_id"]
    page.goto(f"{live_server.http_url}/#/runs/{elsewhere}")
    expect(page.locator("#run-asks .ask-prompt")).to_have_text("Deploy to production?")
    answer = {"request_id": request_id_of(live_server, elsewhere), "value": True}
    assert http("POST", f"{live_server.http_url}/api/runs/{elsewhere}/respond", answer)[0] == 200
    expect(page.locator("#run-asks")).to_be_hidden()
    expect(page.locator("#run-status")).to_have_text("completed")


def test_the_form_has_a_field_for_each_kind_of_schema(live_server: ServerProcess, page: Page) -> None:
    sent = frames_sent(page)
    run_id = post_run(live_server, "every_kind", None)["run_id"]
    page.goto(f"{live_server.http_url}/#/runs/{run_id}")
    form = page.locator("#run-asks form.ask")
    expect(form.locator(".ask-prompt")).to_have_text("Fill in everything")
    expect(form.locator('input[type="checkbox"]')).to_have_count(2)  # ship, owner.admin
    expect(form.locator('input[type="number"]')).to_have_count(2)  # count, ratio
    expect(form.locator('input[type="text"]')).to_have_count(2)  # name, owner.email
    expect(form.locator('input[type="radio"]')).to_have_count(3)  # size: S, M, L
    expect(form.locator("select option")).to_have_count(7)  # color: (none) and six
    expect(form.locator("fieldset.field-object legend")).to_have_text("Owner")
    expect(form.locator("textarea")).to_have_count(1)  # tags, as JSON

    form.get_by_label("Ship it").check()
    form.get_by_label("Count").fill("3")
    form.get_by_label("Ratio").fill("0.5")
    form.get_by_label("Name").fill("Ada")
    form.get_by_label("M", exact=True).check()
    form.get_by_label("Color").select_option("blue")
    form.get_by_label("email").fill("ada@example.org")
    form.get_by_label("Tags (JSON)").fill('["a", b]')
    form.get_by_role("button", name="Send answer").click()
    expect(form.locator(".ask-error")).to_contain_text("Tags is not valid JSON")
    assert [m for m in sent if m["type"] == "respond"] == []

    form.get_by_label("Tags (JSON)").fill('["a", "b"]')
    form.get_by_role("button", name="Send answer").click()
    expect(page.locator("#run-status")).to_have_text("completed")
    expected = {
        "ship": True,
        "count": 3,
        "ratio": 0.5,
        "name": "Ada",
        "size": "M",
        "color": "blue",
        "owner": {"email": "ada@example.org", "admin": False},
        "tags": ["a", "b"],
    }
    assert wait_finished(live_server, run_id)["output"] == expected


def test_the_timeline_draws_a_bar_per_attempt_and_unknown_events_are_shown(
    live_server: ServerProcess, page: Page
) -> None:
    retried = wait_finished(live_server, post_run(live_server, "retry_once", None)["run_id"])
    page.goto(f"{live_server.http_url}/#/runs/{retried['run_id']}")
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator(".wf-row")).to_have_count(2)
    expect(page.locator(".wf-row .wf-label")).to_have_text(["fetch", "report"])
    bars = page.locator('.wf-row[data-step="fetch"] .wf-bar')
    expect(bars).to_have_count(2)
    assert bars.evaluate_all("bs => bs.map(b => b.dataset.status)") == ["failed", "completed"]
    described = re.compile(r"^fetch, attempt 2: completed, \d+ ms, from \d+ ms$")
    expect(bars.nth(1)).to_have_attribute("aria-label", described)
    # On one time axis: the second attempt starts after the first ended (a gap of the retry's
    # delay), and report when the second ended (often the same millisecond).
    boxes = [bars.nth(0).bounding_box(), bars.nth(1).bounding_box()]
    report = page.locator('.wf-row[data-step="report"] .wf-bar').bounding_box()
    assert boxes[0] and boxes[1] and report
    assert boxes[0]["x"] + boxes[0]["width"] < boxes[1]["x"] <= report["x"]  # retry_delay is 50 ms

    # Fifty steps: fifty rows, each with its bar, in a box that scrolls instead of growing.
    chain = wait_finished(live_server, post_run(live_server, "chain", {"n": 50, "delay": 0})["run_id"])
    page.goto(f"{live_server.http_url}/#/runs/{chain['run_id']}")
    expect(page.locator(".wf-row .wf-bar")).to_have_count(50)
    expect(page.locator(".wf-row .wf-label").last).to_have_text("s50")
    box = page.locator("#waterfall").evaluate("w => [w.scrollHeight, w.clientHeight]")
    assert box[0] > box[1] and box[1] < 500, box

    # A running bar grows while the page looks; a cancel ends it.
    sleeping = post_run(live_server, "sleep", {"seconds": 60})["run_id"]
    page.goto(f"{live_server.http_url}/#/runs/{sleeping}")
    bar = page.locator('.wf-row[data-step="sleep"] .wf-bar')
    expect(bar).to_have_attribute("data-status", "running")
    label = bar.get_attribute("aria-label")
    expect(bar).not_to_have_attribute("aria-label", label or "")  # repainted as time passes
    http("POST", f"{live_server.http_url}/api/runs/{sleeping}/cancel")
    expect(bar).to_have_attribute("data-status", "cancelled")

    # An event no contract names is shown in its step, name and JSON, not dropped.
    novel = wait_finished(live_server, post_run(live_server, "novel", None)["run_id"])
    page.goto(f"{live_server.http_url}/#/runs/{novel['run_id']}")
    other = page.locator('[data-step="announce"] .other-event')
    expect(other.locator(".event-name")).to_have_text(["deploy_note"])
    expect(other.locator(".event-data")).to_have_text('{"region":"eu-west","replicas":3}')
    expect(page.locator("#run-status")).to_have_text("completed")


def test_counts_and_the_waiting_filter(live_server: ServerProcess, page: Page) -> None:
    waiting = [post_run(live_server, "rate", None)["run_id"] for _ in range(2)]
    done = wait_finished(live_server, post_run(live_server, "echo", {"hi": 1})["run_id"])["run_id"]
    asked = [request_id_of(live_server, run_id) for run_id in waiting]
    page.goto(live_server.http_url + "/")
    expect(page.locator("#runs-body tr")).to_have_count(3)
    expect(page.locator("#counts-scope")).to_have_text("Of the 3 most recent runs:")
    expect(page.locator('.count[data-status="waiting"]')).to_have_attribute("data-count", "2")
    expect(page.locator('.count[data-status="completed"]')).to_have_attribute("data-count", "1")

    page.locator('.count[data-status="waiting"]').click()
    expect(page.locator('.count[data-status="waiting"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#filter-status")).to_have_value("waiting")
    expect(page.locator("#runs-body tr")).to_have_count(2)
    expect(row_of(page, done)).to_have_count(0)
    expect(row_of(page, waiting[0]).locator(".answer-link")).to_have_text("Answer: How many stars?")

    # Answered elsewhere: the run leaves the waiting list and the counts follow.
    status, _ = http(
        "POST", f"{live_server.http_url}/api/runs/{waiting[0]}/respond", {"request_id": asked[0], "value": 3}
    )
    assert status == 200
    expect(row_of(page, waiting[0])).to_have_count(0)
    expect(page.locator("#runs-body tr")).to_have_count(1)
    expect(page.locator('.count[data-status="waiting"]')).to_have_attribute("data-count", "1")
    expect(page.locator('.count[data-status="completed"]')).to_have_attribute("data-count", "2")

    page.locator('.count[data-status="waiting"]').click()  # again: the filter is lifted
    expect(page.locator("#filter-status")).to_have_value("")
    expect(page.locator("#runs-body tr")).to_have_count(3)


def test_a_flood_of_new_runs_is_bounded_on_the_first_page(live_server: ServerProcess, page: Page) -> None:
    page.goto(live_server.http_url + "/")
    expect(page.locator("#runs-empty")).to_be_visible()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: post_run(live_server, "echo", i)["run_id"], range(230)))
    # The first page takes new runs up to 200 rows, then offers the newest instead of growing.
    expect(page.locator("#runs-more")).to_have_text("30 newer runs not shown: show the newest")
    expect(page.locator("#runs-body tr")).to_have_count(200)
    shown = page.locator("#runs-body tr").evaluate_all("rs => rs.map(r => r.dataset.runId)")
    assert len(set(shown)) == 200 and set(shown) <= set(ids)
    for run_id in ids:
        wait_finished(live_server, run_id)
    expect(page.locator('.count[data-status="completed"]')).to_have_attribute("data-count", "230")
    page.locator("#runs-more").click()
    expect(page.locator("#runs-more")).to_be_hidden()
    expect(page.locator("#runs-body tr")).to_have_count(50)
    newest = http("GET", live_server.http_url + "/api/runs?limit=50")[1]["runs"]
    assert page.locator("#runs-body tr").evaluate_all("rs => rs.map(r => r.dataset.runId)") == [
        r["run_id"] for r in newest
    ]


def test_pure_parts_in_the_browser(live_server: ServerProcess, page: Page) -> None:
    """What kind of field each schema gets, and which of two snapshots of a run is kept."""
    page.goto(live_server.http_url + "/")  # the modules are imported from the dashboard's origin
    kinds = page.evaluate(
        """async () => {
            const { widgetKind } = await import('/schemaform.js');
            return [
                {type: 'boolean'}, {type: 'integer'}, {type: ['number', 'null']}, {type: 'string'},
                {enum: [1, 'a']}, {const: 'x'}, {type: 'object', properties: {}}, {type: 'object'},
                {type: 'array'}, {anyOf: [{type: 'string'}]}, {type: ['string', 'integer']}, {}, null,
            ].map(widgetKind);
        }"""
    )
    assert kinds == [
        "boolean", "number", "number", "string", "choice", "choice", "object", "json",
        "json", "json", "json", "json", "json",
    ]  # fmt: skip
    kept = page.evaluate(
        """async () => {
            const { keepNewest } = await import('/runs.js');
            const listed = {run_id: 'r', status: 'running', last_seq: 5};
            const frame = {run_id: 'r', status: 'running', last_seq: 5, current_step: 'b'};
            const later = {run_id: 'r', status: 'completed', last_seq: 9, current_step: null};
            return [
                keepNewest(undefined, listed), keepNewest(later, listed), keepNewest(listed, later),
                keepNewest(frame, listed), keepNewest(listed, frame),
            ];
        }"""
    )
    frame = {"run_id": "r", "status": "running", "last_seq": 5, "current_step": "b"}
    later = {"run_id": "r", "status": "completed", "last_seq": 9, "current_step": None}
    assert kept == [{"run_id": "r", "status": "running", "last_seq": 5}, later, later, frame, frame]
