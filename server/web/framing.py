"""WebSocket framing of server-to-client text frames (RFC 6455 section 5.2).

A server's frames are not masked, so one event's frame is the same bytes for every
subscriber: it is framed once (`framed`, which keeps the bytes on the frame's `wire`) and
written as is to every socket that is ready for it. Framing is transport: the store and
live/ hand over frames as text, and only web/ turns them into bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..live import Framed

FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)


def text_frame(text: str) -> bytes:
    """One unfragmented, unmasked text frame carrying `text`."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        return bytes((FIN_TEXT, n)) + payload
    if n < 65536:
        return bytes((FIN_TEXT, 126)) + n.to_bytes(2, "big") + payload
    return bytes((FIN_TEXT, 127)) + n.to_bytes(8, "big") + payload


def framed(frames: Sequence[Framed]) -> bytes:
    """The frames as WebSocket bytes, each framed on its first use and kept on its `wire`
    for every other socket it goes to."""
    parts = []
    for frame in frames:
        if frame.wire is None:
            frame.wire = text_frame(frame.frame)
        parts.append(frame.wire)
    return b"".join(parts)
