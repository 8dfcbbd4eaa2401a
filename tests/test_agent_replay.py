"""Durable agent loops without a server: an agent's conversation rebuilt from a step's
stored events (server/agents/replay.py), and agents and teams run again from any point of
an earlier try's events, through a real StepContext."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server import (
    Agent,
    ModelError,
    OfflineModel,
    OfflineToolModel,
    Runtime,
    Step,
    StepContext,
    StepInput,
    StepOutput,
    Team,
    Workflow,
    tool,
)
from server.agents import ToolCall
from server.agents.replay import conversation, rebuild, told_error

from .agent_flows import ScriptedModel

Entry = tuple[str, dict[str, Any]]


async def drive(executor: Callable[..., AsyncIterator[Any]], history: list[Entry] | None) -> tuple[Any, list[Entry]]:
    """Run a step executor as the engine does: what it streams and reports, in order, as
    (event, data), and its output (the last StepOutput, else the streamed text)."""
    log: list[Entry] = []

    async def earlier() -> list[Entry]:
        return list(history or [])

    ctx = StepContext(
        "run",
        "think",
        2 if history else 1,
        lambda event, data: log.append((event, data)),
        asyncio.get_running_loop(),
        threaded=False,
        earlier=earlier if history else None,
    )
    text: list[str] = []
    final: Any = None
    async for item in executor(StepInput("Tidal power"), ctx):
        if isinstance(item, str):
            text.append(item)
            log.append(("step_output", {"delta": item}))
        else:
            final = item
    return (final.content if isinstance(final, StepOutput) else "".join(text)), log


def tries(prefix: list[Entry]) -> list[Entry]:
    """The stored events of a first try cut off after `prefix`, as the second try reads them."""
    return [("step_started", {"index": 0, "attempt": 1}), *prefix, ("step_started", {"index": 0, "attempt": 2})]


# ---- rebuilding rounds from events ------------------------------------------------------


def test_rounds_are_rebuilt_from_the_events_of_tries_that_were_cut_off() -> None:
    history: list[Entry] = [
        ("step_started", {"attempt": 1}),
        ("step_output", {"delta": "Looking "}),
        ("step_output", {"delta": "up."}),
        ("tool_call_started", {"call_id": "a", "tool": "add", "args": {"a": 1}, "round": 1, "agent": "calc"}),
        ("tool_call_started", {"call_id": "b", "tool": "add", "args": "{bad", "round": 1, "agent": "calc"}),
        ("tool_call_started", {"call_id": "c", "tool": "mul", "args": {}, "round": 1, "agent": "calc"}),
        ("tool_call_completed", {"call_id": "a", "tool": "add", "result": {"sum": 1}, "round": 1, "agent": "calc"}),
        ("tool_call_failed", {"call_id": "b", "tool": "add", "error": "bad JSON", "round": 1, "agent": "calc"}),
        ("tool_call_started", {"call_id": "x", "tool": "add", "args": {}, "round": 1, "agent": "other"}),
        ("step_output", {"delta": "a member's", "agent": "other", "parent_call_id": "p"}),
        ("step_started", {"attempt": 2}),  # c was cut off
        ("tool_call_failed", {"call_id": "c", "tool": "mul", "error": "interrupted", "round": 1, "agent": "calc"}),
        ("tool_call_started", {"call_id": "c~2", "tool": "mul", "args": {}, "round": 1, "retry_of": "c"}),
        ("tool_call_completed", {"call_id": "c~2", "tool": "mul", "result": "six", "round": 1, "agent": "calc"}),
        ("step_output", {"delta": "Then "}),
        ("tool_call_started", {"call_id": "d", "tool": "add", "args": {}, "round": 2, "agent": "calc"}),
        ("step_output", {"delta": "The answer is"}),  # a turn cut off: asked again
        ("step_started", {"attempt": 3}),
    ]

    past = rebuild(conversation(history, "calc"))

    assert [(r.number, r.text) for r in past.rounds] == [(1, "Looking up."), (2, "Then ")]
    first, second = past.rounds
    assert [(c.call.id, c.call.name, c.call.arguments) for c in first.calls] == [
        ("a", "add", '{"a": 1}'),
        ("b", "add", "{bad"),  # the raw text the model sent
        ("c", "mul", "{}"),
    ]
    assert [(c.ids, c.told, c.open) for c in first.calls] == [
        (["a"], '{"sum":1}', False),
        (["b"], told_error("bad JSON"), False),
        (["c", "c~2"], "six", False),
    ]
    [d] = second.calls
    assert (d.ids, d.told, d.open, d.next_id()) == (["d"], None, True, "d~2")
    assert past.text == "Looking up.Then " and past.tail == ""

    member = rebuild(conversation(history, "other", ["p"]))
    assert member.rounds == [] and member.tail == ""  # its text was cut off by the new try
    assert rebuild(conversation(history[:10], "other", ["p"])).tail == "a member's"
    assert rebuild(conversation(history, "other")).rounds[0].calls[0].call.id == "x"


def test_events_stored_before_rounds_were_numbered_still_make_rounds() -> None:
    history: list[Entry] = [
        ("tool_call_started", {"call_id": "a", "tool": "t", "args": {}}),
        ("tool_call_started", {"call_id": "b", "tool": "t", "args": {}}),
        ("tool_call_completed", {"call_id": "a", "tool": "t", "result": 1}),
        ("tool_call_completed", {"call_id": "b", "tool": "t", "result": 2}),
        ("tool_call_started", {"call_id": "c", "tool": "t", "args": {}}),
    ]
    past = rebuild(conversation(history, "any"))
    assert [[c.call.id for c in r.calls] for r in past.rounds] == [["a", "b"], ["c"]]


# ---- an agent run again from every point of a first try ------------------------------------


def planner(counts: dict[str, int]) -> Agent:
    @tool
    def note(topic: str) -> str:
        """Write a topic down."""
        counts["note"] += 1
        return f"noted {topic}"

    @tool
    def look(topic: str) -> str:
        """Look a topic up."""
        counts["look"] += 1
        return f"looked up {topic}"

    script = [
        ("Two things.", [("note", {"topic": "tides"}), ("look", {"topic": "moons"})]),
        (" One more.", [("look", {"topic": "waves"})]),
        (" Done: {results}.", []),
    ]
    return Agent("Planner", ScriptedModel("planner", script, delay=0), tools=[note, look])


async def test_an_agent_run_again_from_any_point_answers_as_if_never_cut_off_and_repeats_no_completed_call() -> None:
    counts = {"note": 0, "look": 0}
    agent = planner(counts)
    whole, first = await drive(agent.stream, None)
    assert whole == "Two things. One more. Done: noted tides; looked up moons; looked up waves."
    assert counts == {"note": 1, "look": 2}
    last_messages = agent.model.seen[-1]  # type: ignore[union-attr]

    for cut in range(len(first) + 1):
        counts = {"note": 0, "look": 0}
        agent = planner(counts)
        prefix = first[:cut]
        output, log = await drive(agent.stream, tries(prefix))

        assert output == whole, cut
        ended = {d["call_id"] for e, d in prefix if e in ("tool_call_completed", "tool_call_failed")}
        open_ = [d for e, d in prefix if e == "tool_call_started" and d["call_id"] not in ended]
        assert [d["call_id"] for e, d in log if e == "tool_call_failed"] == [d["call_id"] for d in open_], cut
        assert all(d["error"] == "interrupted" for e, d in log if e == "tool_call_failed")
        made = [d["call_id"] for e, d in log if e == "tool_call_started"]
        round_cut = any(
            d["round_calls"] > sum(1 for e2, d2 in prefix if e2 == "tool_call_started" and d2["round"] == d["round"])
            for d in open_
        )
        if round_cut:  # a crash between two commits of one round's starts: the turn is asked again,
            # its calls under new ids (the model's own are taken), a round later
            assert made[: len(open_)] == [d["call_id"] + "-2" for d in open_], cut
        else:
            assert agent.model.seen[-1] == last_messages, cut  # type: ignore[union-attr]
            assert [d["call_id"] + "~2" for d in open_] == made[: len(open_)], cut
        assert not ended & {d.get("call_id") for _, d in log}, cut  # a completed call sends nothing new
        assert sum(counts.values()) == 3 - len(ended), cut
        streamed = "".join(d["delta"] for e, d in prefix + log if e == "step_output")
        if cut == len(first):
            assert streamed.startswith(whole)  # its last turn, cut before the step completed, streams again


async def test_an_agent_cut_off_twice_still_answers_the_same_and_each_call_ends_once() -> None:
    counts = {"note": 0, "look": 0}
    whole, first = await drive(planner(counts).stream, None)
    for cut in range(1, len(first) + 1):
        _, second = await drive(planner(counts).stream, tries(first[:cut]))
        for cut2 in range(len(second) + 1):
            stored = [("step_started", {"attempt": 1}), *first[:cut], ("step_started", {"attempt": 2}), *second[:cut2]]
            output, third = await drive(planner(counts).stream, [*stored, ("step_started", {"attempt": 3})])
            assert output == whole, (cut, cut2)
            log = [*stored, *third]
            starts = [d["call_id"] for e, d in log if e == "tool_call_started"]
            ends = [d["call_id"] for e, d in log if e in ("tool_call_completed", "tool_call_failed")]
            assert sorted(starts) == sorted(ends), (cut, cut2)  # every start has its one end
            completed = [d["result"] for e, d in log if e == "tool_call_completed"]
            assert sorted(completed) == ["looked up moons", "looked up waves", "noted tides"], (cut, cut2)


async def test_calls_a_model_numbers_afresh_each_turn_get_ids_of_their_own() -> None:
    @tool
    def echo(topic: str) -> str:
        """Say it back."""
        return topic

    class SameIds(ScriptedModel):
        async def turn(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AsyncIterator[Any]:
            async for item in super().turn(messages, tools):
                yield ToolCall("call_1", item.name, item.arguments) if isinstance(item, ToolCall) else item

    script = [("", [("echo", {"topic": "a"})]), ("", [("echo", {"topic": "b"})]), ("{results}", [])]
    whole, first = await drive(Agent("A", SameIds("m", script, delay=0), tools=[echo]).stream, None)
    assert [d["call_id"] for e, d in first if e == "tool_call_started"] == ["call_1", "call_1-2"]
    assert whole == "a; b"
    cut = [i for i, (e, _) in enumerate(first) if e == "tool_call_started"][1] + 1  # in the second round's call
    output, log = await drive(Agent("A", SameIds("m", script, delay=0), tools=[echo]).stream, tries(first[:cut]))
    assert output == whole
    assert [(e, d["call_id"]) for e, d in log if e.startswith("tool_call_")] == [
        ("tool_call_failed", "call_1-2"),
        ("tool_call_started", "call_1-2~2"),
        ("tool_call_completed", "call_1-2~2"),
    ]


async def test_a_tool_that_had_failed_is_not_made_again() -> None:
    calls: list[str] = []

    @tool
    def boom(topic: str) -> str:
        """Fail."""
        calls.append(topic)
        raise RuntimeError("no luck")

    agent = Agent("A", ScriptedModel("m", [("", [("boom", {"topic": "x"})]), ("told {results}", [])]), tools=[boom])
    whole, first = await drive(agent.stream, None)
    cut = next(i for i, (e, _) in enumerate(first) if e == "tool_call_failed") + 1
    calls.clear()

    output, log = await drive(agent.stream, tries(first[:cut]))

    assert calls == [] and output == whole == 'told {"error":"RuntimeError: no luck"}'
    assert not any(e.startswith("tool_call_") for e, _ in log)


# ---- teams run again -------------------------------------------------------------------------


def sequential(asked: dict[str, int]) -> Team:
    class Counting(OfflineModel):
        def __init__(self, name: str) -> None:
            super().__init__(name, delay=0)

        async def stream(self, messages: list[dict[str, Any]]) -> AsyncIterator[str]:
            asked[self.id] += 1
            async for delta in super().stream(messages):
                yield delta

    return Team("desk", [Agent("researcher", Counting("researcher")), Agent("writer", Counting("writer"))])


@pytest.mark.parametrize("at", ["writer", "researcher"])
async def test_a_sequential_team_run_again_asks_only_the_member_that_was_cut_off(at: str) -> None:
    asked = {"researcher": 0, "writer": 0}
    whole, first = await drive(sequential(asked).stream, None)
    heading = next(i for i, (_, d) in enumerate(first) if d.get("delta", "").strip() == f"## {at}")
    cut = heading + 2  # the member's heading and its first word were stored
    asked = {"researcher": 0, "writer": 0}

    output, log = await drive(sequential(asked).stream, tries(first[:cut]))

    assert output == whole
    assert asked == ({"researcher": 0, "writer": 1} if at == "writer" else {"researcher": 1, "writer": 1})
    kept = next(d["delta"] for e, d in log if e == "step_output")  # streamed again first, in one delta
    assert whole.startswith(kept) and kept.endswith(f"## {at}\n\n")  # its cut-off first turn is asked again


def coordinated(asked: dict[str, int]) -> Team:
    class Counting(OfflineModel):
        async def stream(self, messages: list[dict[str, Any]]) -> AsyncIterator[str]:
            asked[self.id] += 1
            async for delta in super().stream(messages):
                yield delta

    members = [Agent("researcher", Counting("researcher", 0)), Agent("writer", Counting("writer", 0))]
    return Team("desk", members, mode="coordinate", model=OfflineToolModel(delay=0))


async def test_a_coordinating_team_run_again_repeats_no_member_call_that_had_completed() -> None:
    asked = {"researcher": 0, "writer": 0}
    whole, first = await drive(coordinated(asked).stream, None)
    assert asked == {"researcher": 1, "writer": 1}
    ends = [i for i, (e, _) in enumerate(first) if e == "tool_call_completed"]
    done, cut_off = (first[i][1] for i in ends)
    cut = ends[0] + 1  # the first member's task had completed, the other's was under way
    asked = {"researcher": 0, "writer": 0}

    output, log = await drive(coordinated(asked).stream, tries(first[:cut]))

    assert output == whole
    assert asked[done["tool"].removeprefix("delegate_to_")] == 0
    assert asked[cut_off["tool"].removeprefix("delegate_to_")] == 1
    assert [(e, d["call_id"]) for e, d in log if e.startswith("tool_call_")] == [
        ("tool_call_failed", cut_off["call_id"]),
        ("tool_call_started", cut_off["call_id"] + "~2"),
        ("tool_call_completed", cut_off["call_id"] + "~2"),
    ]
    member_text = [d for e, d in log if e == "step_output" and d.get("agent")]
    assert {d["parent_call_id"] for d in member_text} == {cut_off["call_id"] + "~2"}


def test_a_coordinating_team_needs_distinct_member_names() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        Team("desk", [Agent("a"), Agent("a")], mode="coordinate")
    with pytest.raises(ValueError, match="distinct names"):
        Team("desk", [Agent("desk")], mode="coordinate")
    with pytest.raises(ValueError, match="mode"):
        Team("desk", [Agent("a")], mode="broadcast")  # type: ignore[arg-type]
    team = Team("desk", [Agent("Chief Editor", role="an editor")], mode="coordinate")
    assert team.leader is not None and list(team.leader.tools) == ["delegate_to_Chief_Editor"]


# ---- a retry, through the engine -------------------------------------------------------------


async def test_a_retried_agent_step_does_not_make_again_the_calls_its_failed_try_completed(tmp_path: Path) -> None:
    made: list[str] = []

    @tool
    def note(topic: str) -> str:
        """Write a topic down."""
        made.append(topic)
        return f"noted {topic}"

    class FailsOnce(ScriptedModel):
        """Fails its first answer after the tool results (a model server's 503, say)."""

        failed = False

        async def turn(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AsyncIterator[Any]:
            if any(m["role"] == "tool" for m in messages) and not self.failed:
                self.failed = True
                raise ModelError(503, "busy")
            async for item in super().turn(messages, tools):
                yield item

    model = FailsOnce("m", [("Noting.", [("note", {"topic": "tides"})]), (" Told {results}.", [])], delay=0)
    step = Step("think", agent=Agent("A", model, tools=[note]), max_retries=1, retry_delay=0)
    rt = Runtime(str(tmp_path / "a.db"), [Workflow("retry", [step])])
    await rt.open()
    try:
        snapshot, _ = await rt.engine.start("retry", "q")
        final = await asyncio.wait_for(rt.engine.wait(snapshot["run_id"]), 10)
        events = [json.loads(e.frame) for e in await rt.store.read_events(snapshot["run_id"], 0, 1000)]
    finally:
        await rt.close()

    assert final["status"] == "completed" and final["output"] == "Noting. Told noted tides."
    assert made == ["tides"]  # the first try's completed call was not made again
    kinds = [e["event"] for e in events if e["step"] == "think"]
    assert kinds.count("tool_call_started") == 1 and kinds.count("step_failed") == 1
    assert kinds[-1] == "step_completed"


# ---- any two interruptions, for agents and both kinds of team ---------------------------------


def scripted_member(name: str, made: list[str]) -> Agent:
    @tool(name=f"{name}_notes")
    def notes(topic: str) -> str:
        """Find notes on a topic."""
        made.append(name)
        return f"{name} on {topic}"

    script = [(f"{name} looks.", [(f"{name}_notes", {"topic": "tides"})]), (" {results}", [])]
    return Agent(name, ScriptedModel(name, script, delay=0), tools=[notes])


def sequential_with_tools(made: list[str]) -> Team:
    return Team("desk", [scripted_member("ann", made), scripted_member("bob", made)])


def coordinated_with_tools(made: list[str]) -> Team:
    leader = ScriptedModel(
        "lead",
        [
            ("Asking.", [("delegate_to_ann", {"task": "tides"}), ("delegate_to_bob", {"task": "moons"})]),
            (" {results}", []),
        ],
        delay=0,
    )
    return Team("desk", [scripted_member("ann", made), scripted_member("bob", made)], mode="coordinate", model=leader)


@pytest.mark.parametrize("make", [sequential_with_tools, coordinated_with_tools])
async def test_a_team_cut_off_twice_anywhere_answers_the_same_and_makes_each_call_once(
    make: Callable[[list[str]], Team],
) -> None:
    made: list[str] = []
    whole, first = await drive(make(made).stream, None)
    assert sorted(made) == ["ann", "bob"]

    def key(data: dict[str, Any]) -> tuple[Any, ...]:  # a call of the model's, whichever try made it
        parent = data.get("parent_call_id")
        return data["agent"], parent and parent.split("~")[0], data["call_id"].split("~")[0]

    for cut in range(1, len(first) + 1):
        _, second = await drive(make([]).stream, tries(first[:cut]))
        for cut2 in range(len(second) + 1):
            stored = [("step_started", {"attempt": 1}), *first[:cut], ("step_started", {"attempt": 2}), *second[:cut2]]
            made = []
            output, third = await drive(make(made).stream, [*stored, ("step_started", {"attempt": 3})])
            assert output == whole, (cut, cut2)
            log = [*stored, *third]
            starts = sorted(d["call_id"] for e, d in log if e == "tool_call_started")
            assert starts == sorted(d["call_id"] for e, d in log if e in ("tool_call_completed", "tool_call_failed"))
            completed = [key(d) for e, d in log if e == "tool_call_completed"]
            assert len(completed) == len(set(completed)) == 2 + (2 if make is coordinated_with_tools else 0)
