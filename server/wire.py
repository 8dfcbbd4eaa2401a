"""What the server sends on the wire: replies, errors, the greeting, event frames, and the
times they carry (ISO 8601 UTC with milliseconds). Encoded once, sent as they are."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .jsontext import dumps

PROTOCOL_VERSION = 1
MessageId = str | int | None  # a client message's `id`, echoed by its reply


def reply(kind: str, mid: MessageId, **fields: Any) -> str:
    """A reply frame; it carries the id of the message it answers."""
    body: dict[str, Any] = {"type": kind}
    if mid is not None:
        body["id"] = mid
    body.update(fields)
    return dumps(body)


def error_frame(code: str, message: str, mid: MessageId = None, *, retry_after: float | None = None) -> str:
    body: dict[str, Any] = {"type": "error", "code": str(code), "message": message}
    if mid is not None:
        body["id"] = mid
    if retry_after is not None:
        body["retry_after"] = round(retry_after, 3)
    return dumps(body)


def welcome_frame(version: str) -> str:
    return dumps({"type": "welcome", "protocol": PROTOCOL_VERSION, "server": f"runcast/{version}"})


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds, as every time on the wire."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_iso(epoch: float) -> str:
    """Epoch seconds as a wire time (ISO 8601 UTC, milliseconds)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_frame(run_id: str, seq: int, event: str, step: str | None, ts: str, data: Any) -> str:
    return dumps(
        {
            "type": "event",
            "run_id": run_id,
            "seq": seq,
            "event": event,
            "step": step,
            "ts": ts,
            "data": data,
        }
    )


def run_changed_frame(run: dict[str, Any]) -> str:
    """A change of a run for the runs feed: its snapshot without steps, plus current_step."""
    return dumps({"type": "run_changed", "run": run})


def events_frame(run_id: str, frames: list[str]) -> str:
    """Several consecutive events of one run in one frame (`"batch": true` subscriptions)."""
    return '{"type":"events","run_id":' + dumps(run_id) + ',"events":[' + ",".join(frames) + "]}"
