"""An agent calling tools in a real server, seen by a client over /ws."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Client, ServerProcess, assert_log
from .stub_openai import StubOpenAI, serving, tool_answer

FLOWS = Path(__file__).with_name("tool_flows.py")


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerProcess, StubOpenAI]]:
    with serving(StubOpenAI()) as stub:
        # The child server inherits these: its agent's OpenAIChat talks to the stub, keyless.
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", stub.url("tools-split"))
        proc = ServerProcess(tmp_path / "tools.db", "--workflows", str(FLOWS)).start()
        try:
            yield proc, stub
        finally:
            proc.stop()


async def test_a_client_sees_the_tool_calls_inside_the_step_and_the_answer(
    server: tuple[ServerProcess, StubOpenAI],
) -> None:
    proc, stub = server
    client = await Client.connect(proc.url)

    run_id = await client.start("calc", "What is 2 + 3?")
    events = await client.until_terminal(run_id)

    kinds = [e["event"] for e in events]
    assert_log(events)
    think = [k for k, e in zip(kinds, events, strict=True) if e["step"] == "think"]
    assert think[0] == "step_started" and think[-1] == "step_completed"
    assert think.index("tool_call_started") < think.index("tool_call_completed") < think.index("step_output")
    started, completed = (e for e in events if e["event"].startswith("tool_call_"))
    assert (started["step"], started["data"]) == (
        "think",
        {"call_id": "call_a", "tool": "add", "args": {"a": 2, "b": 3}, "round_calls": 1, "round": 1, "agent": "Calc"},
    )
    assert (completed["step"], completed["data"]) == (
        "think",
        {"call_id": "call_a", "tool": "add", "result": 5, "round": 1, "agent": "Calc"},
    )
    answer = "".join(e["data"]["delta"] for e in events if e["event"] == "step_output")
    assert answer == tool_answer(["5"])
    assert kinds[-1] == "run_completed" and events[-1]["data"]["output"] == answer
    names = [t["function"]["name"] for t in stub.requests[0].body["tools"]]
    assert names == ["add", "multiply"]
    await client.close()
