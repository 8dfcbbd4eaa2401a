"""uvicorn, adjusted to the contract: close codes on shutdown and for clients that stopped reading."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any, cast

import uvicorn
from starlette.types import Scope
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.protocol import State

from ..redaction import redact
from ..vocabulary import CloseCode

# ASGI scope extension: a "websocket.send" may carry "texts", and {"write_now": fn} writes
# already framed bytes at once when the socket can take them (see WebSocketProtocol).
SEND_MANY = "runcast.send_many"

log = logging.getLogger("runcast.serving")

# What WebSocketProtocol and Server use of uvicorn's own classes (tested with 0.52.1 to 0.54).
PROTOCOL_HOOKS = (
    "handshake_complete", "close_sent", "writable", "conn", "transport", "disconnected", "handle_connect", "send",
    "frames", "read_paused", "handle_parser_exception", "keepalive_timeout", "receive", "loop",
)  # fmt: skip
SERVER_HOOKS = ("shutdown", "_captured_signals")
PLAIN_PROTOCOL = "websockets-sansio"  # uvicorn's stock protocol: plain ASGI, no SEND_MANY

# uvicorn's access lines and websockets' debug lines carry paths with their query strings
# (`/ws?token=...`) and, at debug, every request header.
UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error")
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

DRAIN_SECONDS = 1.0  # a stop waits this long for closing sockets to take what is buffered
# A client's bytes are parsed this many at a time, other clients' turns in between: a flood
# of tiny frames (one-byte fragments, pings) costs its sender, not everyone.
PARSE_SLICE = 16 * 1024
MAX_FRAGMENTS = 1024  # frames of one message; more closes the socket with 1009
ABORT_SECONDS = 5.0  # a socket whose close has not gone out by then (its client reads nothing) is cut

BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with four additions, and bounds on what one client costs.

    - Many frames in one write: a `websocket.send` message with `texts` (a list) is framed
      and handed to the socket at once, instead of one pass through the ASGI layers and one
      write per frame (advertised to the app as the scope extension SEND_MANY).
    - `write_now(data)`, in that extension: already framed bytes (`web/framing.py`) go to the
      socket synchronously, with no ASGI message and no task, if the socket is open and its
      buffer is below the high-water mark; otherwise it returns False and writes nothing, and
      the app queues them the usual way. This is how live events reach caught-up subscribers.
    - A handshake refused with an HTTP response (the "websocket.http.response" extension, e.g.
      web/origins.py's 403) ends cleanly: uvicorn (to 0.54) would log "ASGI callable returned
      without completing handshake" for each.
    - A close frame goes out even while the client reads nothing: uvicorn holds every send
      while the socket's buffer is full, so a close would wait forever and the client that
      finally reads would find no close code. It is queued behind what is buffered instead.

    What one client can cost everyone else is bounded:
    - its bytes are parsed PARSE_SLICE at a time, and a message in more than MAX_FRAGMENTS
      frames closes the socket (1009);
    - while its socket's send buffer is full (it reads nothing), nothing more is read from
      it, so that the pongs websockets answers its pings with cannot pile up unbounded;
    - a socket whose close cannot go out within ABORT_SECONDS is cut, freeing its buffer.
    """

    _unparsed = b""  # bytes received and not parsed yet (they go before any later ones)
    _write_full = False  # the send buffer is over its high-water mark: reading is held

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:  # a rejected handshake was answered and has no scope
            self.scope["extensions"][SEND_MANY] = {"write_now": self.write_now}  # the app has not started yet

    def data_received(self, data: bytes) -> None:
        if self._unparsed:
            self._unparsed += data
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        piece, rest = data[:PARSE_SLICE], data[PARSE_SLICE:]
        super().data_received(piece)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self._answer_unparsed()
            return
        if len(self.frames) > MAX_FRAGMENTS and not self.close_sent:
            self._refuse_fragments()
            return
        self._unparsed = rest
        if rest and not self.transport.is_closing():
            self.transport.pause_reading()
            self.loop.call_soon(self._parse_rest)

    def _parse_rest(self) -> None:
        data, self._unparsed = self._unparsed, b""
        if self.transport.is_closing():
            return
        self._parse(data)
        if not self._unparsed:
            self._read_if_due()

    def _refuse_fragments(self) -> None:
        self.frames = []
        if self.conn.state is not State.OPEN:
            self.transport.abort()
            return
        self.conn.fail(CloseCode.MESSAGE_TOO_BIG, f"a message in more than {MAX_FRAGMENTS} frames")
        self.handle_parser_exception()

    def _read_if_due(self) -> None:
        """Read again, unless uvicorn holds reading (a message waits for the app), bytes
        wait to be parsed, or the client reads nothing."""
        if not (self.read_paused or self._unparsed or self._write_full or self.transport.is_closing()):
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._write_full = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_full = False
        self._read_if_due()

    async def receive(self) -> Any:
        message = await super().receive()  # may have resumed reading
        if (self._unparsed or self._write_full) and not self.transport.is_closing():
            self.transport.pause_reading()
        return message

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._cut_later()

    def _cut_later(self) -> None:
        self.loop.call_later(ABORT_SECONDS, self._cut)

    def _cut(self) -> None:
        if not self.disconnected:
            self.transport.abort()

    def _answer_unparsed(self) -> None:
        """websockets refused the request before it became a handshake (e.g. a header line
        over 8 KiB: 431); uvicorn would never send that answer and leave the client waiting."""
        answer = b"".join(self.conn.data_to_send()) or BAD_REQUEST
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(answer)
        self.transport.close()

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
        if message["type"] == "websocket.close" and self.handshake_complete:
            self._cut_later()
            if not self.writable.is_set():
                self.writable.set()
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True  # a refused handshake's answer is out; else uvicorn logs an error


class Server(uvicorn.Server):
    """uvicorn, but a stop is prompt: sockets are closed with 1001 and runs stopped before it
    shuts down, sockets that have not taken their close after DRAIN_SECONDS are dropped, and
    a graceful stop exits 0."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        going_away = self._app_state("going_away")
        if going_away is not None:
            await going_away()
        drop = asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._drop_connections)
        try:
            await super().shutdown(sockets)
        finally:
            drop.cancel()
        # uvicorn re-raises the stop signal after a graceful stop; the contract wants exit 0.
        self._captured_signals.clear()

    def _drop_connections(self) -> None:
        """Sockets still open DRAIN_SECONDS into a stop take nothing (their close is stuck
        behind unread data): let them go, rather than hold the stop up to uvicorn's timeout."""
        left = list(self.server_state.connections)
        for connection in left:
            connection.transport.abort()
        if left:
            log.info("stop: dropped %d connection(s) that took nothing for %g s", len(left), DRAIN_SECONDS)

    def _app_state(self, name: str) -> Any:
        app = self.config.loaded_app
        for candidate in (app, getattr(app, "app", None)):  # loaded_app may be wrapped by uvicorn's middleware
            value = getattr(getattr(candidate, "state", None), name, None)
            if value is not None:
                return value
        return None


class RedactSecrets(logging.Filter):
    """Keeps query strings' values and secret headers' values out of uvicorn's log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            if str(record.msg).endswith("%s: %s") and str(args[0]).lower() in SECRET_HEADERS:
                record.args = (args[0], "***", *args[2:])  # websockets' "< authorization: ..." at debug
            else:
                record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_uvicorn_logs() -> None:
    """Install RedactSecrets on uvicorn's loggers (after uvicorn.Config configured logging)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


def answers_cleanly(scope: Scope) -> bool:
    """Whether a /ws handshake may be refused with a whole HTTP response: the server offers the
    "websocket.http.response" extension and is runcast's protocol (this module's, which sends
    SEND_MANY), not uvicorn's stock one, which logs an error after each."""
    extensions = scope.get("extensions") or {}
    return "websocket.http.response" in extensions and SEND_MANY in extensions


def missing_hooks(app: Any) -> list[str]:
    """The attributes of uvicorn's classes that WebSocketProtocol and Server use and this
    uvicorn lacks (probed on throwaway instances)."""
    config = uvicorn.Config(app, lifespan="off", log_config=None)
    try:
        protocol = WebSocketsSansIOProtocol(
            config=config, server_state=ServerState(), app_state={}, _loop=cast(Any, object())
        )
        server = uvicorn.Server(config)
    except Exception as exc:  # a changed constructor breaks the subclasses as surely
        return [f"constructors ({exc!r})"]
    missing = [f"WebSocketsSansIOProtocol.{name}" for name in PROTOCOL_HOOKS if not hasattr(protocol, name)]
    return missing + [f"Server.{name}" for name in SERVER_HOOKS if not hasattr(server, name)]


def serving_classes(app: Any, plain: bool = False) -> tuple[Any, type[uvicorn.Server]]:
    """The WebSocket protocol (for uvicorn.Config's `ws`) and the server class to run: ours,
    or uvicorn's stock ones when `plain` or when this uvicorn lacks a hook ours use; the
    fallback says so in one warning."""
    missing = missing_hooks(app)
    if not plain and not missing:
        return WebSocketProtocol, Server
    reason = "RUNCAST_PLAIN_ASGI=1" if plain else f"uvicorn {uvicorn.__version__} lacks {', '.join(missing)}"
    server = uvicorn.Server if any(m.startswith(("Server.", "constructors")) for m in missing) else Server
    log.warning("serving WebSockets on uvicorn's stock protocol, plain ASGI without %s: %s", SEND_MANY, reason)
    return PLAIN_PROTOCOL, server


def cannot_listen(host: str, port: int) -> str | None:
    """Why this process cannot listen on host:port (in use, not this machine's address, ...),
    said with what to do, or None if it can: checked before anything else is done."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        return f"--host {host}: {exc.strerror}; give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} is in use on {host} (another runcast?); stop what uses it, "
                    f"or choose another port: --port {port + 1} (make run PORT={port + 1})"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror}; choose another --host or --port"
    return None
