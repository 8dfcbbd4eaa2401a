"""Property-based tests of the protocol parser (hypothesis): whatever arrives, an answer."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from server.protocol import ClientMessage, ErrorCode, ParseError, Ping, Start, parse_client_frame
from server.wire import error_frame

# Integers within 64 bits: past them the server's JSON parser (orjson) reads a number as a
# float, as most JSON parsers do (docs/protocol.md).
WIRE_INTEGERS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | WIRE_INTEGERS | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
TYPES = ["start", "subscribe", "unsubscribe", "poll", "cancel", "list_workflows", "list_runs", "ping", "auth"]
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=10)},
    optional={
        "id": json_values,
        "workflow": json_values,
        "run_id": json_values | st.from_regex(r"[A-Za-z0-9_\-.:]{1,64}", fullmatch=True),
        "after": json_values,
        "limit": json_values,
        "input": json_values,
        "subscribe": json_values,
        "batch": json_values,
        "token": json_values,
    },
)


def answer(frame: Any) -> None:
    """The parser's result can always be sent back: a message, or an error frame."""
    result = parse_client_frame(frame)
    if isinstance(result, ParseError):
        assert result.code in set(ErrorCode) and result.message
        body = json.loads(error_frame(result.code, result.message, result.id))
        assert body["type"] == "error"
    else:
        assert isinstance(result, ClientMessage)


@settings(max_examples=200, deadline=None)
@given(st.text() | st.binary())
def test_any_text_or_bytes_gets_an_answer(frame: str | bytes) -> None:
    answer(frame)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_any_shaped_message_gets_an_answer(message: dict[str, Any]) -> None:
    answer(json.dumps(message))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_gets_an_answer(value: Any) -> None:
    answer(json.dumps(value))


@given(st.one_of(st.text(max_size=30), st.integers(min_value=-(2**63), max_value=2**63 - 1)))
def test_the_id_comes_back_as_given(mid: str | int) -> None:
    result = parse_client_frame(json.dumps({"type": "ping", "id": mid}))
    assert isinstance(result, Ping) and result.id == mid
    error = parse_client_frame(json.dumps({"type": "nope", "id": mid}))
    assert isinstance(error, ParseError) and error.code == ErrorCode.UNKNOWN_TYPE and error.id == mid


@given(json_values)
def test_start_keeps_any_input(value: Any) -> None:
    result = parse_client_frame(json.dumps({"type": "start", "workflow": "echo", "input": value}))
    assert isinstance(result, Start) and result.input == json.loads(json.dumps(value))
