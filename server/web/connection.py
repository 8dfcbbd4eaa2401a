"""One WebSocket client: its outbound queue, its subscriptions, and what it asks for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..commands import Caller, Commands
from ..identities import ANYONE
from ..live import ClientShare, Framed, RunsWatch, Subscription
from ..protocol import (
    VERSION,
    Auth,
    Cancel,
    ClientMessage,
    CreateSchedule,
    DeleteSchedule,
    ErrorCode,
    ListRuns,
    ListSchedules,
    ListWorkflows,
    MessageId,
    MintToken,
    ParseError,
    Ping,
    Poll,
    Respond,
    RuncastError,
    Start,
    Subscribe,
    SubscribeRuns,
    Unsubscribe,
    UnsubscribeRuns,
    parse_client_frame,
)
from ..settings import Limits
from ..vocabulary import CloseCode
from ..wire import error_frame, reply, welcome_frame
from ..workflow import FINISHED
from .auth import bearer
from .framing import framed
from .limits import Quotas, check_start_rate
from .serving import SEND_MANY

log = logging.getLogger("runcast.connection")

# What waits for one socket: a sender waits while the outbox holds this many chunks, or
# while it holds anything and the new chunk would take it past OUTBOX_BYTES (so one chunk,
# however large, always goes). With the chunk being written and the socket's own buffer,
# a connection holds at most about 3 MiB of frames (docs: limits).

OUTBOX_SIZE = 256
OUTBOX_BYTES = 1024 * 1024


class Connection:
    """Serves one socket: reads messages in order, writes frames through one bounded queue."""

    def __init__(
        self,
        websocket: WebSocket,
        commands: Commands,
        limits: Limits,
        on_error: Callable[[str], None] | None = None,
        *,
        quotas: Quotas | None = None,
        key: str | None = None,
    ) -> None:
        self.websocket = websocket
        self._on_error = on_error
        self.commands = commands
        self.runtime = commands.runtime
        self.auth = commands.auth
        self.limits = limits
        self.subscriptions: dict[str, Subscription] = {}
        self._share = ClientShare()  # what its subscriptions may hold together
        self.runs_watch: RunsWatch | None = None  # the runs feed, when subscribed (one at most)
        # Who this socket speaks for: its last accepted token's identity (None: none yet).
        self.caller: Caller | None = None if self.auth.enabled else Caller("ws", ANYONE)
        self._expiry: asyncio.Task[None] | None = None  # closes the socket when its token expires
        self._auth_failures = 0
        # What this socket counts against: its identity's (or, until it signs in, its address's)
        # starts per second and sockets, shared with the identity's other sockets.
        self.quotas = quotas or Quotas(limits.starts_per_second, limits.connections_per_identity)
        self.key = key
        self._starts = self.quotas.starts(None)  # this socket's own, while it has no `sub`
        # Frames to write, and a writer task that exists only while there are some: an idle
        # connection holds no task of its own.
        self._outbox: deque[tuple[list[str], int]] = deque()  # chunks of frames, with their sizes
        self._outbox_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._room: asyncio.Event | None = None  # made when a sender has to wait for space
        self._gone = False  # the socket can no longer be written to
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[Any] | None = None
        self._closing = False
        self._sending_since: float | None = None  # when the send under way began
        extension = websocket.scope.get("extensions", {}).get(SEND_MANY)
        self._write_socket: Callable[[bytes], bool] | None = extension.get("write_now") if extension else None

    async def serve(self) -> None:
        await self.websocket.accept()
        self._reader = asyncio.current_task()
        await self.send(welcome_frame(VERSION))
        if self.caller is None:
            header = self.websocket.headers.get("authorization")
            if header is not None:
                await self._authenticate(bearer(header), None)
            if self.caller is None:
                self._tasks.append(asyncio.create_task(self._auth_deadline(), name="runcast-ws-auth"))
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                await self.handle(text if text is not None else message.get("bytes"))
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away, or we closed the socket
        except asyncio.CancelledError:
            if not self._closing:
                raise
        finally:
            for sub in list(self.subscriptions.values()):
                sub.stop()
            self.subscriptions.clear()
            self._unwatch_runs()
            if self._expiry is not None:
                self._tasks.append(self._expiry)
            if self._writer is not None:
                self._tasks.append(self._writer)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(self.limits.auth_seconds)
        if self.caller is None:
            await self._close_now(CloseCode.POLICY_VIOLATION, "no valid token in time")

    async def _authenticate(self, token: str | None, mid: MessageId) -> None:
        """An `auth` (or the handshake's header): the socket speaks for the token's identity
        from now on. A fresh token for the same sub refreshes it (and its expiry); one for
        another sub is refused, and the socket keeps its identity."""
        try:
            identity = self.auth.identify(token)
        except RuncastError as exc:
            self._auth_failures += 1
            await self._error(ErrorCode.UNAUTHORIZED, exc.message, mid)
            if self._auth_failures >= self.limits.auth_attempts:
                await self._close_now(CloseCode.POLICY_VIOLATION, "too many wrong tokens")
            return
        if self.caller is not None and self.caller.identity.sub != identity.sub:
            message = "a fresh token must be for the same identity (sub); open another connection for another"
            await self._error(ErrorCode.UNAUTHORIZED, message, mid)
            return
        key = self.quotas.key(identity.sub)
        if not self.quotas.move(self.key, key):
            await self._close_now(CloseCode.TRY_AGAIN_LATER, "too many connections for this identity; close some first")
            return
        self.key = key
        self._starts = self.quotas.starts(key) if key is not None else self._starts
        self.caller = Caller("ws", identity)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if identity.expires_at is not None:
            self._expiry = asyncio.create_task(self._expire(identity.expires_at), name="runcast-ws-expiry")
        await self.send(reply("authed", mid))

    async def _expire(self, at: float) -> None:
        """Close the socket (1008) when its token expires; a fresh `auth` first cancels this."""
        await asyncio.sleep(max(0.0, at - time.time()))
        await self._close_now(CloseCode.POLICY_VIOLATION, "the token expired; connect again with a fresh one")

    async def _close_now(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close from inside (auth failure, stuck reader): say why, then stop serving.
        With `flush`, what is already queued (e.g. the last `unauthorized`) goes out first."""
        if self._closing:
            return
        self._closing = True
        log.info("closing a connection with %d: %s", code, reason)
        if flush and self._writer is not None:
            await asyncio.wait({self._writer}, timeout=1.0)
        try:
            # Once the close is out, the reader's receive() returns a disconnect by itself.
            await asyncio.wait_for(self.websocket.close(code, reason), 1.0)
        except (RuntimeError, OSError, TimeoutError):
            if self._reader is not None and self._reader is not asyncio.current_task():
                self._reader.cancel()  # the close could not go out: stop serving anyway

    async def close(self, code: int) -> None:
        """Close the socket with a contract close code (e.g. 1001 on shutdown)."""
        with contextlib.suppress(RuntimeError, OSError):
            await self.websocket.close(code)

    async def send(self, frame: str) -> None:
        await self.send_many([frame])

    async def send_many(self, frames: list[str]) -> None:
        """Queue frames, in order, for this socket; waits while the outbox is full (see
        OUTBOX_BYTES)."""
        size = sum(map(len, frames))
        while self._full(size) and not self._gone:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()
        if self._gone:
            return  # the reader is ending this connection; nothing can be sent any more
        self._outbox.append((frames, size))
        self._outbox_bytes += size
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="runcast-ws-writer")

    def _full(self, size: int) -> bool:
        return len(self._outbox) >= OUTBOX_SIZE or (self._outbox_bytes > 0 and self._outbox_bytes + size > OUTBOX_BYTES)

    async def drained(self, frames: int) -> None:
        """Wait until at most `frames` frames wait in the outbox (or the socket is gone): the
        runs feed hands over its frames only then, so that the rest stay replaceable."""
        while self.queued > frames and not self._gone:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()

    def write_now(self, frames: Sequence[Framed]) -> bool:
        """Write frames at once (each framed once for every socket, framing.py), if nothing
        queued must go before them and the socket takes them without waiting; False
        (nothing written) otherwise."""
        if self._outbox or self._writer is not None or self._gone or self._closing or self._write_socket is None:
            return False
        return self._write_socket(framed(frames))

    async def _error(
        self, code: ErrorCode | str, message: str, mid: MessageId, retry_after: float | None = None
    ) -> None:
        if self._on_error is not None:
            self._on_error(str(code))
        await self.send(error_frame(code, message, mid, retry_after=retry_after))

    @property
    def queued(self) -> int:
        """Frames waiting to be written to this socket."""
        return sum(len(frames) for frames, _ in self._outbox)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        send = self.websocket.send
        many = SEND_MANY in self.websocket.scope.get("extensions", {})
        try:
            while self._outbox:
                frames, size = self._outbox.popleft()
                self._outbox_bytes -= size
                if self._room is not None:
                    self._room.set()
                self._sending_since = loop.time()
                if many:  # the server takes the whole chunk in one write
                    await send({"type": "websocket.send", "texts": frames})
                else:
                    for frame in frames:
                        await send({"type": "websocket.send", "text": frame})
                self._sending_since = None
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("writer ended: %r", exc)  # the socket is gone or closing; the reader ends the connection
            self._gone = True
        except Exception:
            log.exception("writer failed")
            self._gone = True
            raise
        finally:
            self._writer = None
            if self._gone and self._room is not None:
                self._room.set()  # senders waiting for room must not wait forever

    def stuck(self, now: float) -> bool:
        """True when one send has waited `stuck_seconds`: the client reads nothing while
        events wait. (Checked by the app's watchdog, not per send: a timer per frame costs
        more than the frame.)"""
        return self._sending_since is not None and now - self._sending_since >= self.limits.stuck_seconds

    async def close_stuck(self) -> None:
        await self._close_now(CloseCode.POLICY_VIOLATION, "client read nothing for too long", flush=False)

    # ---- messages --------------------------------------------------------------------

    async def handle(self, frame: str | bytes | None) -> None:
        """Answer one received frame; errors go back to this client only."""
        message = parse_client_frame(frame)
        if isinstance(message, ParseError):
            await self._error(message.code, message.message, message.id)
            return
        if isinstance(message, Auth):
            await self._authenticate(message.token, message.id)
            return
        if self.caller is None:
            if isinstance(message, Ping):
                await self.send(reply("pong", message.id))
                return
            hint = "send {'type': 'auth', 'token': ...} first, or connect with an Authorization: Bearer header"
            await self._error(ErrorCode.UNAUTHORIZED, f"not authenticated: {hint}", message.id)
            return
        try:
            await self._dispatch(message, self.caller)
        except RuncastError as exc:
            await self._error(exc.code, exc.message, message.id, exc.retry_after)
        except Exception:
            log.exception("error answering %s", type(message).__name__)
            await self._error(ErrorCode.INTERNAL, "the server failed to answer; see its log", message.id)

    async def _dispatch(self, message: ClientMessage, caller: Caller) -> None:
        commands = self.commands
        match message:
            case Start():
                self._check_rate()
                if message.subscribe:
                    self._check_room(message.run_id)
                run, existing = await commands.start(
                    caller, message.workflow, message.input, message.run_id, message.options
                )
                await self.send(reply("started", message.id, run=run, existing=existing))
                if message.subscribe:
                    self._follow(run, 0, message.batch)
            case Subscribe():
                run = await commands.get_run(caller, message.run_id)
                self._check_room(message.run_id)
                await self.send(reply("subscribed", message.id, run=run))
                self._follow(run, message.after, message.batch)
            case Unsubscribe():
                sub = self.subscriptions.pop(message.run_id, None)
                if sub is not None:
                    sub.stop()
                await self.send(reply("unsubscribed", message.id, run_id=message.run_id))
            case Poll():
                await self.send(reply("run", message.id, run=await commands.get_run(caller, message.run_id)))
            case Cancel():
                run = await commands.cancel(caller, message.run_id)
                await self.send(reply("cancel_requested", message.id, run=run))
            case Respond():
                run = await commands.respond(caller, message.run_id, message.request_id, message.value)
                await self.send(reply("responded", message.id, run=run))
            case ListWorkflows():
                await self.send(reply("workflows", message.id, workflows=commands.list_workflows(caller)))
            case ListRuns():
                page = await commands.list_runs(
                    caller, message.workflow, message.status, message.limit, message.before, message.owner
                )
                await self.send(reply("runs", message.id, runs=page[0], next=page[1]))
            case SubscribeRuns():
                await self._watch_runs(message, caller)
            case UnsubscribeRuns():
                self._unwatch_runs()
                await self.send(reply("runs_unsubscribed", message.id))
            case MintToken():
                await self.send(reply("token", message.id, **commands.mint_token(caller, message.fields)))
            case CreateSchedule() | DeleteSchedule() | ListSchedules():
                await self.send(await self._schedules(message, caller))
            case Ping():
                await self.send(reply("pong", message.id))

    async def _watch_runs(self, message: SubscribeRuns, caller: Caller) -> None:
        """subscribe_runs: the runs feed of what this caller may see (a second one replaces the first)."""
        which = self.commands.visible(caller, message.workflow, message.status, message.owner)
        self._unwatch_runs()
        await self.send(reply("runs_subscribed", message.id))
        # After the reply is queued and before the next message is read: a list_runs
        # sent right after this sees every change the feed does not.
        self.runs_watch = RunsWatch(
            self.runtime.runs_feed,
            self.send_many,
            self.drained,
            which,
            on_too_slow=self._too_slow,
            write_now=self.write_now,
        )
        self.runs_watch.start()

    async def _schedules(self, message: CreateSchedule | DeleteSchedule | ListSchedules, caller: Caller) -> str:
        """The reply to a message about schedules (8.3)."""
        if isinstance(message, CreateSchedule):
            return reply("schedule", message.id, schedule=await self.commands.create_schedule(caller, message.fields))
        if isinstance(message, DeleteSchedule):
            deleted = await self.commands.delete_schedule(caller, message.name)
            return reply("schedule_deleted", message.id, schedule=deleted)
        return reply("schedules", message.id, schedules=await self.commands.list_schedules(caller))

    def _check_rate(self) -> None:
        check_start_rate(self._starts)

    def _follow(self, run: dict[str, Any], after: int, batch: bool) -> None:
        """Deliver the run's events after `after`, replacing any earlier subscription to it."""
        run_id = run["run_id"]
        old = self.subscriptions.pop(run_id, None)
        if old is not None:
            old.stop()
        if run["status"] in FINISHED and after >= run["last_seq"]:
            return  # nothing left to deliver
        sub = Subscription(
            self.runtime.broker, run_id, after, self.send_many, batch=batch, write_now=self.write_now, share=self._share
        )
        self.subscriptions[run_id] = sub
        self.runtime.broker.subscribe(sub, self._ended)

    def _unwatch_runs(self) -> None:
        watch, self.runs_watch = self.runs_watch, None
        if watch is not None:
            watch.stop()

    def _too_slow(self) -> None:
        self._tasks.append(
            asyncio.create_task(
                self._close_now(CloseCode.POLICY_VIOLATION, "client read too slowly for the runs feed", flush=False)
            )
        )

    def _check_room(self, run_id: str | None) -> None:
        if run_id not in self.subscriptions and len(self.subscriptions) >= self.limits.max_subscriptions:
            raise RuncastError(
                f"this connection follows {len(self.subscriptions)} runs, the limit; unsubscribe from some first",
                ErrorCode.OVERLOADED,
            )

    def _ended(self, sub: Subscription) -> None:
        if self.subscriptions.get(sub.run_id) is sub:
            del self.subscriptions[sub.run_id]
