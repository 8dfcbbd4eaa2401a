"""WebSocket framing of server-to-client text frames (RFC 6455 section 5.2).

A server's frames are not masked, so one event's frame is the same bytes for every
subscriber: it is framed once and written as is to every socket that is ready for it.
"""

from __future__ import annotations

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
