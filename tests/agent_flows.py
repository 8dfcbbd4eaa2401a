"""Workflows with agents that act, for tests/test_durable_agents.py: a scripted model (a
stand-in for a real one, deterministic given the messages) and tools that count their
calls in files under RUNCAST_AGENT_DIR, which the test sets."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server import Agent, OfflineModel, OfflineToolModel, Step, Team, Workflow, tool
from server.agents import Message, ToolCall

Script = list[tuple[str, list[tuple[str, dict[str, Any]]]]]  # per turn: (text, [(tool, args)])


class ScriptedModel:
    """A model that follows a script: its turn n (n = the rounds of tool calls answered
    since the last user message) streams the script's text n word by word, `{results}`
    replaced by the tool results it was given, then asks for the script's calls n, with
    ids `call_<n>_<i>`. The last entry repeats."""

    def __init__(self, id: str, script: Script, delay: float = 0.001) -> None:
        self.id = id
        self.script = script
        self.delay = delay
        self.seen: list[list[Message]] = []  # the messages of every turn, for unit tests

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        async for item in self.turn(messages, []):
            if isinstance(item, str):
                yield item

    async def turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> AsyncIterator[str | ToolCall]:
        import asyncio

        self.seen.append(list(messages))
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        after = messages[last_user + 1 :]
        n = sum(1 for m in after if m["role"] == "assistant" and m.get("tool_calls"))
        text, calls = self.script[min(n, len(self.script) - 1)]
        results = "; ".join(str(m["content"]) for m in after if m["role"] == "tool")
        for i, word in enumerate(text.replace("{results}", results).split(" ")):
            await asyncio.sleep(self.delay)
            yield word if i == 0 else " " + word
        for i, (name, args) in enumerate(calls, 1):
            yield ToolCall(f"call_{n + 1}_{i}", name, json.dumps(args))


def calls_file(name: str) -> Path:
    return Path(os.environ.get("RUNCAST_AGENT_DIR", ".")) / f"{name}.calls"


def note(topic: str) -> str:
    """Write down a topic."""
    with calls_file("note").open("a") as f:
        f.write(topic + "\n")
    return f"noted {topic}"


@tool(timeout=120)
def slow(topic: str) -> str:
    """Look a topic up, slowly the first time (long enough to be killed)."""
    path = calls_file("slow")
    first = not path.exists()
    with calls_file("slow").with_suffix(".pids").open("a") as f:
        f.write(f"{os.getpid()}\n")  # which server runs it (a cluster test kills that node)
    with path.open("a") as f:
        f.write(topic + "\n")
    if first:
        time.sleep(90)
    return f"looked up {topic}"


PLANNER_SCRIPT: Script = [
    ("Noting first.", [("note", {"topic": "tides"})]),
    (" Now the slow part.", [("slow", {"topic": "moons"})]),
    (" Done: {results}.", []),
]
PLANNER_ANSWER = "Noting first. Now the slow part. Done: noted tides; looked up moons."

durable = Workflow(
    "durable_agent",
    [Step("think", agent=Agent("Planner", model=ScriptedModel("planner", PLANNER_SCRIPT), tools=[note, slow]))],
)

desk = Workflow(
    "desk",
    [
        Step(
            "draft",
            team=Team(
                "desk",
                [
                    Agent("researcher", OfflineModel(delay=0.001), "Find the facts.", "a researcher"),
                    Agent("writer", OfflineModel(delay=0.001), "Write it up.", "a writer"),
                ],
                mode="coordinate",
                model=OfflineToolModel(delay=0.001),
            ),
        )
    ],
)


def _member(name: str, tool_name: str, topic: str) -> Agent:
    script: Script = [(f"{name} starts.", [(tool_name, {"topic": topic})]), (" {results}", [])]
    return Agent(name, ScriptedModel(name, script), tools=[note, slow])


LEAD_SCRIPT: Script = [
    ("Asking both.", [("delegate_to_quick", {"task": "tides"}), ("delegate_to_steady", {"task": "moons"})]),
    (" Both said: {results}", []),
]
LEAD_ANSWER = "Asking both. Both said: quick starts. noted tides; steady starts. looked up moons"

durable_desk = Workflow(
    "durable_desk",
    [
        Step(
            "draft",
            team=Team(
                "lead",
                [_member("quick", "note", "tides"), _member("steady", "slow", "moons")],
                mode="coordinate",
                model=ScriptedModel("lead", LEAD_SCRIPT),
            ),
        )
    ],
)
