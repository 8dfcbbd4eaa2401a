"""Wire messages of PROTOCOL.md: parse and validate client frames, build server frames.

Pure functions, no I/O: bytes and strings in, dataclasses and strings out.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from .vocabulary import RUN_STATUSES
from .wire import MessageId, utc_iso

VERSION = "0.1.0"  # the server's, in `welcome` and the package
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_\-.:]{1,64}")
MAX_LIST_LIMIT = 500
MAX_SEQ = 2**63 - 1  # the largest seq a database column holds (and so the largest `after`)
DEFAULT_LIST_LIMIT = 50
MAX_DELAY = 10 * 366 * 24 * 3600  # seconds: a start may be put off by up to about ten years
MAX_KEY = 200  # characters of a concurrency key


class ErrorCode(StrEnum):
    """The error codes of the contract; one per kind of failure a client can act on."""

    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_WORKFLOW = "unknown_workflow"
    RUN_NOT_FOUND = "run_not_found"
    SCHEDULE_NOT_FOUND = "schedule_not_found"  # (8.3)
    CONFLICT = "conflict"
    INVALID_INPUT = "invalid_input"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    INTERNAL = "internal"


class RuncastError(Exception):
    """Root of runcast's exceptions: an error with a contract code, sent to clients as is."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after  # seconds, for `rate_limited`: when the same message would be accepted


class BadRequest(RuncastError):
    code = ErrorCode.BAD_REQUEST


class UnknownWorkflow(RuncastError):
    code = ErrorCode.UNKNOWN_WORKFLOW


class RunNotFound(RuncastError):
    code = ErrorCode.RUN_NOT_FOUND


class ScheduleNotFound(RuncastError):
    code = ErrorCode.SCHEDULE_NOT_FOUND


class Conflict(RuncastError):
    code = ErrorCode.CONFLICT


class InvalidInput(RuncastError):
    code = ErrorCode.INVALID_INPUT


class Unauthorized(RuncastError):
    """No token, or a wrong one."""

    code = ErrorCode.UNAUTHORIZED


class Forbidden(RuncastError):
    """The caller's scope (or its token's `runs` / `workflows` claim) does not allow this."""

    code = ErrorCode.FORBIDDEN


# ---- client messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartOptions:
    """When and in which order a run may start (8.2): `delay` seconds from when the server
    takes the start, or at `start_at` (epoch seconds); higher `priority` first."""

    delay: float | None = None
    start_at: float | None = None
    priority: int = 0
    concurrency_key: str | None = None  # over the workflow's own

    def scheduled_for(self, now: float) -> str | None:
        """The wire time the run may start at, or None: at once."""
        if self.start_at is not None:
            return utc_iso(self.start_at)
        return utc_iso(now + self.delay) if self.delay is not None else None


@dataclass(frozen=True, slots=True)
class Start:
    id: MessageId
    workflow: str
    input: Any = None
    run_id: str | None = None
    subscribe: bool = True
    batch: bool = False
    options: StartOptions = StartOptions()


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: MessageId
    run_id: str
    after: int = 0
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: MessageId
    run_id: str


@dataclass(frozen=True, slots=True)
class Poll:
    id: MessageId
    run_id: str


@dataclass(frozen=True, slots=True)
class Cancel:
    id: MessageId
    run_id: str


@dataclass(frozen=True, slots=True)
class Respond:
    id: MessageId
    run_id: str
    request_id: str
    value: Any


@dataclass(frozen=True, slots=True)
class CreateSchedule:
    """(8.3) `fields`: name, workflow, input, cron, every, timezone, catchup (types checked)."""

    id: MessageId
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteSchedule:
    id: MessageId
    name: str


@dataclass(frozen=True, slots=True)
class ListSchedules:
    id: MessageId


@dataclass(frozen=True, slots=True)
class ListWorkflows:
    id: MessageId


@dataclass(frozen=True, slots=True)
class ListRuns:
    id: MessageId
    workflow: str | None = None
    status: str | None = None
    limit: int = DEFAULT_LIST_LIMIT
    before: str | None = None
    owner: str | None = None  # (1.2) for admins: the runs one sub started


@dataclass(frozen=True, slots=True)
class SubscribeRuns:
    """Watch runs: a `run_changed` frame for each change of a run that matches."""

    id: MessageId
    workflow: str | None = None
    status: str | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class UnsubscribeRuns:
    id: MessageId


@dataclass(frozen=True, slots=True)
class Ping:
    id: MessageId


@dataclass(frozen=True, slots=True)
class Auth:
    id: MessageId
    token: str


@dataclass(frozen=True, slots=True)
class MintToken:
    """(1.2) A token for someone else that can do no more than the sender's: `fields` are
    the ones given of `scope`, `runs`, `workflows`, `ttl` and `sub` (checked by identities.py)."""

    id: MessageId
    fields: dict[str, Any]


ClientMessage = (
    Start
    | Subscribe
    | Unsubscribe
    | Poll
    | Cancel
    | Respond
    | ListWorkflows
    | CreateSchedule
    | DeleteSchedule
    | ListSchedules
    | ListRuns
    | SubscribeRuns
    | UnsubscribeRuns
    | Ping
    | Auth
    | MintToken
)


@dataclass(frozen=True, slots=True)
class ParseError:
    """A frame that could not be turned into a message; `id` is echoed when it was readable."""

    code: ErrorCode
    message: str
    id: MessageId = None


def _string(obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        need = "a non-empty string"
        raise BadRequest(f"field '{key}' must be {need}" if key in obj else f"field '{key}' is required")
    return value


def _run_id(obj: dict[str, Any], *, required: bool = True) -> str | None:
    value = _string(obj, "run_id", required=required)
    if value is not None and not RUN_ID_PATTERN.fullmatch(value):
        raise BadRequest("field 'run_id' must be 1 to 64 characters of A-Z a-z 0-9 _ - . :")
    return value


def _bool(obj: dict[str, Any], key: str, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"field '{key}' must be true or false")
    return value


def _int(obj: dict[str, Any], key: str, default: int, *, low: int, high: int | None = None) -> int:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field '{key}' must be an integer")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"field '{key}' must be {span}")
    return value


def _message_id(obj: dict[str, Any]) -> MessageId:
    value = obj.get("id")
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise BadRequest("field 'id' must be a string or an integer")


def parse_run_filters(obj: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """The `workflow`, `status` and `owner` filters of `list_runs` and `subscribe_runs`."""
    workflow = _string(obj, "workflow", required=False)
    status = _string(obj, "status", required=False)
    if status is not None and status not in RUN_STATUSES:
        raise BadRequest(f"field 'status' must be one of {', '.join(RUN_STATUSES)}")
    return workflow, status, _string(obj, "owner", required=False)


def parse_list_runs_filters(obj: dict[str, Any]) -> tuple[str | None, str | None, int, str | None, str | None]:
    """The filters of `list_runs` (also used by `GET /api/runs`): workflow, status, limit,
    before, owner."""
    workflow, status, owner = parse_run_filters(obj)
    limit = _int(obj, "limit", DEFAULT_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT)
    before = _string(obj, "before", required=False)
    return workflow, status, limit, before, owner


MINT_FIELDS = ("scope", "runs", "workflows", "ttl", "sub")


def parse_mint_token(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields of `mint_token` (also the body of `POST /api/tokens`) that were given."""
    return {key: obj[key] for key in MINT_FIELDS if key in obj and obj[key] is not None}


def parse_answer(obj: dict[str, Any]) -> tuple[str, Any]:
    """(request_id, value) of a `respond` (also the body of `POST /api/runs/{id}/respond`)."""
    request_id = _string(obj, "request_id")
    assert request_id is not None
    if "value" not in obj:
        raise BadRequest("field 'value' is required (any JSON, null too)")
    return request_id, obj["value"]


def parse_schedule(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields of `create_schedule` (and of `POST /api/schedules`), their types checked;
    what they mean is checked by `Schedule`."""
    fields: dict[str, Any] = {"name": _string(obj, "name"), "workflow": _string(obj, "workflow")}
    fields["input"] = obj.get("input")
    fields["cron"] = _string(obj, "cron", required=False)
    every = obj.get("every")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int | float)):
        raise BadRequest("field 'every' must be a number of seconds")
    fields["every"] = every
    fields["timezone"] = _string(obj, "timezone", required=False) or "UTC"
    fields["catchup"] = _string(obj, "catchup", required=False) or "latest"
    return fields


def parse_start(obj: dict[str, Any]) -> tuple[str, Any, str | None]:
    """(workflow, input, run_id) of a `start` (also the body of `POST /api/runs`)."""
    workflow = _string(obj, "workflow")
    assert workflow is not None
    return workflow, obj.get("input"), _run_id(obj, required=False)


def parse_start_options(obj: dict[str, Any]) -> StartOptions:
    """`delay` or `start_at`, `priority` and `concurrency_key` of a `start` (and of `POST
    /api/runs`)."""
    delay, start_at = obj.get("delay"), obj.get("start_at")
    if delay is not None and start_at is not None:
        raise BadRequest("give 'delay' or 'start_at', not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY:
            raise BadRequest(f"field 'delay' must be a number of seconds from 0 to {MAX_DELAY}")
        delay = float(delay)
    if start_at is not None:
        start_at = _epoch(start_at)
    key = _string(obj, "concurrency_key", required=False)
    if key is not None and len(key) > MAX_KEY:
        raise BadRequest(f"field 'concurrency_key' must be at most {MAX_KEY} characters")
    return StartOptions(delay, start_at, _int(obj, "priority", 0, low=-100, high=100), key)


def _epoch(value: Any) -> float:
    """An ISO 8601 time (UTC when it names no offset) as epoch seconds."""
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or not math.isfinite(epoch := when.replace(tzinfo=when.tzinfo or UTC).timestamp()):
        raise BadRequest("field 'start_at' must be an ISO 8601 time, e.g. 2026-12-24T18:00:00Z")
    return epoch


def _build(kind: str, obj: dict[str, Any], mid: MessageId) -> ClientMessage:
    match kind:
        case "start":
            flags = _bool(obj, "subscribe", True), _bool(obj, "batch", False)
            return Start(mid, *parse_start(obj), *flags, parse_start_options(obj))
        case "subscribe":
            run_id = _run_id(obj)
            assert run_id is not None
            return Subscribe(mid, run_id, _int(obj, "after", 0, low=0, high=MAX_SEQ), _bool(obj, "batch", False))
        case "unsubscribe" | "poll" | "cancel":
            run_id = _run_id(obj)
            assert run_id is not None
            if kind == "poll":
                return Poll(mid, run_id)
            return Cancel(mid, run_id) if kind == "cancel" else Unsubscribe(mid, run_id)
        case "respond":
            run_id = _run_id(obj)
            assert run_id is not None
            return Respond(mid, run_id, *parse_answer(obj))
        case "list_workflows":
            return ListWorkflows(mid)
        case "create_schedule":
            return CreateSchedule(mid, parse_schedule(obj))
        case "delete_schedule":
            name = _string(obj, "name")
            assert name is not None
            return DeleteSchedule(mid, name)
        case "list_schedules":
            return ListSchedules(mid)
        case "list_runs":
            return ListRuns(mid, *parse_list_runs_filters(obj))
        case "subscribe_runs":
            return SubscribeRuns(mid, *parse_run_filters(obj))
        case "unsubscribe_runs":
            return UnsubscribeRuns(mid)
        case "ping":
            return Ping(mid)
        case "auth":
            token = obj.get("token")
            if not isinstance(token, str):
                raise BadRequest("field 'token' must be a string")
            return Auth(mid, token)
        case "mint_token":
            return MintToken(mid, parse_mint_token(obj))
    raise RuncastError(f"unknown message type '{kind}'", ErrorCode.UNKNOWN_TYPE)


_LONG_NUMBER = re.compile(rb"\d{19}")  # an integer this long may be past what orjson keeps exact


def _exact_int(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise InvalidInput(
            f"the integer {text[:24]}{'...' if len(text) > 24 else ''} is outside 64 bits, which JSON "
            "numbers here may not be; send it as a string"
        )
    return value


def check_integers(data: str | bytes) -> None:
    """InvalidInput if JSON a client sent has an integer outside 64 bits, which orjson
    would have turned into an inexact float: such a value is refused, never changed."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER.search(raw):  # rare: parse again, looking at each integer as written
        json.loads(raw, parse_int=_exact_int)


def loads(data: str | bytes) -> Any:
    """JSON a client sent, parsed exactly (see check_integers); orjson.JSONDecodeError for
    what is not JSON."""
    value = orjson.loads(data)
    check_integers(data)
    return value


def parse_client_frame(frame: str | bytes | None) -> ClientMessage | ParseError:
    """Turn one received frame into a message, or into the error to send back."""
    if not isinstance(frame, str):
        return ParseError(ErrorCode.BAD_REQUEST, "binary frames are not accepted; send JSON text frames")
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # valid JSON, nested past what anyone needs
            return ParseError(ErrorCode.INVALID_INPUT, "the message nests arrays and objects too deeply")
        return ParseError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return ParseError(ErrorCode.BAD_REQUEST, "a message must be a JSON object with a string 'type'")
    try:
        mid = _message_id(obj)
    except BadRequest as exc:
        return ParseError(exc.code, exc.message)
    kind = obj.get("type")
    if not isinstance(kind, str):
        return ParseError(ErrorCode.BAD_REQUEST, "field 'type' is required and must be a string", mid)
    try:
        check_integers(frame)
        return _build(kind, obj, mid)
    except RuncastError as exc:
        return ParseError(exc.code, exc.message, mid)
