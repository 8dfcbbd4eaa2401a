"""Take docs/dashboard.png: the dashboard as a control room, with a few runs in it.

    .venv/bin/python docs/screenshot.py

Starts a server on a free port with a throwaway database and examples/approval.py, starts a
few runs (finished, failed, running, and approval runs: one answered, one waiting), and
photographs the runs table and the waiting run (its question's form and its timeline) in
Debian's Chromium, one above the other in one image.
"""

from __future__ import annotations

import base64
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from tests.browser import CHROMIUM, CHROMIUM_ARGS, get_run, post_run, wait_finished, wait_status  # noqa: E402
from tests.harness import ServerProcess, http  # noqa: E402

OUT = ROOT / "docs" / "dashboard.png"
WIDTH = 1180
TOPIC = {"topic": "background workflows"}


def start_runs(server: ServerProcess) -> str:
    """Runs of each kind; returns the id of the approval run left waiting."""
    wait_finished(server, post_run(server, "content", {"topic": "AI trends"})["run_id"], timeout=30)
    wait_finished(server, post_run(server, "fail", {"message": "the API said 503"})["run_id"])
    answered = post_run(server, "approval", TOPIC)["run_id"]
    request_id = wait_status(server, answered, {"waiting"})["waiting_for"][0]["request_id"]
    answer = {"request_id": request_id, "value": {"approve": True}}
    http("POST", f"{server.http_url}/api/runs/{answered}/respond", answer)
    wait_finished(server, answered)
    waiting = post_run(server, "approval", {"topic": "the launch post"})["run_id"]
    wait_status(server, waiting, {"waiting"})
    post_run(server, "chain", {"n": 8, "delay": 20})
    post_run(server, "count", {"n": 100, "delay": 0.5})
    time.sleep(1.5)  # let the running ones get going, and the waiting one wait a little
    assert get_run(server, waiting)["status"] == "waiting"
    return waiting


def shoot(page: Page, url: str, last: str) -> bytes:
    """The page at `url` from its top down to the bottom of the element `last`."""
    page.goto(url)
    page.wait_for_selector("#connection[data-state='connected']")
    page.wait_for_selector(last)
    page.wait_for_timeout(1200)  # the feed's first frames and a repaint of the durations
    box = page.locator(last).bounding_box()
    assert box is not None
    return page.screenshot(clip={"x": 0, "y": 0, "width": WIDTH, "height": box["y"] + box["height"] + 12})


def main() -> None:
    assert CHROMIUM, "no chromium on PATH (make browser)"
    with tempfile.TemporaryDirectory() as folder:
        server = ServerProcess(Path(folder) / "shot.db", "--workflows", str(ROOT / "examples" / "approval.py")).start()
        try:
            waiting = start_runs(server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": WIDTH, "height": 900})
                table = shoot(page, server.http_url + "/", "#runs-table")
                run = shoot(page, f"{server.http_url}/#/runs/{waiting}", "#run-waterfall")
                # One image: the two shots stacked, through the browser itself (no imaging library).
                style = "display:block;margin-bottom:4px"
                images = "".join(
                    f'<img src="data:image/png;base64,{base64.b64encode(shot).decode()}" style="{style}">'
                    for shot in (table, run)
                )
                page.set_content(f'<body style="margin:0;background:#d9dde3">{images}</body>')
                page.wait_for_timeout(200)
                page.screenshot(path=str(OUT), full_page=True)
                browser.close()
        finally:
            server.stop()
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
