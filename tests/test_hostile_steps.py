"""Steps that raise anything at all (SystemExit, KeyboardInterrupt, GeneratorExit, a stray
CancelledError, an exception whose str() raises): the run fails readably, the server stays
up, and the next start of the server is not affected."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Client, ServerProcess, assert_log

FLOWS = Path(__file__).with_name("hostile_flows.py")
KINDS = ["system_exit", "keyboard_interrupt", "generator_exit", "cancelled", "unprintable"]
WORKFLOWS = ["hostile_async", "hostile_thread", "hostile_gen", "hostile_timed", "hostile_parallel", "hostile_retry"]
EXPECTED = {
    "system_exit": "SystemExit: 3",
    "keyboard_interrupt": "KeyboardInterrupt",
    "generator_exit": "GeneratorExit",
    "cancelled": "CancelledError",
    "unprintable": "Unprintable (its message could not be shown)",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("hostile") / "h.db", "--workflows", str(FLOWS)).start()
    yield proc
    proc.stop()


async def test_every_kind_of_raise_fails_the_run_and_nothing_else(server: ServerProcess) -> None:
    c = await Client.connect(server.url)
    bystander = await c.start("count", {"n": 40, "delay": 0.02})
    runs = {}
    for workflow in WORKFLOWS:
        for kind in KINDS:
            runs[(workflow, kind)] = await c.start(workflow, {"raise": kind})
    for (workflow, kind), run_id in runs.items():
        events = await c.until_terminal(run_id)
        assert_log(events)
        assert events[-1]["event"] == "run_failed", (workflow, kind, events[-1])
        error = events[-1]["data"]["error"]
        assert EXPECTED[kind] in error and "internal error" not in error, (workflow, kind, error)
        failed = [e for e in events if e["event"] == "step_failed"]
        assert failed and EXPECTED[kind] in failed[-1]["data"]["error"]
    if "hostile_retry" in WORKFLOWS:  # a retried step was tried again after SystemExit
        retried = c.events(runs[("hostile_retry", "system_exit")])
        assert [e["data"]["attempt"] for e in retried if e["event"] == "step_started"] == [1, 2]
    bystander_log = await c.until_terminal(bystander)
    assert_log(bystander_log)
    assert bystander_log[-1]["event"] == "run_completed"
    assert server.proc is not None and server.proc.poll() is None, server.tail()
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    # The next start of the server on the same database is not affected by any of them.
    assert server.stop() == 0
    server.restart()
    d = await Client.connect(server.url)
    snapshot = (await d.request({"type": "poll", "run_id": runs[("hostile_async", "system_exit")]}))["run"]
    assert snapshot["status"] == "failed"
    assert (await d.until_terminal(await d.start("echo", 1)))[-1]["event"] == "run_completed"
