"""uvicorn, adjusted to the contract: close codes on shutdown and for clients that stopped reading."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """A close frame goes out even while the client reads nothing.

    uvicorn holds every send while the socket's buffer is full; a close then waits
    forever, and the client that finally reads would find no close code. A close is
    let through (queued behind what is buffered), so that it reads 1008."""

    async def send(self, message: Any) -> None:
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
