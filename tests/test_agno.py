"""Agno workflows served by runcast: an unchanged Agno module given to `--workflows`, its
models aimed at the stub OpenAI server, seen by a client over /ws."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import ROOT, Client, ServerProcess, assert_log
from .stub_openai import EVERY_TOOL_ARGS, EVERY_TOOL_TASK, StubOpenAI, every_tool_answer, reply_text, serving

if importlib.util.find_spec("agno") is None and not os.environ.get("CI"):
    pytest.skip("agno is not installed: pip install -e '.[agno]'", allow_module_level=True)

EXAMPLE = ROOT / "examples" / "agno_workflow.py"
FLOWS = Path(__file__).with_name("agno_flows.py")
CONTENT = "Content Creation Workflow"


def stub_env(stub: StubOpenAI) -> dict[str, str]:
    """What the served Agno code reads: the openai library's base URL and key, the flows' stub."""
    return {
        "OPENAI_BASE_URL": stub.url("every-tool"),
        "OPENAI_API_KEY": "sk-stub",
        "AGNO_STUB": f"http://127.0.0.1:{stub.port}",
        "AGNO_TELEMETRY": "false",  # nothing leaves the machine
    }


@pytest.fixture(scope="module")
def stub() -> Iterator[StubOpenAI]:
    with serving(StubOpenAI()) as stub:
        yield stub


@pytest.fixture(scope="module")
def server(stub: StubOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("agno")
    with pytest.MonkeyPatch.context() as env:  # the child server inherits the environment
        for key, value in {**stub_env(stub), "AGNO_FLAG": str(folder / "flag")}.items():
            env.setenv(key, value)
        db = folder / "agno.db"
        proc = ServerProcess(db, "--workflows", str(EXAMPLE), "--workflows", str(FLOWS)).start(timeout=60)
    try:
        yield proc
    finally:
        proc.stop()


def by_step(events: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [e for e in events if e["step"] == step]


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["delta"] for e in events if e["event"] == "step_output")


async def test_the_agno_example_runs_as_runcast_steps_with_its_text_and_tool_calls(
    server: ServerProcess, stub: StubOpenAI
) -> None:
    client = await Client.connect(server.url)
    run_id = await client.start(CONTENT, "AI trends in 2024")
    events = await client.until_terminal(run_id)
    assert_log(events)  # seq 1..n without gaps, one terminal event last

    steps = [(e["event"], e["step"]) for e in events if e["event"] in ("step_started", "step_completed")]
    assert steps == [
        ("step_started", "Research Step"),
        ("step_completed", "Research Step"),
        ("step_started", "Content Planning Step"),
        ("step_completed", "Content Planning Step"),
    ]
    research, planning = by_step(events, "Research Step"), by_step(events, "Content Planning Step")

    # The team leader delegates to each member, and each member calls its tool: all are tool calls
    # of the step, each start followed by its end with the same call_id.
    tools = [(e["event"], e["data"]["tool"]) for e in research if e["event"].startswith("tool_call_")]
    assert tools == [
        ("tool_call_started", "delegate_task_to_member"),
        ("tool_call_started", "get_top_hackernews_stories"),
        ("tool_call_completed", "get_top_hackernews_stories"),
        ("tool_call_completed", "delegate_task_to_member"),
        ("tool_call_started", "delegate_task_to_member"),
        ("tool_call_started", "web_search"),
        ("tool_call_completed", "web_search"),
        ("tool_call_completed", "delegate_task_to_member"),
    ]
    calls = [e["data"] for e in research if e["event"] == "tool_call_started"]
    assert len({c["call_id"] for c in calls}) == 4
    assert calls[0]["args"] == {"member_id": "hackernews-agent", "task": EVERY_TOOL_TASK}
    assert calls[1]["args"] == {"num_stories": EVERY_TOOL_ARGS["integer"]}
    assert calls[3]["args"] == {"query": EVERY_TOOL_ARGS["string"], "max_results": EVERY_TOOL_ARGS["integer"]}
    done = {e["data"]["call_id"]: e["data"] for e in research if e["event"] == "tool_call_completed"}
    stories = done[calls[1]["call_id"]]["result"]  # the stand-in's JSON text, given back as JSON
    assert [s["title"] for s in stories][:1] == ["Show HN: Background jobs that stream their progress"]
    assert len(stories) == 2
    assert done[calls[0]["call_id"]]["result"] == every_tool_answer("gpt-5-mini", EVERY_TOOL_TASK, 1)

    # step_output is the leader's text (members' text reaches it as tool results), once.
    leader = every_tool_answer("gpt-5-mini", "AI trends in 2024", 2)
    assert text(research) == leader
    assert research[-1]["data"]["output"] == leader
    # The planner sees the research step's output, as under Agno.
    assert text(planning) == every_tool_answer("gpt-5-mini", leader, 0)
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == text(planning)
    assert planning[-1]["data"]["output"] == text(planning)
    asked = [r.body["messages"][-1]["content"] for r in stub.requests if r.body["model"] == "gpt-5-mini"]
    assert leader in asked
    await client.close()


async def test_list_workflows_shows_the_agno_workflows_with_their_steps(server: ServerProcess) -> None:
    client = await Client.connect(server.url)
    reply = await client.request({"type": "list_workflows"})
    listed = {w["name"]: w for w in reply["workflows"]}
    assert listed[CONTENT]["steps"] == ["Research Step", "Content Planning Step"]
    assert listed[CONTENT]["description"] == "Automated content creation from blog posts to social media"
    assert listed["agno-two"]["steps"] == ["first", "second", "shout"]
    assert listed["agno-groups"]["steps"] == ["both", "branches", "then", "after"]
    assert "echo" in listed  # the built-in ones are still there
    assert "db (SqliteDb) is not used" in server.tail(20_000)
    await client.close()


async def test_an_agno_input_schema_checks_the_input_and_steps_get_its_model(server: ServerProcess) -> None:
    client = await Client.connect(server.url)
    bad = await client.request({"type": "start", "workflow": "agno-typed", "input": {"weeks": 2}})
    assert bad["type"] == "error" and bad["code"] == "invalid_input" and "topic" in bad["message"]
    run_id = await client.start("agno-typed", {"topic": "AI"})
    events = await client.until_terminal(run_id)
    assert events[-1]["event"] == "run_completed"
    # The step got Agno's model instance, its default filled in; its pydantic output is stored as JSON.
    assert events[-1]["data"]["output"] == {"topic": "plan for AI", "weeks": 8}
    listed = {w["name"]: w for w in (await client.request({"type": "list_workflows"}))["workflows"]}
    assert listed["agno-typed"]["input_schema"]["required"] == ["topic"]
    await client.close()


async def test_an_unsuccessful_agno_step_fails_the_step_and_the_run(server: ServerProcess) -> None:
    client = await Client.connect(server.url)
    run_id = await client.start("agno-fail", "x")
    events = await client.until_terminal(run_id)
    assert_log(events)
    ok = by_step(events, "ok")
    assert ok[-1]["event"] == "step_completed" and ok[-1]["data"]["output"] == "fine with x"
    failed = [e for e in events if e["event"] == "step_failed"]
    assert [(e["step"], e["data"]["will_retry"], e["data"]["attempt"]) for e in failed] == [("no", False, 1)]
    assert "the step said no to fine with x" in failed[0]["data"]["error"]
    assert events[-1]["event"] == "run_failed" and "the step said no" in events[-1]["data"]["error"]
    await client.close()


async def test_an_agno_retry_is_a_runcast_attempt_and_streams_its_output_once(server: ServerProcess) -> None:
    client = await Client.connect(server.url)
    run_id = await client.start("agno-retry", "hi")
    events = await client.until_terminal(run_id)
    assert_log(events)
    kinds = [(e["event"], e["data"].get("attempt")) for e in events if e["event"] in ("step_started", "step_failed")]
    assert kinds == [("step_started", 1), ("step_failed", 1), ("step_started", 2)]
    assert [e["data"]["will_retry"] for e in events if e["event"] == "step_failed"] == [True]
    second = events.index(next(e for e in events if e["event"] == "step_started" and e["data"]["attempt"] == 2))
    first_try, second_try = events[:second], events[second:]
    assert text(first_try) == "Hello"  # the stub's first piece, before it broke off
    assert text(second_try) == reply_text("flaky-1")  # the whole answer, once
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == reply_text("flaky-1")
    await client.close()


async def test_agno_groups_are_one_step_each_with_their_inner_steps_as_progress(server: ServerProcess) -> None:
    client = await Client.connect(server.url)
    run_id = await client.start("agno-groups", "y")
    events = await client.until_terminal(run_id)
    assert_log(events)
    steps = [e["step"] for e in events if e["event"] == "step_completed"]
    assert steps == ["both", "branches", "then", "after"]
    inner = [(e["step"], e["data"]["step"], e["data"]["status"]) for e in events if e["event"] == "progress"]
    assert sorted(x for x in inner if x[0] == "both") == [
        ("both", "left", "completed"),
        ("both", "left", "started"),
        ("both", "right", "completed"),
        ("both", "right", "started"),
    ]
    assert [x for x in inner if x[0] == "then"] == [
        ("then", "again", "started"),
        ("then", "again", "completed"),
        ("then", "loud", "started"),
        ("then", "loud", "completed"),
    ]
    outputs = {e["step"]: e["data"]["output"] for e in events if e["event"] == "step_completed"}
    assert outputs["both"] == {"left": "fine with y", "right": "right of y"}  # as runcast's own Parallel
    assert outputs["branches"] == {"left": "fine with y", "right": "right of y"}  # Agno's get_step_content
    assert outputs["then"] == "FINE WITH Y"  # what Agno hands on from a Steps: its last inner step's
    assert outputs["after"] == "FINE WITH Y"
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == "FINE WITH Y"
    await client.close()


async def test_a_kill_between_agno_steps_resumes_at_the_step_it_was_in(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    with serving(StubOpenAI()) as stub, pytest.MonkeyPatch.context() as env:
        for key, value in {**stub_env(stub), "AGNO_FLAG": str(flag)}.items():
            env.setenv(key, value)
        proc = ServerProcess(tmp_path / "kill.db", "--workflows", str(FLOWS)).start(timeout=60)
        try:
            client = await Client.connect(proc.url)
            # Two runs cut off mid-step by kill -9: one while its model streams (then stalls),
            # one inside a tool call (that waits for the flag).
            streaming = await client.start("agno-two", "go")
            in_tool = await client.start("agno-wait", "wait")
            await client.wait(lambda m: m.get("event") == "step_output" and m.get("step") == "second", timeout=30)
            await client.wait(lambda m: m.get("event") == "tool_call_started" and m.get("step") == "slow", timeout=30)
            proc.kill()
            await client.close()
            flag.touch()
            proc.restart()
            client = await Client.connect(proc.url)
            logs = {}
            for run_id in (streaming, in_tool):
                await client.request({"type": "subscribe", "run_id": run_id})
                logs[run_id] = await client.until_terminal(run_id)
        finally:
            proc.stop()
    for events in logs.values():
        assert_log(events)
        assert events[-1]["event"] == "run_completed"

    events = logs[streaming]
    started = [(e["step"], e["data"]["attempt"]) for e in events if e["event"] == "step_started"]
    assert started == [("first", 1), ("second", 1), ("second", 2), ("shout", 1)]
    resumed = [e["data"] for e in events if e["event"] == "run_resumed"]
    assert resumed == [{"reason": "restart", "from_step": "second"}]
    assert stub.hits["ok"] == 1  # the first step's model was not asked again
    assert stub.hits["stall-once"] == 2
    assert events[-1]["data"]["output"] == reply_text("second-1").upper()

    events = logs[in_tool]
    resumed_at = next(i for i, e in enumerate(events) if e["event"] == "run_resumed")
    tools = [(e["event"], e["data"]) for e in events if e["event"].startswith("tool_call_")]
    (_, cut), (_, ended), (_, again), (_, done) = tools
    assert cut["tool"] == "wait_for_flag" and ended == {**cut_off(cut), "error": "interrupted"}
    assert events.index(next(e for e in events if e["data"] == ended)) > resumed_at
    assert again["call_id"] != cut["call_id"]  # the step ran again from its start: a new call
    assert done == {"call_id": again["call_id"], "tool": "wait_for_flag", "result": "the flag is up"}
    assert events[-1]["data"]["output"] == every_tool_answer("slow-1", "wait", 1).upper()
    await client.close()


def cut_off(started: dict[str, Any]) -> dict[str, Any]:
    return {"call_id": started["call_id"], "tool": started["tool"]}


def test_the_example_is_agno_code_that_runs_under_agno_too(stub: StubOpenAI, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")} | stub_env(stub)
    env["RUNCAST_POLL_SECONDS"] = "0.2"
    env["PYTHONPATH"] = str(ROOT)  # the example imports runcast's offline model: this checkout's
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Run ID:" in done.stdout and "answers 'AI trends in 2024'" in done.stdout
    assert (tmp_path / "tmp" / "workflow.db").exists()  # Agno's own db, used when Agno runs it


async def test_a_plain_agno_function_step_runs_in_a_thread_not_on_the_servers_loop(server: ServerProcess) -> None:
    client = await Client.connect(server.url)
    run_id = await client.start("agno-blocking", None)
    await client.wait(lambda m: m.get("event") == "step_started" and m.get("run_id") == run_id)
    # The step blocks (it waits for the flag file) and the server still answers at once.
    pong = await client.request({"type": "ping"}, timeout=5)  # the step would block for 10 s
    assert pong["type"] == "pong"
    assert not [e for e in client.events(run_id) if e["event"] == "step_completed"]
    flag = Path(server.db).with_name("flag")
    flag.touch()
    events = await client.until_terminal(run_id)
    assert events[-1]["event"] == "run_completed" and events[-1]["data"]["output"] == "the flag is up"
    await client.close()


async def test_cancelling_a_run_stops_its_agno_step_and_its_model_call(server: ServerProcess, stub: StubOpenAI) -> None:
    client = await Client.connect(server.url)
    run_id = await client.start("agno-two", "stop")
    await client.wait(lambda m: m.get("event") == "step_output" and m.get("step") == "second", timeout=30)
    reply = await client.request({"type": "cancel", "run_id": run_id})
    assert reply["type"] == "cancel_requested"
    events = await client.until_terminal(run_id, timeout=5)
    assert_log(events)
    assert events[-1]["event"] == "run_cancelled"
    assert not [e for e in events if e["step"] == "shout"]
    await client.close()


# ---- the mapping itself, on Agno's own objects (no server) --------------------------------


def test_agno_steps_become_runcast_steps_with_agno_retries_moved_to_runcast() -> None:
    from agno.workflow import Parallel, Step, Workflow
    from agno.workflow.types import StepOutput

    from server.agents.agno import from_agno

    def work(step_input: Any) -> StepOutput:
        return StepOutput(content="done")

    plain, careful = Step(name="plain", executor=work), Step(name="careful", executor=work, max_retries=5)
    optional = Step(name="optional", executor=work, max_retries=0, skip_on_failure=True)
    both = Parallel(Step(name="a", executor=work, max_retries=1), Step(name="b", executor=work), name="both")
    agno_workflow = Workflow(name="W", description="d", steps=[plain, careful, optional, both])
    wf = from_agno(agno_workflow)
    assert (wf.name, wf.description, [s.name for s in wf.steps]) == ("W", "d", ["plain", "careful", "optional", "both"])
    assert [s.max_retries for s in wf.steps] == [3, 5, 0, 3]  # Agno's default is 3; a container's largest
    assert [s.skip_on_failure for s in wf.steps] == [False, False, True, False]
    assert [plain.max_retries, careful.max_retries, *(s.max_retries for s in both.steps)] == [0, 0, 0, 0]
    assert not optional.skip_on_failure  # Agno raises, runcast marks the step skipped
    again = from_agno(agno_workflow)  # wrapping it again gives the same
    assert [(s.max_retries, s.skip_on_failure) for s in again.steps] == [(3, False), (5, False), (0, True), (3, False)]


def test_agno_workflows_that_runcast_cannot_serve_are_refused_by_name() -> None:
    from agno.workflow import Step, Workflow
    from agno.workflow.types import HumanReview

    from server.agents.agno import from_agno

    def work(step_input: Any) -> str:
        return "done"

    with pytest.raises(ValueError, match="needs a name"):
        from_agno(Workflow(steps=[Step(name="s", executor=work)]))
    with pytest.raises(ValueError, match="not a function"):
        from_agno(Workflow(name="F", steps=work))
    confirm = Step(name="send", executor=work, human_review=HumanReview(requires_confirmation=True))
    with pytest.raises(ValueError, match="'send': human review is not served"):
        from_agno(Workflow(name="H", steps=[confirm]))


async def test_agno_events_map_to_runcast_events_each_tool_call_ending_once() -> None:
    import asyncio

    from agno.models.response import ToolExecution
    from agno.run.agent import RunContentEvent, ToolCallCompletedEvent, ToolCallErrorEvent, ToolCallStartedEvent
    from agno.run.team import RunContentEvent as TeamRunContentEvent

    from server.agents.agno import _Events
    from server.engine.context import StepContext

    sent: list[tuple[str, dict[str, Any]]] = []
    emit = lambda event, data: sent.append((event, data))  # noqa: E731
    ctx = StepContext("r", "s", 1, emit, asyncio.get_running_loop(), threaded=False)
    events = _Events(ctx)
    call = ToolExecution(tool_call_id="c1", tool_name="add", tool_args={"a": 1})
    for event in [
        TeamRunContentEvent(content="lead "),
        RunContentEvent(content="member text", parent_run_id="team-run"),  # a member's: not streamed
        ToolCallStartedEvent(tool=call),
        ToolCallErrorEvent(tool=call, error="bad"),
        ToolCallCompletedEvent(tool=ToolExecution(tool_call_id="c1", tool_name="add", result="2")),  # ended already
        ToolCallStartedEvent(tool=ToolExecution(tool_name="search", tool_args={"q": "x"})),  # no id: one is made
        ToolCallCompletedEvent(tool=ToolExecution(tool_call_id="c2", tool_name="add", result="[1]")),  # never started
        RunContentEvent(content="done"),
    ]:
        events.send(event)
    events.end_open("interrupted")
    assert sent == [
        ("step_output", {"delta": "lead "}),
        ("tool_call_started", {"call_id": "c1", "tool": "add", "args": {"a": 1}}),
        ("tool_call_failed", {"call_id": "c1", "tool": "add", "error": "bad"}),
        ("tool_call_started", {"call_id": "search-1", "tool": "search", "args": {"q": "x"}}),
        ("step_output", {"delta": "done"}),
        ("tool_call_failed", {"call_id": "search-1", "tool": "search", "error": "interrupted"}),
    ]


def test_agno_values_become_json() -> None:
    from pydantic import BaseModel

    from server.agents.agno import _result, as_json

    class Plan(BaseModel):
        weeks: int
        topics: list[str]

    assert as_json(Plan(weeks=4, topics=["a"])) == {"weeks": 4, "topics": ["a"]}
    assert as_json({"plan": Plan(weeks=1, topics=[]), 2: (1, 2)}) == {"plan": {"weeks": 1, "topics": []}, "2": [1, 2]}
    assert as_json(object).startswith("<class")
    assert _result('[{"title": "x"}]') == [{"title": "x"}]  # Agno gives tool results as text
    assert _result("plain words") == "plain words"
