"""The docs match the code: every message type, event, error code, status and close code
the server can send is named in docs/protocol.md, and every HTTP route in it."""

from __future__ import annotations

import re
from pathlib import Path

from server.protocol import ErrorCode
from server.vocabulary import CloseCode, Event, RunStatus, StepStatus

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def _sent_message_types() -> set[str]:
    """Every `type` the server puts in a frame: reply("...") calls, and the frames built by hand."""
    found: set[str] = set()
    for path in (ROOT / "server").rglob("*.py"):
        found |= set(re.findall(r'reply\(\s*"(\w+)"', path.read_text()))
    frames = (ROOT / "server" / "wire.py").read_text()  # where frames are built by hand
    found |= set(re.findall(r'"type":\s*"(\w+)"', frames))
    return found


def test_every_message_type_the_server_sends_is_documented() -> None:
    types = _sent_message_types()
    assert {"welcome", "started", "event", "events", "error", "run_changed", "responded"} <= types, types
    missing = sorted(t for t in types if f"`{t}`" not in PROTOCOL)
    assert missing == [], f"docs/protocol.md does not name these message types: {missing}"


def test_every_event_error_code_status_and_close_code_is_documented() -> None:
    names = [e.value for e in Event] + [c.value for c in ErrorCode]
    missing = sorted(n for n in names if f"`{n}`" not in PROTOCOL)
    assert missing == [], f"docs/protocol.md does not name: {missing}"
    statuses = {s.value for s in RunStatus} | {s.value for s in StepStatus}
    assert sorted(s for s in statuses if s not in PROTOCOL) == []
    assert sorted(str(int(c)) for c in CloseCode if str(int(c)) not in PROTOCOL) == []


def test_every_http_route_is_documented() -> None:
    from server.web.app import create_app

    app = create_app(":memory:")
    paths = {getattr(r, "path", "") for r in app.routes} - {"", "/ws", "/{path:path}"}  # the last: any other socket
    missing = sorted(p for p in paths if f"{p}" not in PROTOCOL)
    assert missing == [], f"docs/protocol.md does not name these routes: {missing}"
