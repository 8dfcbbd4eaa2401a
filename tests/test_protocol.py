"""Unit tests of server.protocol: parsing client frames and building server frames (no I/O)."""

from __future__ import annotations

import json
import random
import re
import string
from datetime import UTC, datetime
from typing import Any

import pytest

from server.jsontext import dumps, to_json_value
from server.protocol import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    Auth,
    Cancel,
    ErrorCode,
    ListRuns,
    ListWorkflows,
    ParseError,
    Ping,
    Poll,
    Start,
    Subscribe,
    Unsubscribe,
    parse_client_frame,
)
from server.wire import error_frame, event_frame, events_frame, reply, utc_now, welcome_frame


def parse(obj: Any) -> Any:
    return parse_client_frame(json.dumps(obj))


def assert_error(result: Any, code: ErrorCode, mid: Any = None) -> ParseError:
    assert isinstance(result, ParseError), result
    assert result.code == code, result
    assert result.id == mid, result
    assert isinstance(result.message, str) and result.message
    return result


# ---- valid messages ----------------------------------------------------------------


def test_start_minimal_takes_defaults() -> None:
    assert parse({"type": "start", "workflow": "echo"}) == Start(
        None, "echo", None, run_id=None, subscribe=True, batch=False
    )


def test_start_full() -> None:
    msg = parse(
        {
            "type": "start",
            "id": "req-1",
            "workflow": "count",
            "input": {"n": 3, "nested": [1, None, "x"]},
            "run_id": "my.run:1_A-z",
            "subscribe": False,
            "batch": True,
        }
    )
    assert msg == Start("req-1", "count", {"n": 3, "nested": [1, None, "x"]}, "my.run:1_A-z", False, True)


@pytest.mark.parametrize("value", [None, 0, "text", [1, 2], {"a": {"b": None}}, False, 1.5])
def test_start_input_is_any_json(value: Any) -> None:
    msg = parse({"type": "start", "workflow": "echo", "input": value})
    assert isinstance(msg, Start)
    assert msg.input == value


def test_subscribe_minimal_and_full() -> None:
    assert parse({"type": "subscribe", "run_id": "r1"}) == Subscribe(None, "r1", after=0, batch=False)
    assert parse({"type": "subscribe", "id": 7, "run_id": "r1", "after": 12, "batch": True}) == Subscribe(
        7, "r1", 12, True
    )
    # null after means "from the start", like a missing one
    assert parse({"type": "subscribe", "run_id": "r1", "after": None}) == Subscribe(None, "r1", 0, False)


@pytest.mark.parametrize(("kind", "cls"), [("unsubscribe", Unsubscribe), ("poll", Poll), ("cancel", Cancel)])
def test_run_id_messages(kind: str, cls: type) -> None:
    assert parse({"type": kind, "run_id": "abc"}) == cls(None, "abc")
    assert parse({"type": kind, "run_id": "abc", "id": "x"}) == cls("x", "abc")
    assert_error(parse({"type": kind}), ErrorCode.BAD_REQUEST)
    assert_error(parse({"type": kind, "id": 3, "run_id": 5}), ErrorCode.BAD_REQUEST, 3)


def test_list_workflows_and_ping_and_auth() -> None:
    assert parse({"type": "list_workflows"}) == ListWorkflows(None)
    assert parse({"type": "list_workflows", "id": 1}) == ListWorkflows(1)
    assert parse({"type": "ping"}) == Ping(None)
    assert parse({"type": "ping", "id": "p"}) == Ping("p")
    assert parse({"type": "auth", "token": "s3cret"}) == Auth(None, "s3cret")
    assert parse({"type": "auth", "id": 2, "token": ""}) == Auth(2, "")


def test_list_runs_defaults_and_full() -> None:
    assert parse({"type": "list_runs"}) == ListRuns(None, None, None, DEFAULT_LIST_LIMIT, None)
    assert DEFAULT_LIST_LIMIT == 50
    assert parse(
        {"type": "list_runs", "id": 9, "workflow": "count", "status": "running", "limit": 10, "before": "42"}
    ) == ListRuns(9, "count", "running", 10, "42")


@pytest.mark.parametrize("status", ["pending", "running", "completed", "failed", "cancelled"])
def test_list_runs_every_status(status: str) -> None:
    msg = parse({"type": "list_runs", "status": status})
    assert isinstance(msg, ListRuns)
    assert msg.status == status


@pytest.mark.parametrize("limit", [1, 2, 499, 500])
def test_list_runs_limit_in_bounds(limit: int) -> None:
    msg = parse({"type": "list_runs", "limit": limit})
    assert isinstance(msg, ListRuns)
    assert msg.limit == limit
    assert MAX_LIST_LIMIT == 500


@pytest.mark.parametrize("limit", [0, -1, 501, 10_000, 1.5, "10", True, [10]])
def test_list_runs_limit_out_of_bounds_or_wrong_type(limit: Any) -> None:
    assert_error(parse({"type": "list_runs", "id": "L", "limit": limit}), ErrorCode.BAD_REQUEST, "L")


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "done"},
        {"status": 3},
        {"status": ""},
        {"workflow": 5},
        {"workflow": ""},
        {"before": 12},
        {"before": ""},
    ],
)
def test_list_runs_bad_filters(fields: dict[str, Any]) -> None:
    assert_error(parse({"type": "list_runs", "id": 4, **fields}), ErrorCode.BAD_REQUEST, 4)


# ---- ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("mid", ["abc", "", 0, -5, 2**53, "0"])
def test_id_is_echoed_on_success_and_on_error(mid: Any) -> None:
    assert parse({"type": "ping", "id": mid}) == Ping(mid)
    assert_error(parse({"type": "nope", "id": mid}), ErrorCode.UNKNOWN_TYPE, mid)
    assert_error(parse({"type": "start", "id": mid}), ErrorCode.BAD_REQUEST, mid)
    assert_error(parse({"id": mid}), ErrorCode.BAD_REQUEST, mid)


@pytest.mark.parametrize("mid", [True, False, {"a": 1}, [1], 1.5])
def test_bad_id_is_bad_request_without_id(mid: Any) -> None:
    result = assert_error(parse({"type": "ping", "id": mid}), ErrorCode.BAD_REQUEST, None)
    assert "id" in result.message


def test_null_id_is_no_id() -> None:
    assert parse({"type": "ping", "id": None}) == Ping(None)


# ---- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["", "not json", "{", '{"type": "ping"', "{'type': 'ping'}", "NaN", "[1,]"])
def test_non_json_is_bad_json(frame: str) -> None:
    assert_error(parse_client_frame(frame), ErrorCode.BAD_JSON)


@pytest.mark.parametrize("frame", ["[]", '[{"type": "ping"}]', "1", '"ping"', "null", "true"])
def test_non_object_json_is_bad_request(frame: str) -> None:
    assert_error(parse_client_frame(frame), ErrorCode.BAD_REQUEST)


@pytest.mark.parametrize("frame", [b'{"type": "ping"}', b"", bytearray(b'{"type":"ping"}'), None])
def test_binary_frame_is_bad_request(frame: Any) -> None:
    result = assert_error(parse_client_frame(frame), ErrorCode.BAD_REQUEST)
    assert "binary" in result.message


@pytest.mark.parametrize("obj", [{}, {"id": 1, "type": None}, {"id": 1, "type": 3}, {"id": 1, "type": ["ping"]}])
def test_missing_or_non_string_type(obj: dict[str, Any]) -> None:
    assert_error(parse(obj), ErrorCode.BAD_REQUEST, obj.get("id"))


@pytest.mark.parametrize("kind", ["", "Ping", "PING", "event", "started", "error", "start "])
def test_unknown_type(kind: str) -> None:
    result = assert_error(parse({"type": kind, "id": "u"}), ErrorCode.UNKNOWN_TYPE, "u")
    assert repr(kind)[1:-1] in result.message


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "start"},
        {"type": "start", "workflow": None},
        {"type": "start", "workflow": ""},
        {"type": "start", "workflow": 1},
        {"type": "start", "workflow": ["echo"]},
        {"type": "start", "workflow": "echo", "run_id": 5},
        {"type": "start", "workflow": "echo", "run_id": ""},
        {"type": "start", "workflow": "echo", "subscribe": "yes"},
        {"type": "start", "workflow": "echo", "subscribe": 1},
        {"type": "start", "workflow": "echo", "subscribe": None},
        {"type": "start", "workflow": "echo", "batch": 0},
        {"type": "subscribe"},
        {"type": "subscribe", "run_id": None},
        {"type": "subscribe", "run_id": "r", "after": -1},
        {"type": "subscribe", "run_id": "r", "after": "3"},
        {"type": "subscribe", "run_id": "r", "after": 1.0},
        {"type": "subscribe", "run_id": "r", "after": True},
        {"type": "subscribe", "run_id": "r", "batch": "true"},
        {"type": "subscribe", "run_id": "r", "batch": None},
        {"type": "auth"},
        {"type": "auth", "token": 123},
        {"type": "auth", "token": None},
    ],
)
def test_wrong_field_types_are_bad_request(obj: dict[str, Any]) -> None:
    assert_error(parse({**obj, "id": 11}), ErrorCode.BAD_REQUEST, 11)


@pytest.mark.parametrize("field", ["subscribe", "batch"])
@pytest.mark.parametrize("value", [True, False])
def test_bool_fields_accept_bools(field: str, value: bool) -> None:
    msg = parse({"type": "start", "workflow": "w", field: value})
    assert isinstance(msg, Start)
    assert getattr(msg, field) is value


VALID_RUN_IDS = ["a", "A", "0", "_", "-", ".", ":", "x" * 64, "AZaz09_-.:", "2026-11-24T10:00:00.123"]
INVALID_RUN_IDS = ["x" * 65, "a b", "a/b", "é", "a\n", "\na", "run#1", "a,b", "*", "a\x00"]


@pytest.mark.parametrize("run_id", VALID_RUN_IDS)
def test_run_id_pattern_accepts(run_id: str) -> None:
    assert parse({"type": "poll", "run_id": run_id}) == Poll(None, run_id)
    assert parse({"type": "subscribe", "run_id": run_id}) == Subscribe(None, run_id)
    start = parse({"type": "start", "workflow": "w", "run_id": run_id})
    assert isinstance(start, Start)
    assert start.run_id == run_id


@pytest.mark.parametrize("run_id", INVALID_RUN_IDS)
@pytest.mark.parametrize("kind", ["poll", "cancel", "unsubscribe", "subscribe", "start"])
def test_run_id_pattern_rejects(run_id: str, kind: str) -> None:
    result = assert_error(
        parse({"type": kind, "id": "r", "workflow": "w", "run_id": run_id}), ErrorCode.BAD_REQUEST, "r"
    )
    assert "run_id" in result.message


def test_extra_fields_are_ignored() -> None:
    assert parse({"type": "ping", "id": 1, "extra": {"x": 1}}) == Ping(1)


# ---- property test: parse_client_frame never raises --------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choices = ["null", "bool", "int", "float", "str"]
    if depth < 4:
        choices += ["list", "dict", "message"]
    match rng.choice(choices):
        case "null":
            return None
        case "bool":
            return rng.random() < 0.5
        case "int":
            return rng.choice([0, 1, -1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, rng.randint(-1000, 1000)])
        case "float":
            return rng.choice([0.0, -0.5, 1e300, rng.uniform(-1e6, 1e6)])
        case "str":
            return _random_text(rng, 12)
        case "list":
            return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        case "dict":
            keys = [*FIELDS, _random_text(rng, 5)]
            return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
        case _:
            msg: dict[str, Any] = {"type": rng.choice([*TYPES, _random_text(rng, 6)])}
            for key in rng.sample(FIELDS, rng.randint(0, len(FIELDS))):
                msg[key] = _random_json(rng, depth + 1) if rng.random() < 0.5 else _plausible(rng, key)
            return msg


TYPES = ["start", "subscribe", "unsubscribe", "poll", "cancel", "list_workflows", "list_runs", "ping", "auth"]
FIELDS = ["id", "workflow", "input", "run_id", "subscribe", "after", "batch", "status", "limit", "before", "token"]
ALPHABET = string.printable + "é€\u2028\U0001f600\x00\ufeff"


def _plausible(rng: random.Random, key: str) -> Any:
    return {
        "id": rng.choice([1, "a", None]),
        "workflow": "echo",
        "input": {"n": 1},
        "run_id": rng.choice(["r1", "x" * 64, "x" * 65]),
        "subscribe": rng.random() < 0.5,
        "after": rng.randint(-2, 5),
        "batch": True,
        "status": rng.choice(["running", "nope"]),
        "limit": rng.randint(-1, 600),
        "before": "12",
        "token": "t",
    }[key]


def _random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, size)))


MESSAGE_TYPES = Start | Subscribe | Unsubscribe | Poll | Cancel | ListWorkflows | ListRuns | Ping | Auth


def _check_result(result: Any) -> None:
    assert isinstance(result, ParseError | MESSAGE_TYPES), result
    if isinstance(result, ParseError):
        assert result.code in set(ErrorCode)
        assert result.id is None or (isinstance(result.id, str | int) and not isinstance(result.id, bool))
        # every error must be sendable as is
        json.loads(error_frame(result.code, result.message, result.id))
    else:
        assert result.id is None or (isinstance(result.id, str | int) and not isinstance(result.id, bool))


def test_parse_never_raises_on_random_frames() -> None:
    rng = random.Random(20261124)
    outcomes: set[str] = set()
    for _ in range(3000):
        value = _random_json(rng)
        text = json.dumps(value)
        frames: list[Any] = [text, text.encode(), text[: rng.randint(0, len(text))], _random_text(rng, 40)]
        frames.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 20))))
        frames.append("".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(0, 10))))
        for frame in frames:
            result = parse_client_frame(frame)
            _check_result(result)
            outcomes.add(result.code.value if isinstance(result, ParseError) else type(result).__name__)
    # the generator really reaches every branch, not just one kind of error
    assert {"bad_json", "bad_request", "unknown_type", "Start", "Ping", "ListRuns", "Subscribe"} <= outcomes


@pytest.mark.parametrize(
    "frame",
    [
        '"\\ud800"',
        "\ud800",
        '{"type": "ping", "id": "\\udfff"}',
        "1" * 400,
        "[" * 5000 + "]" * 5000,
        '{"type":"ping","id":1e400}',
        '{"type":"ping","id":123456789012345678901234567890}',
        '{"type":"ping","id":-123456789012345678901234567890}',
        '{"type":"list_runs","limit":123456789012345678901234567890}',
        '{"type":"subscribe","run_id":"r","after":99999999999999999999}',
        "\ufeff{}",
        '{"type":"ping"}\x00',
        '{"type":"ping","type":"start"}',
    ],
)
def test_parse_never_raises_on_edge_frames(frame: str) -> None:
    _check_result(parse_client_frame(frame))


# ---- server frames -----------------------------------------------------------------


def test_reply_carries_type_id_and_fields() -> None:
    assert json.loads(reply("pong", 5)) == {"type": "pong", "id": 5}
    assert json.loads(reply("pong", "abc")) == {"type": "pong", "id": "abc"}
    assert json.loads(reply("pong", None)) == {"type": "pong"}
    assert json.loads(reply("pong", 0)) == {"type": "pong", "id": 0}
    body = json.loads(reply("runs", "q", runs=[{"run_id": "r"}], next=None))
    assert body == {"type": "runs", "id": "q", "runs": [{"run_id": "r"}], "next": None}


def test_error_frame() -> None:
    assert json.loads(error_frame(ErrorCode.CONFLICT, "already done", 3)) == {
        "type": "error",
        "code": "conflict",
        "message": "already done",
        "id": 3,
    }
    assert json.loads(error_frame("bad_json", 'quote " and \n newline')) == {
        "type": "error",
        "code": "bad_json",
        "message": 'quote " and \n newline',
    }
    assert json.loads(error_frame(ErrorCode.BAD_REQUEST, "m", "")) == {
        "type": "error",
        "code": "bad_request",
        "message": "m",
        "id": "",
    }


def test_every_error_code_value() -> None:
    assert {c.value for c in ErrorCode} == {
        "bad_json",
        "bad_request",
        "forbidden",
        "unknown_type",
        "unauthorized",
        "unknown_workflow",
        "run_not_found",
        "schedule_not_found",
        "conflict",
        "invalid_input",
        "rate_limited",
        "overloaded",
        "internal",
    }


def test_welcome_frame() -> None:
    assert json.loads(welcome_frame("1.2.3")) == {"type": "welcome", "protocol": 1, "server": "runcast/1.2.3"}


def test_utc_now_format() -> None:
    now = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now), now
    parsed = datetime.fromisoformat(now.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5


def test_event_frame() -> None:
    frame = event_frame("r1", 7, "step_output", "write", "2026-11-24T10:00:00.123Z", {"delta": 'hé "x"\n'})
    assert json.loads(frame) == {
        "type": "event",
        "run_id": "r1",
        "seq": 7,
        "event": "step_output",
        "step": "write",
        "ts": "2026-11-24T10:00:00.123Z",
        "data": {"delta": 'hé "x"\n'},
    }
    run_level = json.loads(event_frame("r1", 1, "run_cancelled", None, "t", {}))
    assert run_level["step"] is None
    assert run_level["data"] == {}
    assert list(run_level) == ["type", "run_id", "seq", "event", "step", "ts", "data"]


def test_events_frame() -> None:
    frames = [event_frame("r:1", seq, "progress", "s", "t", {"current": seq}) for seq in (3, 4, 5)]
    body = json.loads(events_frame("r:1", frames))
    assert body["type"] == "events"
    assert body["run_id"] == "r:1"
    assert [e["seq"] for e in body["events"]] == [3, 4, 5]
    assert [e["data"]["current"] for e in body["events"]] == [3, 4, 5]
    assert body["events"][0] == json.loads(frames[0])
    assert json.loads(events_frame("r", [])) == {"type": "events", "run_id": "r", "events": []}
    # a run id that needs escaping is still valid JSON
    assert json.loads(events_frame('a"b\\c', frames[:1]))["run_id"] == 'a"b\\c'


class Odd:
    def __str__(self) -> str:
        return "<odd>"


def test_dumps_odd_user_data() -> None:
    assert json.loads(dumps({1, 2, 3})) == [1, 2, 3]
    assert json.loads(dumps(frozenset(["a"]))) == ["a"]
    assert json.loads(dumps((1, "x"))) == [1, "x"]
    assert json.loads(dumps(Odd())) == "<odd>"
    assert json.loads(dumps({"s": {Odd()}, "o": [Odd()]})) == {"s": ["<odd>"], "o": ["<odd>"]}
    assert json.loads(dumps({1: "a", 2.5: "b", None: "c"})) == {"1": "a", "2.5": "b", "null": "c"}
    assert json.loads(dumps({False: "f"})) == {"false": "f"}
    assert json.loads(dumps(b"raw")) == "b'raw'"
    assert json.loads(dumps(complex(1, 2))) == "(1+2j)"
    assert json.loads(dumps(float("nan"))) is None
    assert json.loads(dumps({"k": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)})) == {"k": "2026-01-02T03:04:05+00:00"}
    assert to_json_value({"t": (1, 2), 3: {4}}) == {"t": [1, 2], "3": [4]}


def test_dumps_object_and_tuple_dict_keys() -> None:
    assert json.loads(dumps({(1, 2): "t"})) == {"(1, 2)": "t"}
    assert json.loads(dumps({Odd(): 1})) == {"<odd>": 1}


def test_dumps_huge_int() -> None:
    value = json.loads(dumps({"n": 2**70}))["n"]
    assert value in (2**70, str(2**70), float(2**70))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frame_is_the_bytes_websockets_would_send(size: int) -> None:
    # server/web/framing.py is kept by hand because it is 3.5x faster (0.26 vs 0.91 us an event);
    # the maintained serializer is the reference it must match.
    from websockets.frames import Frame, Opcode

    from server.web.framing import text_frame

    text = "é" * (size // 2) + "x" * (size % 2)
    assert text_frame(text) == Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
