"""Durable agent loops: an agent's conversation rebuilt from its step's stored events.

The stored event log is the checkpoint. Each tool round of an agent leaves, in order,
the text its model streamed (`step_output` deltas), then every `tool_call_started` of the
round (`round`: its number, `round_calls`: how many calls it has), then one
`tool_call_completed` or `tool_call_failed` per call. When the step runs again (after a
crash, a restart, a takeover or a retry), those events are read back
(`StepContext.history()`) and turned here into the rounds that had been asked: what each
assistant message said and called, and what each tool told. A call with no end is
`open` (it was cut off); text streamed after the last round is a turn that was cut off,
asked of the model again. A try that goes on streams the kept rounds' text again first,
in one delta, so that a step run again streams its text from the start, as every step
does; that delta is recognised and left out here. Pure: events in, rounds out.

Events carry who made them: `agent` (the agent's name) and, for the members of a
coordinating team, `parent_call_id` (the leader's tool call the member works on); a
member's streamed text carries both too, the step's own voice carries neither. A call
made again after an interruption is `<call_id>~2` (then `~3`, ...), with `retry_of`
naming the model's own call id.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..jsontext import dumps
from .models import ToolCall

INTERRUPTED = "interrupted"  # the error of a tool call cut off by a crash or takeover
UNKNOWN_OUTCOME = (  # what the model is told of a call with side effects cut off (on_unknown="fail")
    "this call was cut off by a crash: it may or may not have happened, and it is not made again; "
    "do not assume either, and tell the user"
)
TOOL_EVENTS = frozenset({"tool_call_started", "tool_call_completed", "tool_call_failed"})

Entry = tuple[str, dict[str, Any]]  # (event, data), as StepContext.history() gives them


@dataclass
class PastCall:
    """A tool call the model had asked for: `call` as it asked it (its id, tool, arguments),
    `ids` the call_ids it was made under (the model's id first, then `~2`, ...), `told` what
    the model is told once a try ended (None while it has no answer), `open` when the last
    try started and never ended; its end is reported under that try's `parent_call_id`."""

    call: ToolCall
    ids: list[str]
    told: str | None = None
    open: bool = True
    parent_call_id: str | None = None  # the leader's call its last try worked on (a team member's)

    def next_id(self) -> str:
        """The call_id of the next try."""
        return f"{self.call.id}~{len(self.ids) + 1}"


@dataclass
class PastRound:
    """One round that had called tools: its `number` (1 first), the `text` streamed before
    the calls, the `calls`, in the order the model asked them, and `asked`, how many it
    asked (more than `calls` when a crash lost the rest of the round's starts)."""

    number: int
    text: str
    calls: list[PastCall] = field(default_factory=list)
    asked: int = 0

    @property
    def whole(self) -> bool:
        """Every call it asked for was stored (else a crash fell between two commits)."""
        return len(self.calls) >= self.asked


@dataclass
class Past:
    """What an agent had done: its `rounds` of calls, and `tail`, the text streamed after the
    last of them (a finished answer, or a turn cut off, as the caller knows). `cut` are
    the rounds whose starts were not all stored (a crash between two commits): nothing of
    theirs ran to an end, so their turn is asked again and their calls are interrupted.
    `next_round` is the number of the next round."""

    rounds: list[PastRound] = field(default_factory=list)
    tail: str = ""
    cut: list[PastRound] = field(default_factory=list)
    next_round: int = 1

    @property
    def text(self) -> str:
        """The text of its rounds, as it had streamed: what a try going on from them streams
        again first."""
        return "".join(r.text for r in self.rounds)


def told_result(result: Any) -> str:
    """What the model is told of a tool's result (text as it is, anything else as JSON)."""
    return result if isinstance(result, str) else dumps(result)


def told_error(error: str) -> str:
    """What the model is told of a failed call."""
    return dumps({"error": error})


def conversation(history: Iterable[Entry], agent: str, parents: Collection[str] = ()) -> list[Entry]:
    """The entries of one agent's conversation, and the `step_started` of each new try.

    With no `parents`, the step's own agent: tool events named `agent` (or unnamed) and the
    text that names nobody. With `parents`, a coordinating team's member: its tool events
    and text, named `agent`, working on one of the leader's calls in `parents`; its work
    under a new try of that call begins with a `step_started` too.
    """
    own: list[Entry] = []
    tries_seen: set[Any] = set()
    for event, data in history:
        if event == "step_started":
            own.append((event, data))
        elif event == "step_output" or event in TOOL_EVENTS:
            parent = data.get("parent_call_id")
            if parents:
                mine = parent in parents and data.get("agent") == agent
                if mine and parent not in tries_seen:
                    if tries_seen:  # the leader made the call again: the member's new try
                        own.append(("step_started", {}))
                    tries_seen.add(parent)
            elif event == "step_output":
                mine = parent is None and "agent" not in data
            else:
                mine = parent is None and data.get("agent", agent) == agent
            if mine:
                own.append((event, data))
    return own


def rebuild(entries: Iterable[Entry], *, replayed: bool = True) -> Past:
    """The rounds recorded by one conversation's entries (see `conversation`).

    A try that goes on from earlier rounds streams their text again first, as one delta
    (`Past.text`), so that every step run again streams its text from the start; that
    delta is known here and left out. `replayed=False` when someone else (a sequential
    team) streams it and has left it out already.
    """
    past = Past()
    calls: dict[str, PastCall] = {}  # every try's call_id -> its call (the latest, if a cut turn reused it)
    text: list[str] = []
    last_started = False
    replay: str | None = None  # the text the new try streams again first
    for event, data in entries:
        started, last_started = last_started, event == "tool_call_started"
        if event == "step_started":
            text = []
            replay = (kept_text(past) or None) if replayed else None
        elif event == "step_output":
            delta = str(data.get("delta", ""))
            expected, replay = replay, None
            if delta != expected:
                text.append(delta)
        elif event == "tool_call_started":
            replay = None
            call_id = str(data.get("call_id", ""))
            again = calls.get(str(data.get("retry_of"))) if "retry_of" in data else None
            if again is not None:
                again.ids.append(call_id)
                again.open, again.told = True, None
                again.parent_call_id = data.get("parent_call_id")
                calls[call_id] = again
                continue
            number = data.get("round")
            if not isinstance(number, int):  # stored before rounds were numbered
                number = past.rounds[-1].number if started and past.rounds else len(past.rounds) + 1
            if not past.rounds or past.rounds[-1].number != number:
                past.rounds.append(PastRound(number, "".join(text)))
                text = []
            asked = data.get("round_calls")
            past.rounds[-1].asked = asked if isinstance(asked, int) else len(past.rounds[-1].calls) + 1
            asked_call = ToolCall(call_id, str(data.get("tool", "")), _arguments(data.get("args")))
            call = PastCall(asked_call, [call_id], parent_call_id=data.get("parent_call_id"))
            past.rounds[-1].calls.append(call)
            calls[call_id] = call
        elif event in TOOL_EVENTS:
            replay = None
            found = calls.get(str(data.get("call_id", "")))
            if found is None or found.ids[-1] != data.get("call_id"):
                continue  # the end of a call it does not know, or of an earlier try
            found.open = False
            if event == "tool_call_completed":
                found.told = told_result(data.get("result"))
            elif data.get("error") != INTERRUPTED:
                found.told = told_error(str(data.get("error")))
    past.tail = "".join(text)
    past.next_round = past.rounds[-1].number + 1 if past.rounds else 1
    past.cut = [r for r in past.rounds if not r.whole]
    past.rounds = [r for r in past.rounds if r.whole]
    return past


def kept_text(past: Past) -> str:
    """The text of the rounds stored whole so far: what a try going on from them keeps."""
    return "".join(r.text for r in past.rounds if r.whole)


def _arguments(args: Any) -> str:
    """The arguments text of a call from its event's `args`: the raw text when the model
    sent text that is not JSON, else the parsed object written back as JSON."""
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
