"""The dashboard's details (issue 26, item 9), in real Chromium: every page at 1280 px and at
390 px (a phone), light and dark, empty and full, with a screenshot of each in artifacts/;
an unknown run's page, the timeline's legend, axis and durations, the counts' wording and
the status badges on a highlighted row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .browser import WAIT_MS, WS_REFUSED, Console, post_run, screenshot, wait_finished, wait_status
from .harness import ServerProcess, http

SIZES = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}
PAGES = {"runs": "#/", "workflows": "#/workflows", "schedules": "#/schedules"}


@pytest.fixture(autouse=True)
def close_clients() -> None:
    """No harness Clients here: sync Playwright's loop is current in this thread (as in test_dashboard.py)."""


@pytest.fixture
def looks(browser: Any) -> Iterator[Any]:
    """Opens a tab of a given size and color scheme; each fails its test on a console error."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_tab(size: str, scheme: str) -> Page:
        context = browser.new_context(viewport=SIZES[size], color_scheme=scheme)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        return page

    yield open_tab
    for context in contexts:
        context.close()
    assert [e for e in errors if not WS_REFUSED.search(e)] == [], "errors in the browser console"


def look_at(page: Page, url: str, name: str) -> None:
    """Open `url`, keep a screenshot, and check that the page fits its width (no sideways scroll)."""
    page.goto(url)
    page.wait_for_load_state("networkidle")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    screenshot(page, f"details-{name}.png")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    wide = page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth)"
        ".slice(0, 5).map(e => `${e.tagName}.${e.className}#${e.id} ${Math.round(e.getBoundingClientRect().right)}`)"
    )
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen: {wide}"


def test_every_page_at_two_widths_light_and_dark_empty_and_full(tmp_path: Path, looks: Any) -> None:
    with ServerProcess(tmp_path / "x.db") as server:
        for fill in ("empty", "full"):
            if fill == "full":
                done = [
                    post_run(server, w, i) for w, i in (("content", {"topic": "AI"}), ("fail", None), ("tools", None))
                ]
                running = post_run(server, "chain", {"n": 2, "delay": 30})  # stays running: a live row and page
                schedule = {
                    "name": "nightly-report",
                    "workflow": "content",
                    "cron": "0 3 * * *",
                    "timezone": "Europe/Paris",
                }
                assert http("POST", server.http_url + "/api/schedules", schedule)[0] == 201
                for run in done:
                    wait_finished(server, run["run_id"])
                wait_status(server, running["run_id"], {"running"})
            for size in SIZES:
                for scheme in ("light", "dark"):
                    page = looks(size, scheme)
                    for name, route in PAGES.items():
                        look_at(page, server.http_url + "/" + route, f"{name}-{size}-{scheme}-{fill}")
                        if name in ("runs", "schedules") and fill == "full":  # its table fits: nothing out of sight
                            cut = page.locator(f"#{name}-table").evaluate(
                                "t => t.scrollWidth - t.parentElement.clientWidth"
                            )
                            assert cut <= 0, f"the {name} table is {cut} px wider than the {size}'s screen"
                    if fill == "full":
                        for kind, run in (("completed", done[0]), ("running", running)):
                            look_at(page, f"{server.http_url}/#/runs/{run['run_id']}", f"run-{kind}-{size}-{scheme}")
                            expect(page.locator("#run-waterfall")).to_be_visible()
                            gaps = page.locator(".wf-tick").evaluate_all(
                                "ts => ts.slice(1).map((t, i) => t.getBoundingClientRect().left"
                                " - ts[i].getBoundingClientRect().right)"
                            )
                            assert min(gaps, default=8) >= 8, f"the axis labels run together on the {size}: {gaps}"
                    page.context.close()


def test_an_unknown_run_shows_only_that_it_is_not_there(server: ServerProcess, page: Page) -> None:
    page.goto(server.http_url + "/#/runs/no-such-run")
    expect(page.locator("#run-message")).to_have_text(
        "There is no run with id no-such-run. Check the link, or find the run in the list of runs."
    )
    for hidden in ("#run-status", "#view-run .meta", "#run-body"):
        expect(page.locator(hidden)).to_be_hidden()
    screenshot(page, "details-unknown-run.png")
    page.goto(server.http_url + "/#/")  # and a known run after it shows everything again
    run = post_run(server, "echo", {"x": 1})
    wait_finished(server, run["run_id"])
    page.goto(f"{server.http_url}/#/runs/{run['run_id']}")
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#run-body")).to_be_visible()


def test_the_timeline_has_a_legend_a_readable_axis_and_the_steps_durations(server: ServerProcess, page: Page) -> None:
    run = post_run(server, "echo", {"fast": True})  # a run of a millisecond or so
    wait_finished(server, run["run_id"])
    page.goto(f"{server.http_url}/#/runs/{run['run_id']}")
    expect(page.locator("#run-status")).to_have_text("completed")
    labels = page.locator(".wf-tick").all_text_contents()
    assert labels[0] == "0 ms" and len(labels) == len(set(labels)), labels  # not "0 ms 0 ms 1 ms 1 ms 1 ms"
    assert page.evaluate("import('/waterfall.js').then(m => [m.ticks(1), m.ticks(4700), m.ticks(150000)])") == [
        [0, 1],
        [0, 2000, 4000],
        [0, 60000, 120000],
    ]
    legend = page.locator(".wf-legend li").all_text_contents()
    assert "cut off by a restart or a takeover, or cancelled" in legend and "waiting for input" in legend, legend
    card = page.locator("#timeline .step .step-duration").first.text_content()
    total = page.locator(".wf-row .wf-total").first.text_content()
    assert card == total, (card, total)


def test_a_resumed_step_takes_as_long_on_its_card_as_on_the_timeline(
    tmp_path: Path, page: Page, console: Console
) -> None:
    console.allow(WS_REFUSED)  # the page outlives the server at the end
    server = ServerProcess(tmp_path / "x.db").start()
    try:
        run = post_run(server, "count", {"n": 8, "delay": 0.2})  # a progress event each 0.2 s
        wait_status(server, run["run_id"], {"running"})
        page.wait_for_timeout(900)  # the step is well under way: its cut-off attempt is long
        server.kill()
        server.restart()
        wait_finished(server, run["run_id"])
        page.goto(f"{server.http_url}/#/runs/{run['run_id']}")
        expect(page.locator("#run-status")).to_have_text("completed")
        expect(page.locator('.wf-rows .wf-bar[data-status="interrupted"]')).to_have_count(1)
        cards = dict(
            page.locator("#timeline .step").evaluate_all(
                "items => items.map(li => [li.dataset.step, li.querySelector('.step-duration').textContent])"
            )
        )
        totals = dict(
            page.locator(".wf-row").evaluate_all(
                "rows => rows.map(row => [row.dataset.step, row.querySelector('.wf-total').textContent])"
            )
        )
        assert cards == totals, (cards, totals)
        screenshot(page, "details-resumed-run.png")
    finally:
        server.stop()


def test_a_failed_run_s_row_says_how_far_it_got(server: ServerProcess, page: Page) -> None:
    failed = post_run(server, "fail", {"message": "kaput"})
    wait_finished(server, failed["run_id"])
    page.goto(server.http_url + "/#/")
    row = page.locator(f'#runs-body tr[data-run-id="{failed["run_id"]}"]')
    expect(row.locator(".status")).to_have_text("failed")
    expect(row.locator(".step-cell")).to_have_text("1/2 steps")  # not an empty cell


def test_counts_say_one_run_and_badges_keep_a_rim_on_any_row(server: ServerProcess, page: Page) -> None:
    run = post_run(server, "echo", {"x": 1})
    wait_finished(server, run["run_id"])
    page.goto(server.http_url + "/#/")
    expect(page.locator("#counts-scope")).to_have_text("Of the most recent run:")
    badge = page.locator("#runs-body .status").first
    badge.hover()  # the row is highlighted under the pointer
    rim = badge.evaluate("b => [getComputedStyle(b).borderTopWidth, getComputedStyle(b).borderTopColor]")
    assert rim[0] == "1px" and rim[1] not in ("rgba(0, 0, 0, 0)", "transparent"), rim
