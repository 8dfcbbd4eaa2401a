"""Agents, teams and the model adapter, against a local stub of the OpenAI streaming API.

Nothing here leaves 127.0.0.1: the stub (tests/stub_openai.py) speaks the real wire
format, and the offline model needs no network at all.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from server import examples
from server.agents import (
    Agent,
    Model,
    ModelError,
    OfflineModel,
    OfflineToolModel,
    OpenAIChat,
    Team,
    Tool,
    ToolCall,
    default_model,
    tool,
)
from server.examples import word_count
from server.runtime import Runtime
from server.workflow import Step, StepInput, Workflow

from .stub_openai import StubOpenAI, reply_chunks, reply_text, serving, tool_answer

KEY = "sk-test-0123456789secret"
FAST = {"backoff": 0.01}  # retries in milliseconds, not seconds


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubOpenAI]:
    with serving(StubOpenAI()) as stub:
        yield stub


@pytest.fixture
def stub(stub_server: StubOpenAI, monkeypatch: pytest.MonkeyPatch) -> StubOpenAI:
    """The shared stub, with its record cleared; the OPENAI_* variables unset so that
    nothing picks up a real key or endpoint from the environment."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    stub_server.reset()
    return stub_server


def chat(stub: StubOpenAI, scenario: str = "ok", *, model: str = "gpt-stub", **options: Any) -> OpenAIChat:
    return OpenAIChat(model, api_key=KEY, base_url=stub.url(scenario), **{**FAST, **options})


async def collect(deltas: AsyncIterator[str]) -> list[str]:
    return [delta async for delta in deltas]


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


# ---- OpenAIChat ------------------------------------------------------------------------


async def test_streams_the_content_deltas_and_sends_a_proper_request(stub: StubOpenAI) -> None:
    deltas = await collect(chat(stub).stream(MESSAGES))

    # The role-only first chunk and the empty finishing chunk stream nothing.
    assert deltas == reply_chunks("gpt-stub")
    [request] = stub.requests
    assert request.method == "POST"
    assert request.path == "/ok/v1/chat/completions"
    assert request.body == {"model": "gpt-stub", "messages": MESSAGES, "stream": True}
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize("scenario", ["fragmented", "extras", "json"])
async def test_odd_but_valid_answers_give_the_same_text(stub: StubOpenAI, scenario: str) -> None:
    # fragmented: events and UTF-8 characters split across writes; extras: keep-alive
    # comment, tool-call and usage chunks; json: a server that ignores "stream".
    assert "".join(await collect(chat(stub, scenario).stream(MESSAGES))) == reply_text("gpt-stub")


async def test_an_error_answer_raises_with_the_servers_message_and_never_the_key(stub: StubOpenAI) -> None:
    with pytest.raises(ModelError) as caught:
        await collect(chat(stub, "unauthorized").stream(MESSAGES))

    assert caught.value.status == 401
    assert "Incorrect API key provided: ***." in caught.value.message
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert KEY not in repr(chat(stub))
    assert len(stub.requests) == 1  # a 401 is not worth retrying


@pytest.mark.parametrize("scenario", ["fail-once", "rate-limited-once"])
async def test_a_500_or_429_is_retried_and_then_succeeds(stub: StubOpenAI, scenario: str) -> None:
    assert "".join(await collect(chat(stub, scenario).stream(MESSAGES))) == reply_text("gpt-stub")
    assert len(stub.requests) == 2


async def test_retries_stop_after_max_retries(stub: StubOpenAI) -> None:
    with pytest.raises(ModelError) as caught:
        await collect(chat(stub, "always-500", max_retries=2).stream(MESSAGES))

    assert caught.value.status == 500
    assert caught.value.message == "The server had an error while processing your request."
    assert len(stub.requests) == 3


async def test_max_retries_zero_means_one_try(stub: StubOpenAI) -> None:
    with pytest.raises(ModelError):
        await collect(chat(stub, "fail-once", max_retries=0).stream(MESSAGES))
    assert len(stub.requests) == 1


async def test_a_stalled_stream_times_out_after_what_it_streamed(stub: StubOpenAI) -> None:
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(ModelError, match="timed out") as caught:
        async for delta in chat(stub, "stall", timeout=0.5).stream(MESSAGES):
            received.append(delta)

    assert received == reply_chunks("gpt-stub")[:1]
    assert caught.value.status is None
    assert 0.4 < time.monotonic() - started < 3
    assert len(stub.requests) == 1  # timeouts are not retried
    await _eventually(lambda: stub.disconnects == 1)  # the client hung up


async def test_no_answer_at_all_times_out(stub: StubOpenAI) -> None:
    with pytest.raises(ModelError, match="timed out"):
        await collect(chat(stub, "stall-headers", timeout=0.5).stream(MESSAGES))


async def test_connection_failures_are_retried_then_reported() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAIChat("gpt-stub", api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, **FAST)

    with pytest.raises(ModelError, match="could not reach") as caught:
        await collect(model.stream(MESSAGES))
    assert caught.value.status is None


@pytest.mark.parametrize(
    ("scenario", "message"),
    [("error-in-stream", "overloaded mid-answer"), ("no-done", "ended before the answer was complete")],
)
async def test_a_broken_stream_raises_after_what_it_streamed(stub: StubOpenAI, scenario: str, message: str) -> None:
    received: list[str] = []
    with pytest.raises(ModelError, match=message):
        async for delta in chat(stub, scenario).stream(MESSAGES):
            received.append(delta)
    assert received[0] == "Hello"
    assert len(stub.requests) == 1  # something was streamed: a retry would repeat it


async def test_without_a_key_no_authorization_header_is_sent(stub: StubOpenAI) -> None:
    model = OpenAIChat("local-model", base_url=stub.url("ok"))
    assert "".join(await collect(model.stream(MESSAGES))) == reply_text("local-model")
    assert "authorization" not in stub.requests[0].headers


def test_the_environment_picks_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(default_model(), OfflineModel)

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    model = default_model()
    assert isinstance(model, OpenAIChat)
    assert (model.id, model.base_url) == ("gpt-4o-mini", "https://api.openai.com/v1")
    assert KEY not in repr(model)

    monkeypatch.setenv("OPENAI_MODEL", "gpt-4.1-nano")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    model = default_model()
    assert isinstance(model, OpenAIChat)
    assert (model.id, model.base_url) == ("gpt-4.1-nano", "http://127.0.0.1:9/v1")
    assert isinstance(model, Model)


# ---- OfflineModel ------------------------------------------------------------------------


async def test_the_offline_model_is_deterministic_and_uses_the_request() -> None:
    model = OfflineModel(delay=0)
    messages = [
        {"role": "system", "content": "You are writer.\nWrite a short article."},
        {"role": "user", "content": '{"topic": "solar power"}'},
    ]
    deltas = await collect(model.stream(messages))

    text = "".join(deltas)
    assert text == model.reply(messages) == "".join(await collect(model.stream(messages)))
    assert len(deltas) == len(text.split(" "))  # word by word
    assert "solar power" in text.lower() and "write a short article" in text
    assert 2 <= text.count(". ") + 1 <= 4
    assert model.reply([{"role": "user", "content": "wind"}]) != model.reply(messages)


# ---- Agent and Team ------------------------------------------------------------------------


async def test_an_agent_sends_its_instructions_and_the_runs_input(stub: StubOpenAI) -> None:
    agent = Agent("writer", chat(stub), instructions="Write two sentences.", role="a technical writer")

    text = "".join(await collect(agent.stream(StepInput("a topic"))))

    assert text == reply_text("gpt-stub")
    assert stub.requests[0].body["messages"] == [
        {"role": "system", "content": "You are writer, a technical writer.\nWrite two sentences."},
        {"role": "user", "content": "a topic"},
    ]


async def test_an_agent_builds_on_the_previous_step_and_names_the_request(stub: StubOpenAI) -> None:
    agent = Agent("editor", chat(stub))

    await collect(
        agent.stream(StepInput({"topic": "tides"}, "A draft about tides.", {"draft": "A draft about tides."}))
    )

    user = stub.requests[0].body["messages"][-1]
    assert user == {
        "role": "user",
        "content": 'Original request: {"topic": "tides"}\n\nPrevious step output:\nA draft about tides.',
    }


async def test_a_team_streams_each_member_under_a_heading_and_chains_them(stub: StubOpenAI) -> None:
    researcher = Agent("researcher", chat(stub, model="model-r"), instructions="Find facts.")
    writer = Agent("writer", instructions="Write it up.")  # no model: takes the team's
    team = Team("desk", [researcher, writer], instructions="Stay on topic.", model=chat(stub, model="model-w"))

    deltas = await collect(team.stream(StepInput("the moon")))

    text = "".join(deltas)
    assert text == f"## researcher\n\n{reply_text('model-r')}\n\n## writer\n\n{reply_text('model-w')}"
    first, second = (r.body for r in stub.requests)
    assert (first["model"], second["model"]) == ("model-r", "model-w")
    assert first["messages"][0]["content"] == "You are researcher.\nStay on topic.\nFind facts."
    assert first["messages"][1]["content"] == "the moon"
    assert second["messages"][1]["content"] == (
        f"Original request: the moon\n\nPrevious step output:\n{reply_text('model-r')}"
    )


async def test_a_team_of_offline_agents() -> None:
    model = OfflineModel(delay=0)
    team = Team("desk", [Agent("researcher", model, "Find three facts."), Agent("writer", model, "Write it up.")])

    text = "".join(await collect(team.stream(StepInput({"topic": "coral reefs"}))))

    head, _, tail = text.partition("\n\n## writer\n\n")
    assert head.startswith("## researcher\n\n") and "coral reefs" in head.lower()
    assert "coral reefs" in tail.lower() and "Building on the earlier notes" in tail


# ---- through the engine ----------------------------------------------------------------------


async def run_to_end(tmp_path: Path, wf: Workflow, input: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rt = Runtime(str(tmp_path / "a.db"), [wf])
    await rt.open()
    try:
        snapshot, _ = await rt.engine.start(wf.name, input)
        final = await asyncio.wait_for(rt.engine.wait(snapshot["run_id"]), 10)
        events = [json.loads(e.frame) for e in await rt.store.read_events(snapshot["run_id"], 0, 10000)]
    finally:
        await rt.close()
    return final, events


def deltas_of(events: list[dict[str, Any]], step: str) -> list[str]:
    return [e["data"]["delta"] for e in events if e["event"] == "step_output" and e["step"] == step]


async def test_an_agent_step_streams_through_the_engine(stub: StubOpenAI, tmp_path: Path) -> None:
    agent = Agent("writer", chat(stub), instructions="Write about the topic.")
    wf = Workflow("agentic", [Step("write", agent.stream)])

    final, events = await run_to_end(tmp_path, wf, "a topic")

    assert final["status"] == "completed"
    assert deltas_of(events, "write") == reply_chunks("gpt-stub")
    [completed] = [e for e in events if e["event"] == "step_completed"]
    assert completed["data"]["output"] == "".join(deltas_of(events, "write")) == reply_text("gpt-stub")
    assert final["output"] == reply_text("gpt-stub")
    assert stub.requests[0].body["messages"][1] == {"role": "user", "content": "a topic"}


async def test_offline_agents_chain_steps_through_the_engine(tmp_path: Path) -> None:
    model = OfflineModel(delay=0)
    researcher = Agent("researcher", model, "Collect notes.")
    team = Team("desk", [Agent("writer", model, "Write it up."), Agent("editor", model, "Tighten it.")])
    wf = Workflow("agentic", [Step("research", researcher.stream), Step("write", team.stream)])

    final, events = await run_to_end(tmp_path, wf, {"topic": "rivers"})

    assert final["status"] == "completed"
    research, write = (st["output"] for st in final["steps"])
    assert "".join(deltas_of(events, "research")) == research
    assert "".join(deltas_of(events, "write")) == write == final["output"]
    # The team's first member built on the research step's output.
    assert research.split()[0] in write and write.startswith("## writer\n\n")


async def test_a_model_error_fails_the_step_without_leaking_the_key(stub: StubOpenAI, tmp_path: Path) -> None:
    wf = Workflow("agentic", [Step("write", Agent("writer", chat(stub, "unauthorized")).stream)])

    final, events = await run_to_end(tmp_path, wf, "a topic")

    assert final["status"] == "failed"
    assert "ModelError: HTTP 401: Incorrect API key provided" in final["error"]
    assert KEY not in json.dumps(events) and KEY not in json.dumps(final)


async def test_cancelling_a_run_hangs_up_on_the_model(stub: StubOpenAI, tmp_path: Path) -> None:
    wf = Workflow("agentic", [Step("write", Agent("writer", chat(stub, "stall", timeout=30)).stream)])
    rt = Runtime(str(tmp_path / "a.db"), [wf])
    await rt.open()
    try:
        snapshot, _ = await rt.engine.start("agentic", "a topic")
        run_id = snapshot["run_id"]
        await _eventually(lambda: bool(stub.requests))
        await asyncio.sleep(0.1)  # let the first delta arrive
        await rt.engine.cancel(run_id)
        final = await asyncio.wait_for(rt.engine.wait(run_id), 5)
    finally:
        await rt.close()

    assert final["status"] == "cancelled"
    await _eventually(lambda: stub.disconnects == 1)


async def _eventually(check: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# ---- tools ----------------------------------------------------------------------------------


def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def boom() -> None:
    """Always fails."""
    raise RuntimeError("no luck")


CALC_ROUND_1 = {"round": 1, "agent": "calc"}  # who made a tool event, and in which round


def tool_events(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["event"], e["data"]) for e in events if e["event"].startswith("tool_call_")]


async def test_a_turn_puts_a_call_split_over_many_chunks_together(stub: StubOpenAI) -> None:
    spec = Tool.from_function(add).spec()

    items = [item async for item in chat(stub, "tools-split").turn(MESSAGES, [spec])]

    assert items == [ToolCall("call_a", "add", '{"a": 2, "b": 3}')]
    assert stub.requests[0].body["tools"] == [spec]
    assert "tools" not in (await _plain_request(stub))  # plain stream() sends none


async def _plain_request(stub: StubOpenAI) -> dict[str, Any]:
    stub.reset()
    await collect(chat(stub).stream(MESSAGES))
    return dict(stub.requests[0].body)


async def test_an_agent_calls_a_tool_and_answers_with_its_result(stub: StubOpenAI, tmp_path: Path) -> None:
    wf = Workflow("calc", [Step("think", agent=Agent("calc", chat(stub, "tools-split"), tools=[add, boom]))])

    final, events = await run_to_end(tmp_path, wf, "2 + 3?")

    assert final["status"] == "completed" and final["output"] == tool_answer(["5"])
    assert tool_events(events) == [
        (
            "tool_call_started",
            {"call_id": "call_a", "tool": "add", "args": {"a": 2, "b": 3}, "round_calls": 1, **CALC_ROUND_1},
        ),
        ("tool_call_completed", {"call_id": "call_a", "tool": "add", "result": 5, **CALC_ROUND_1}),
    ]
    kinds = [e["event"] for e in events if e["step"] == "think"]
    assert kinds.index("step_started") < kinds.index("tool_call_started") < kinds.index("step_completed")
    assert all(e["step"] == "think" for e in events if e["event"].startswith("tool_call_"))
    first, second = (r.body["messages"] for r in stub.requests)
    assert second[: len(first)] == first
    assert second[len(first) :] == [
        {"role": "assistant", "content": None, "tool_calls": [ToolCall("call_a", "add", '{"a": 2, "b": 3}').message()]},
        {"role": "tool", "tool_call_id": "call_a", "content": "5"},
    ]


@pytest.mark.parametrize(("scenario", "results"), [("tools-parallel", ["3", "7"]), ("tools-same-index", ["3", "10"])])
async def test_the_calls_of_one_turn_run_at_once(
    stub: StubOpenAI, tmp_path: Path, scenario: str, results: list[str]
) -> None:
    both_in = threading.Barrier(2, timeout=5)  # passes only while both calls run at the same time

    @tool(name="add")
    def add_together(a: int, b: int) -> int:
        """Add two whole numbers, with company."""
        both_in.wait()
        return a + b

    wf = Workflow("calc", [Step("think", agent=Agent("calc", chat(stub, scenario), tools=[add_together]))])

    final, events = await run_to_end(tmp_path, wf, "sums")

    assert final["output"] == tool_answer(results)
    seen = tool_events(events)
    assert [(kind, data["call_id"]) for kind, data in seen[:2]] == [
        ("tool_call_started", "call_a"),
        ("tool_call_started", "call_b"),
    ]
    assert sorted((kind, data["call_id"], data["result"]) for kind, data in seen[2:]) == [
        ("tool_call_completed", "call_a", int(results[0])),
        ("tool_call_completed", "call_b", int(results[1])),
    ]
    tool_messages = [m for m in stub.requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_a", "call_b"]


@pytest.mark.parametrize(
    ("scenario", "tool_name", "args", "error"),
    [
        ("tools-raises", "boom", {}, "RuntimeError: no luck"),
        ("tools-unknown", "nope", {"x": 1}, "unknown tool 'nope'; the tools are add, boom"),
        ("tools-bad-json", "add", '{"a": 2,', "the arguments are not valid JSON"),
    ],
)
async def test_a_failed_call_is_told_to_the_model_and_the_step_goes_on(
    stub: StubOpenAI, tmp_path: Path, scenario: str, tool_name: str, args: Any, error: str
) -> None:
    wf = Workflow("calc", [Step("think", agent=Agent("calc", chat(stub, scenario), tools=[add, boom]))])

    final, events = await run_to_end(tmp_path, wf, "try")

    assert final["status"] == "completed"
    (started, start), (failed, fail) = tool_events(events)
    assert (started, start) == (
        "tool_call_started",
        {"call_id": "call_a", "tool": tool_name, "args": args, "round_calls": 1, **CALC_ROUND_1},
    )
    assert failed == "tool_call_failed" and fail["error"].startswith(error)
    told = json.loads(stub.requests[1].body["messages"][-1]["content"])
    assert told == {"error": fail["error"]}
    assert final["output"] == tool_answer([json.dumps(told, separators=(",", ":"))])


async def test_a_model_that_never_stops_calling_tools_fails_the_step(stub: StubOpenAI, tmp_path: Path) -> None:
    agent = Agent("calc", chat(stub, "tools-forever"), tools=[add], max_tool_rounds=2)
    wf = Workflow("calc", [Step("think", agent=agent)])

    final, events = await run_to_end(tmp_path, wf, "loop")

    assert final["status"] == "failed"
    assert "AgentError: agent 'calc': the model still called tools after 2 rounds (max_tool_rounds)" in final["error"]
    assert len(stub.requests) == 3
    assert [kind for kind, _ in tool_events(events)] == ["tool_call_started", "tool_call_completed"] * 2


# ---- the offline model that calls tools -----------------------------------------------------


def shout(text: str) -> str:
    """Say a text louder."""
    return text.upper()


async def test_the_offline_tool_model_asks_for_the_tools_it_can_fill_then_answers_with_their_results() -> None:
    model = OfflineToolModel(delay=0)
    specs = [Tool.from_function(f).spec() for f in (add, shout, word_count)]
    messages = [{"role": "system", "content": "You are R."}, {"role": "user", "content": '{"topic": "tide pools"}'}]

    first = [item async for item in model.turn(messages, specs)]

    assert [(c.name, json.loads(c.arguments)) for c in first if isinstance(c, ToolCall)] == [
        ("shout", {"text": "tide pools"}),
        ("word_count", {"text": "tide pools"}),
    ]  # add needs integers: left alone
    assert first == [item async for item in model.turn(messages, specs)]  # the same every time
    assert len({c.id for c in first if isinstance(c, ToolCall)}) == 2
    calls = [c for c in first if isinstance(c, ToolCall)]
    after = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [c.message() for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": '"TIDE POOLS"'},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "2"},
    ]
    answer = "".join([str(item) async for item in model.turn(after, specs)])
    assert answer.endswith('Tool shout gave "TIDE POOLS". Tool word_count gave 2.') and "tide pools" in answer
    assert "".join(await collect(model.stream(messages))) == model.reply(messages)  # no tools: plain answer


async def test_the_tools_built_in_runs_its_tools_in_its_research_step(tmp_path: Path) -> None:
    final, events = await run_to_end(tmp_path, examples.tools, {"topic": "tool calls"})

    assert final["status"] == "completed"
    seen = tool_events(events)
    assert [kind for kind, _ in seen] == ["tool_call_started"] * 2 + ["tool_call_completed"] * 2
    results = {d["tool"]: d["result"] for kind, d in seen if kind == "tool_call_completed"}
    assert results["word_count"] == 2 and results["search_notes"][0] == examples.NOTES[1]
    assert all(e["step"] == "research" for e in events if e["event"].startswith("tool_call_"))
    assert "Tool search_notes gave" in final["output"]
