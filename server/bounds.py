"""Sizes of what crosses the wire, both ways: every frame the server sends fits in what a
client with the `websockets` library's defaults accepts (1 MiB), and what a client sends
may not nest deeper than a documented depth. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from .jsontext import json_bytes
from .protocol import InvalidInput

MAX_REPLY_BYTES = 1024 * 1024 - 4096  # a reply frame's budget: under 1 MiB with room for its envelope
DEFAULT_MAX_EVENT_BYTES = 256 * 1024  # an event's data as JSON (--max-event-bytes)
MAX_JSON_DEPTH = 128  # nesting of arrays and objects in what clients send
MAX_ERROR_CHARS = 8192  # an error text kept in events and snapshots
_TRUNCATED_FIELDS = ("input", "output", "error")


class EventTooLarge(Exception):
    """An event's data is larger than --max-event-bytes: the step that made it fails."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} is {size:,} bytes of JSON, over the limit of {limit:,} (--max-event-bytes); "
            "stream it in smaller pieces or keep it elsewhere and return a reference"
        )


def json_size(value: Any) -> int:
    return len(json_bytes(value))


def _surely_fits(value: Any, limit: int) -> bool:
    # A short string is judged by its length alone: JSON escapes at most 6 bytes per character.
    return isinstance(value, str) and len(value) * 6 + 2 <= limit


def check_event_size(what: str, value: Any, limit: int) -> None:
    """Raise EventTooLarge if `value` is over `limit` bytes as JSON."""
    if not _surely_fits(value, limit):
        size = json_size(value)
        if size > limit:
            raise EventTooLarge(what, size, limit)


def json_value_within(what: str, value: Any, limit: int) -> Any:
    """`value` as it will look once it has crossed the wire (see protocol.to_json_value),
    encoded once; raises EventTooLarge if it is over `limit` bytes as JSON."""
    if _surely_fits(value, limit):
        return value
    raw = json_bytes(value)
    if len(raw) > limit:
        raise EventTooLarge(what, len(raw), limit)
    return orjson.loads(raw)


def clip_error(text: str) -> str:
    """An error text cut to MAX_ERROR_CHARS, saying how much was left out."""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"{text[:MAX_ERROR_CHARS]}... ({len(text) - MAX_ERROR_CHARS:,} more characters)"


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays and objects nest deeper than `limit` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children: Iterable[Any] = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def check_depth(value: Any, what: str = "input") -> None:
    if json_depth_exceeds(value):
        raise InvalidInput(f"{what} nests deeper than {MAX_JSON_DEPTH} levels of arrays and objects")


def truncated_marker(size: int, run_id: str) -> dict[str, Any]:
    """What stands for a value left out of a snapshot: its size, and where it is whole."""
    return {"truncated": True, "bytes": size, "full": f"/api/runs/{run_id}/events"}


def bounded_run(run: dict[str, Any], budget: int = MAX_REPLY_BYTES) -> dict[str, Any]:
    """The snapshot as is if it fits `budget` bytes of JSON; otherwise with its largest
    values (input, output, error, step outputs) replaced, largest first, by
    `{"truncated": true, "bytes": N, "full": "/api/runs/ID/events"}` until it fits, and
    `"truncated": [names of the replaced fields]` added. The full values are in the
    run's events (run_started, step_completed, run_completed, input_requested)."""
    size = json_size(run)
    if size <= budget:
        return run
    out = dict(run)
    steps = [dict(s) for s in run.get("steps") or []]
    if "steps" in run:
        out["steps"] = steps
    fields: list[tuple[int, str, dict[str, Any], str]] = [
        (json_size(out.get(k)), k, out, k) for k in _TRUNCATED_FIELDS if out.get(k) is not None
    ]
    fields += [
        (json_size(s.get(k)), f"steps[{i}].{k}", s, k)
        for i, s in enumerate(steps)
        for k in ("output", "error")
        if s.get(k) is not None
    ]
    asks = [dict(w) for w in run.get("waiting_for") or []]
    if asks:
        out["waiting_for"] = asks
    fields += [  # each request whole is in its input_requested event
        (json_size(w.get(k)), f"waiting_for[{i}].{k}", w, k)
        for i, w in enumerate(asks)
        for k in ("prompt", "schema", "default")
        if w.get(k) is not None
    ]
    truncated: list[str] = []
    for field_size, name, holder, key in sorted(fields, key=lambda f: f[0], reverse=True):
        if size <= budget:
            break
        holder[key] = truncated_marker(field_size, run["run_id"])
        size -= field_size - json_size(holder[key])
        truncated.append(name)
    out["truncated"] = truncated
    return out


def page_of_runs(
    rows: list[tuple[str, dict[str, Any]]], more: bool, budget: int = MAX_REPLY_BYTES
) -> tuple[list[dict[str, Any]], str | None]:
    """A `list_runs` page within `budget` bytes: (cursor, run) rows in order are taken
    while they fit (at least one, bounded itself); a page that ends early gives `next`."""
    runs: list[dict[str, Any]] = []
    used = 0
    for i, (_, run) in enumerate(rows):
        bounded = bounded_run(run, budget // 2) if not runs else run
        size = json_size(bounded) + 1
        if runs and used + size > budget:
            return runs, rows[i - 1][0]
        runs.append(bounded)
        used += size
    return runs, (rows[-1][0] if more and rows else None)
