"""The questions `run` and `watch` build from an input request's schema, answered through
a real pipe read by the CLI's own Terminal (what a person types at stdin), and the
bookkeeping that decides which requests are still open when a run's log is replayed."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

from client import Client
from client.prompter import Prompter, respond_command
from client.questions import EndOfInput, ask, example
from client.terminal import Terminal
from client.view import View


class Typed:
    """A stdin made of a pipe: what the test writes is what the person typed."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.out = io.StringIO()
        self.terminal = Terminal(self.read_fd, self.out)

    def type(self, *lines: str, end: bool = False) -> None:
        os.write(self.write_fd, "".join(f"{line}\n" for line in lines).encode())
        if end:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        os.close(self.read_fd)
        if self.write_fd >= 0:
            os.close(self.write_fd)

    @property
    def shown(self) -> str:
        return self.out.getvalue()


@pytest.fixture
def typed() -> Iterator[Typed]:
    t = Typed()
    yield t
    t.close()


async def answer(typed: Typed, schema: Any, *lines: str, **kw: Any) -> Any:
    typed.type(*lines)
    return await ask(schema, typed.terminal, **kw)


async def test_boolean_is_y_or_n_asked_again_until_it_is(typed: Typed) -> None:
    assert await answer(typed, {"type": "boolean"}, "maybe", "Y") is True
    assert "answer y or n" in typed.shown and "[y/n]" in typed.shown
    assert await answer(typed, {"type": "boolean"}, "no") is False


async def test_numbers_are_asked_again_until_they_parse(typed: Typed) -> None:
    assert await answer(typed, {"type": "integer"}, "three", "3.5", " 42 ") == 42
    assert typed.shown.count("is not a whole number") == 2
    assert await answer(typed, {"type": "number"}, "2.5") == 2.5
    assert await answer(typed, {"type": "number"}, "nan", "7") == 7


async def test_string_is_the_text_as_typed(typed: Typed) -> None:
    assert await answer(typed, {"type": "string"}, "  hello, world ") == "  hello, world "
    assert await answer(typed, {"type": "string", "default": "draft"}, "") == "draft"
    assert "default draft" in typed.shown


async def test_enum_is_numbered_choices(typed: Typed) -> None:
    schema = {"enum": ["red", "green", 3]}
    assert await answer(typed, schema, "9", "2") == "green"
    shown = typed.shown
    assert '1) "red"' in shown and '2) "green"' in shown and "3) 3" in shown
    assert "choose a number from 1 to 3" in shown
    assert await answer(typed, schema, "red") == "red"  # the value itself is fine too
    assert await answer(typed, {"type": "string", "enum": ["a", "b"], "default": "b"}, "") == "b"


async def test_object_asks_each_property_required_first_with_defaults(typed: Typed) -> None:
    schema = {
        "type": "object",
        "required": ["title", "ok"],
        "properties": {
            "note": {"type": "string"},  # optional, no default: Enter leaves it out
            "count": {"type": "integer", "default": 2},
            "ok": {"type": "boolean", "description": "publish it?"},
            "title": {"type": "string"},
            "where": {"type": "object", "properties": {"city": {"type": "string", "default": "Oslo"}}},
        },
    }
    value = await answer(typed, schema, "Hello", "y", "", "", "")
    assert value == {"title": "Hello", "ok": True, "count": 2, "where": {"city": "Oslo"}}
    shown = typed.shown
    order = [shown.index(f"  {name}") for name in ("title", "ok", "note", "count", "where.city")]
    assert order == sorted(order)
    assert "ok (publish it?) [y/n]" in shown and "default 2" in shown and "optional, Enter skips" in shown


async def test_an_objects_own_default_gives_its_properties_theirs(typed: Typed) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "default": {"n": 3}}
    assert await answer(typed, schema, "") == {"n": 3}


async def test_a_refused_answer_is_offered_again_as_the_default(typed: Typed) -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}}}
    assert await answer(typed, schema, "", "", default={"n": 12, "ok": False}) == {"n": 12, "ok": False}
    assert "default 12" in typed.shown and "[y/N]" in typed.shown


async def test_anything_else_is_json_asked_again_until_it_parses(typed: Typed) -> None:
    assert await answer(typed, {"type": "array", "items": {"type": "integer"}}, "[1, 2", "", "[1, 2]") == [1, 2]
    assert "not valid JSON" in typed.shown and "an answer is needed" in typed.shown
    assert await answer(typed, None, '{"a": null}') == {"a": None}
    assert await answer(typed, {"type": ["integer", "null"]}, "") is None


async def test_closed_input_ends_the_questions(typed: Typed) -> None:
    typed.type("", end=True)
    with pytest.raises(EndOfInput):
        await ask({"type": "integer"}, typed.terminal)


async def test_lines_typed_ahead_are_kept_for_the_next_questions(typed: Typed) -> None:
    typed.type("1", "2")  # one read from the pipe holds both lines
    assert await ask({"type": "integer"}, typed.terminal) == 1
    assert await ask({"type": "integer"}, typed.terminal) == 2


def test_an_event_line_shows_above_the_question_again() -> None:
    out = io.StringIO()
    terminal = Terminal(0, out)
    terminal.write("\nstep asks: ok?\n  [y/n]: ")
    terminal.interject("> next started")
    assert out.getvalue().endswith("\n> next started\n  [y/n]: ")


def test_example_values_have_the_schema_shape() -> None:
    schema = {
        "type": "object",
        "required": ["ok", "n"],
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 1}, "x": {"type": "string"}},
    }
    assert example(schema) == {"ok": True, "n": 1}
    assert example({"enum": ["a", "b"]}) == "a" and example(None) is None and example({"type": "array"}) == []
    request = {"request_id": "r-1", "schema": {"type": "string"}}
    assert respond_command("python -m client", "run 1", request) == (
        "python -m client respond 'run 1' --request-id r-1 --value '\"...\"'"
    )


class Notes(View):
    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def requested(seq: int, request_id: str) -> dict[str, Any]:
    data = {"request_id": request_id, "prompt": f"asks {request_id}", "schema": None}
    return {"seq": seq, "event": "input_requested", "step": "s", "data": data}


def received(seq: int, request_id: str) -> dict[str, Any]:
    return {"seq": seq, "event": "input_received", "step": "s", "data": {"request_id": request_id, "value": 1}}


async def test_a_replayed_request_that_was_answered_is_not_asked_again() -> None:
    view = Notes()
    prompter = Prompter(Client("ws://127.0.0.1:9/ws"), "r", view, None)
    cut = {"truncated": True, "bytes": 300_000, "full": "/api/runs/r/events"}  # the snapshot's stand-in
    snapshot = {
        "last_seq": 5,
        "waiting_for": [{"request_id": "b", "prompt": cut, "schema": None, "step": "s"}],
        "truncated": ["waiting_for[0].prompt"],
    }
    prompter.begin(snapshot, after=0)
    for event in (requested(2, "a"), received(3, "a"), requested(4, "b")):
        prompter.event(event)
    assert view.notes == []  # still replaying: nothing is told before the log has caught up
    prompter.event({"seq": 5, "event": "progress", "step": "s", "data": {}})
    prompter.event(requested(6, "c"))
    prompter.event(requested(6, "c"))  # a duplicate delivery tells nothing new
    told = [note.split("--request-id ")[1].split()[0] for note in view.notes]
    assert told == ["b", "c"]
    assert all("is waiting for input (step s: asks" in note for note in view.notes)  # b's prompt from its event
