"""uvicorn, adjusted to the contract: close codes on shutdown and for clients that stopped reading."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State

# ASGI scope extension: a "websocket.send" may carry "texts", and {"write_now": fn} writes
# already framed bytes at once when the socket can take them (see WebSocketProtocol).
SEND_MANY = "runcast.send_many"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with three additions.

    - Many frames in one write: a `websocket.send` message with `texts` (a list) is framed
      and handed to the socket at once, instead of one pass through the ASGI layers and one
      write per frame (advertised to the app as the scope extension SEND_MANY).
    - `write_now(data)`, in that extension: already framed bytes (`server.wire`) go to the
      socket synchronously, with no ASGI message and no task, if the socket is open and its
      buffer is below the high-water mark; otherwise it returns False and writes nothing, and
      the app queues them the usual way. This is how live events reach caught-up subscribers.
    - A close frame goes out even while the client reads nothing: uvicorn holds every send
      while the socket's buffer is full, so a close would wait forever and the client that
      finally reads would find no close code. It is queued behind what is buffered instead.
    """

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self.scope["extensions"][SEND_MANY] = {"write_now": self.write_now}  # the app has not started yet

    def write_now(self, data: bytes) -> bool:
        """Write framed bytes if the socket takes them without waiting; False if it would not."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(data)
        return True

    async def send(self, message: Any) -> None:
        texts = message.get("texts") if message["type"] == "websocket.send" else None
        if texts is not None and self.handshake_complete and not self.close_sent:
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            try:
                for text in texts:
                    self.conn.send_text(text.encode())
            except InvalidState:
                raise ClientDisconnected() from None
            self.transport.write(b"".join(self.conn.data_to_send()))
            return
        if message["type"] == "websocket.close" and self.handshake_complete and not self.writable.is_set():
            self.writable.set()
        await super().send(message)


class Server(uvicorn.Server):
    """uvicorn, but sockets are closed with 1001 (going away) before it shuts down, and a
    graceful stop exits 0."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.loaded_app
        close = getattr(getattr(app, "state", None), "close_connections", None)
        if close is None:  # loaded_app may be wrapped by uvicorn's middleware
            close = getattr(getattr(getattr(app, "app", None), "state", None), "close_connections", None)
        if close is not None:
            await close(1001)
        await super().shutdown(sockets)
        # uvicorn re-raises the stop signal after a graceful stop; the contract wants exit 0.
        self._captured_signals.clear()
