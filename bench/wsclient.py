"""A lean WebSocket client for load tests: a minimal RFC 6455 client on a plain asyncio.Protocol.

No task, queue or future per message, no keepalive task, and a frame parser of a few lines
instead of a general one, so that one client process can hold thousands of sockets and read
tens of thousands of frames per second while taking as little of this 2-core machine from
the server as it can. The receive time of a frame is taken when its bytes arrive
(`data_received`), before any parsing. It answers pings and the closing handshake; it never
offers extensions (runcast's server runs without permessage-deflate anyway).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from typing import Any, cast

OnText = Callable[["WsConn", bytes, float], None]

TEXT, CONT, CLOSE, PING = 0x1, 0x0, 0x8, 0x9


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.3: every client frame is masked)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if not n:
        return header + mask
    key = (mask * (n // 4 + 1))[:n]
    return header + mask + (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class WsConn(asyncio.Protocol):
    def __init__(self, host: str, port: int, path: str, on_text: OnText | None = None) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.fragments: list[bytes] | None = None
        self.handshake_done = False
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.state: Any = None  # whatever the user of this connection keeps on it

    @classmethod
    async def open(cls, port: int, path: str, on_text: OnText | None = None, timeout: float = 30) -> WsConn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls("127.0.0.1", port, path, on_text), "127.0.0.1", port)
        try:
            await asyncio.wait_for(asyncio.shield(conn.opened), timeout)
        except BaseException:
            conn.abort()
            raise
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buffer
        buf += data
        if not self.handshake_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(f"handshake refused: {status.decode(errors='replace')}"))
                self.abort()
                return
            self.handshake_done = True
            if not self.opened.done():
                self.opened.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            self._frame(b0 & 0x80, b0 & 0x0F, payload, now)
        if pos:
            del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode in (TEXT, CONT):
            if not fin:  # a fragment: keep it until the last one
                self.fragments = [*(self.fragments or []), payload]
                return
            if self.fragments is not None:
                payload, self.fragments = b"".join([*self.fragments, payload]), None
            if self.on_text is not None:
                self.on_text(self, payload, now)
        elif opcode == PING:
            self._write(client_frame(0xA, payload))
        elif opcode == CLOSE:
            self._write(client_frame(CLOSE, payload[:2]))
            if self.transport is not None:
                self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, text: str | bytes) -> None:
        self._write(client_frame(TEXT, text.encode() if isinstance(text, str) else text))

    def close(self) -> None:
        """Send a close frame (1000) and drop the socket; the benchmark does not wait for the echo."""
        self._write(client_frame(CLOSE, (1000).to_bytes(2, "big")))
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
