"""The CLI's live view, fed events directly and drawn to a string."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from client.live import LiveView


def event(seq: int, kind: str, step: str | None = None, **data: Any) -> dict[str, Any]:
    return {"run_id": "r1", "seq": seq, "event": kind, "step": step, "ts": "2026-01-01T00:00:00Z", "data": data}


def test_tool_calls_show_under_their_step_with_arguments_and_result_or_error() -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=120, force_terminal=False))
    events = [
        event(1, "run_started", workflow="tools"),
        event(2, "step_started", "research", attempt=1),
        event(3, "tool_call_started", "research", call_id="a", tool="search_notes", args={"query": "x" * 200}),
        event(4, "tool_call_started", "research", call_id="b", tool="word_count", args={"text": "two words"}),
        event(5, "tool_call_completed", "research", call_id="a", tool="search_notes", result=["a note"]),
        event(6, "tool_call_failed", "research", call_id="b", tool="word_count", error="ValueError: no"),
        event(7, "step_output", "research", delta="The answer."),
        event(8, "step_completed", "research", output="The answer."),
        event(9, "run_completed", output="The answer."),
    ]
    for e in events:
        view.event(e)
    view.close()

    screen = out.getvalue()
    search = next(line for line in screen.splitlines() if "↳ search_notes" in line)
    assert "completed" in search and '→ ["a note"]' in search and "…" in search and "x" * 100 not in search
    count = next(line for line in screen.splitlines() if "↳ word_count" in line)
    assert "failed" in count and '({"text":"two words"})' in count and "✗ ValueError: no" in count
    assert screen.index("research") < screen.index("↳ search_notes") < screen.index("↳ word_count")


def test_a_resumed_agent_keeps_its_calls_and_a_team_member_speaks_under_its_name() -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=120, force_terminal=False))
    member = {"agent": "researcher", "parent_call_id": "d1"}
    events = [
        event(1, "step_started", "draft", attempt=1),
        event(2, "tool_call_started", "draft", call_id="d1", tool="delegate_to_researcher", args={"task": "x"}),
        event(3, "step_output", "draft", delta="Half of", **member),
        event(4, "tool_call_started", "draft", call_id="s1", tool="search", args={}, **member),
        event(5, "step_started", "draft", attempt=2),  # the server restarted
        event(6, "tool_call_failed", "draft", call_id="d1", tool="delegate_to_researcher", error="interrupted"),
        event(7, "step_output", "draft", delta="The leader speaks."),
        event(8, "step_output", "draft", delta="Found it.", **{**member, "parent_call_id": "d1~2"}),
    ]
    for e in events:
        view.event(e)
    view.close()

    screen = out.getvalue()
    delegated = next(line for line in screen.splitlines() if "↳ delegate_to_researcher" in line)
    assert "failed" in delegated and "interrupted" in delegated  # kept across the restart
    assert "↳ researcher › search" in screen
    assert "draft · researcher" in screen and "Found it." in screen and "The leader speaks." in screen
    assert "Half of" not in screen  # the try that was cut off is not shown twice


def test_a_waiting_step_shows_its_question_and_then_its_answer() -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=120, force_terminal=False))
    view.event(event(1, "step_started", "approve", attempt=1))
    view.event(event(2, "input_requested", "approve", request_id="q1", prompt="Publish this?", schema=None))
    view.close()
    waiting = out.getvalue()
    assert "run r1" in waiting and "waiting" in waiting.splitlines()[0]
    step = next(line for line in waiting.splitlines() if line.startswith("approve"))
    assert "waiting" in step
    asked = next(line for line in waiting.splitlines() if "? Publish this?" in line)
    assert "waiting" in asked

    out.truncate(0)
    out.seek(0)
    view.event(event(3, "input_received", "approve", request_id="q1", value={"ok": True}))
    view.close()
    answered = out.getvalue()
    assert "running" in answered.splitlines()[0]
    asked = next(line for line in answered.splitlines() if "? Publish this?" in line)
    assert "answered" in asked and '→ {"ok":true}' in asked
