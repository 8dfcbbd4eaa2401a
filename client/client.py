"""Client: the runcast protocol over one WebSocket that reconnects and resumes by itself."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from server.redaction import redact
from server.vocabulary import FINISHED_STATUSES

from .errors import (
    AuthFailed,
    Conflict,
    ConnectionFailed,
    HandshakeFailed,
    RateLimited,
    closed_at_connect,
    error_from_reply,
    not_runcast,
    refused_at_connect,
)
from .feeds import QUEUE_SIZE, Event, Feed, Follower
from .runs import Run, RunsFollower, feed_filters
from .servers import Servers, Urls

log = logging.getLogger("runcast.client")

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
GREETING_SECONDS = 10.0  # how long a server may take to send its welcome
RATE_LIMIT_PATIENCE = 300.0  # seconds a request keeps retrying `rate_limited` before it raises
RELIST_LIMIT = 500  # runs listed (one page, newest first) after subscribe_runs on a new connection
FINISHED = frozenset(FINISHED_STATUSES)


def _why(exc: BaseException) -> str:
    """Why a connection could not be made, with what to check."""
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in str(exc):
        return "nothing is listening there; is the server running, and is this its address?"
    return str(exc) or type(exc).__name__


def new_run_id() -> str:
    """A client-made run id, so that a start retried after a reconnect stays one run."""
    return f"c{time.time_ns() // 1_000_000:012x}{os.urandom(5).hex()}"


def _canonical(value: Any) -> bytes:
    """JSON that is equal for equal values (keys sorted; True is not 1)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class _Request:
    """A request waiting for its reply, and the connection it was last sent on."""

    def __init__(self, message: dict[str, Any], resend: bool = True) -> None:
        self.message = message
        self.future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.sent_on = -1  # a connection number; a reconnect sends again what it has not seen
        self.resent = False  # went out again after a reconnect: an earlier copy may have taken effect
        self.resend = resend  # False for a feed's subscribe: after a reconnect the feed subscribes afresh


class Client:
    """`async with Client(url) as c:` then start, subscribe, run, poll, cancel, list.

    `url` may be a list of the URLs of several servers (or one string, comma separated):
    the client connects to the first that answers, and when that connection drops it
    moves on to the next, round robin. When the connection drops, the client reconnects
    with exponential backoff and jitter (waiting after each full round of URLs, not after
    each URL), sends again any request that had no answer, and resumes every
    subscription from the last seq it yielded: an event is never yielded twice nor
    skipped. `on_state` is called with "connected" or "reconnecting". Each subscription
    iterator holds at most `queue_size` events; a slow one is refilled from the server.
    A request refused with `rate_limited` is sent again after the server's `retry_after`,
    for up to `rate_limit_patience` seconds.
    """

    def __init__(
        self,
        url: Urls = DEFAULT_URL,
        token: str | None = None,
        *,
        reconnect: bool = True,
        max_backoff: float = 5.0,
        give_up_after: float | None = None,
        on_state: Callable[[str], None] | None = None,
        queue_size: int = QUEUE_SIZE,
        rate_limit_patience: float = RATE_LIMIT_PATIENCE,
    ) -> None:
        self.servers = Servers(url)
        self.token = token
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.give_up_after = give_up_after
        self.on_state = on_state
        self.queue_size = queue_size
        self.rate_limit_patience = rate_limit_patience
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Request] = {}
        self._feeds: dict[str, Feed] = {}  # one server subscription per run, shared by its iterators
        self._runs_followers: list[RunsFollower] = []  # subscribe_runs iterators, sharing one server feed
        self._runs_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._connection = 0  # counts successful opens, so a request knows whether this socket saw it
        self._closed = False
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """The server in use (before connecting: the first one to try)."""
        return self.servers.current

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- connection ------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection to the first server that answers (raises ConnectionFailed if
        none can be reached, AuthFailed at once if one refuses the token)."""
        await self._open_round(move_on=False)
        self._reader = asyncio.create_task(self._read_loop(), name="runcast-client-reader")

    async def _open_round(self, *, move_on: bool) -> None:
        """Try each server once, without waiting in between, so that a live one is found fast."""
        errors: list[ConnectionFailed] = []
        for url in self.servers.round(move_on=move_on):
            try:
                await self._open(url)
                return
            except ConnectionFailed as exc:
                if isinstance(exc, HandshakeFailed) and not exc.retryable:
                    raise  # a wrong token or a wrong URL on one node is the user's to fix, not to skip
                log.debug("runcast server %s failed: %s", redact(url), exc)
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConnectionFailed("no server could be reached: " + "; ".join(map(str, errors))) from errors[-1]

    async def _open(self, url: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await websockets.connect(
                url, additional_headers=headers, max_size=None, open_timeout=10, ping_interval=20
            )
        except websockets.InvalidStatus as exc:
            raise refused_at_connect(url, exc.response.status_code) from exc
        except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
            raise ConnectionFailed(f"cannot connect to {url}: {_why(exc)}") from exc
        try:
            try:
                await self._greet(ws, url)
            except websockets.ConnectionClosed as exc:
                close = exc.rcvd  # the close frame the server sent, if any
                code, reason = (close.code, close.reason) if close else (None, "")
                raise closed_at_connect(url, code, reason) from exc
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        self.servers.use(url)
        log.info("connected to %s", redact(url))
        self._connection += 1
        self._connected.set()
        if self.on_state:
            self.on_state("connected")

    async def _greet(self, ws: ClientConnection, url: str) -> None:
        """Read the welcome and, with a token, authenticate; raise HandshakeFailed if either goes wrong."""
        welcome = await self._first_reply(ws, url)
        if welcome.get("type") != "welcome":
            raise not_runcast(url, welcome)
        if self.token:
            await ws.send(orjson.dumps({"type": "auth", "token": self.token}).decode())
            reply = await self._first_reply(ws, url)
            if reply.get("type") == "error":
                raise AuthFailed(f"{url} refused the token ({error_from_reply(reply)}); check the token")

    async def _first_reply(self, ws: ClientConnection, url: str) -> dict[str, Any]:
        try:
            raw = await asyncio.wait_for(ws.recv(), GREETING_SECONDS)
        except TimeoutError as exc:
            raise HandshakeFailed(f"{url} sent no welcome within {GREETING_SECONDS:g} s") from exc
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise not_runcast(url, raw) from exc
        if not isinstance(frame, dict):
            raise not_runcast(url, frame)
        return frame

    async def close(self) -> None:
        self._closed = True
        if self._runs_task is not None:
            self._runs_task.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        self._fail(ConnectionFailed("the client was closed"))

    async def _read_loop(self) -> None:
        """Read until the client is closed; if reading stops for good, fail every waiting caller."""
        try:
            while True:
                await self._read_connection()
                if self._closed:
                    return
                if not self.reconnect:
                    raise ConnectionFailed(f"the connection to {self.url} closed")
                await self._reconnect()
        except ConnectionFailed as exc:
            self._fail(exc)
        except Exception as exc:  # a bug or a broken frame must not leave callers waiting forever
            log.exception("the runcast client stopped reading")
            self._fail(ConnectionFailed(f"the client stopped reading from {self.url}: {exc!r}"))

    async def _read_connection(self) -> None:
        assert self._ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self._ws:
                await self._dispatch(orjson.loads(raw))
        self._connected.clear()

    async def _reconnect(self) -> None:
        if self.on_state:
            self.on_state("reconnecting")
        delay, started = 0.1, time.monotonic()
        while True:
            try:
                await self._open_round(move_on=True)  # the server just lost is tried last
                break
            except ConnectionFailed as exc:
                if isinstance(exc, HandshakeFailed) and not exc.retryable:
                    raise  # a wrong token or a wrong URL does not get better by trying again
                if self.give_up_after is not None and time.monotonic() - started > self.give_up_after:
                    raise
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # once per round of every server
                delay = min(delay * 2, self.max_backoff)
        await self._resume()

    async def _resume(self) -> None:
        """On a new connection: subscribe every run again from its iterators' cursors, then
        send again every request that has had no answer."""
        for mid, pending in list(self._pending.items()):
            if not pending.resend:  # a subscribe of the lost connection; the loop below makes a new one
                del self._pending[mid]
                pending.future.cancel()
        for feed in self._feeds.values():
            feed.lost()
        for feed in list(self._feeds.values()):
            await self._steer(feed)
        for mid, pending in list(self._pending.items()):
            if pending.sent_on != self._connection:
                pending.resent = pending.resent or pending.sent_on >= 0
                await self._transmit(mid, pending)
        if self._runs_followers:  # the contract's recipe: subscribe_runs, then list_runs (not on this task:
            # the replies are read here)
            self._runs_task = asyncio.create_task(self._watch_runs(list(self._runs_followers)), name="runcast-runs")

    def _fail(self, exc: BaseException) -> None:
        """Reading has stopped for good: every waiting request and subscription raises `exc`."""
        if self._failure is None:
            self._failure = exc
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(self._failure)
        self._pending.clear()
        for feed in self._feeds.values():
            feed.fail(self._failure)
        for follower in self._runs_followers:
            follower.fail(self._failure)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind in ("event", "events"):
            feed = self._feeds.get(str(msg.get("run_id")))
            if feed is None:
                return  # a run we stopped following
            for event in msg["events"] if kind == "events" else [msg]:
                feed.offer(event)
            await self._steer(feed)
        elif kind == "run_changed":
            for follower in self._runs_followers:
                follower.offer(msg["run"])
        elif (mid := msg.get("id")) in self._pending:
            pending = self._pending.pop(mid)
            future = pending.future
            if not future.done():
                if kind == "error":
                    error = error_from_reply(msg)
                    error.resent = pending.resent
                    future.set_exception(error)
                else:
                    future.set_result(msg)

    async def _steer(self, feed: Feed) -> None:
        """Send what the feed needs now: a subscribe (a refill) or an unsubscribe, if anything."""
        if self._closed or self._failure is not None or not self._connected.is_set():
            return  # a reconnect steers every feed afresh
        message = feed.steer()
        if message is None:
            return
        if message["type"] != "subscribe":
            await self._send(message)
            return
        mid, pending = next(self._ids), _Request(message, resend=False)
        self._pending[mid] = pending
        pending.future.add_done_callback(functools.partial(self._subscribed, feed))
        await self._transmit(mid, pending)

    def _subscribed(self, feed: Feed, future: asyncio.Future[dict[str, Any]]) -> None:
        if future.cancelled():
            return
        if (exc := future.exception()) is not None:
            feed.fail(exc)  # e.g. run_not_found: every iterator of the run raises it
            return
        run = future.result().get("run") or {}
        if run.get("status") in FINISHED:
            feed.end_at(int(run.get("last_seq") or 0))  # an `after` at or past the end gets nothing more

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._reader is None:
            raise ConnectionFailed("not connected: use `async with Client(...)` or `await client.connect()`")

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._ws.send(orjson.dumps(message).decode())

    async def _transmit(self, mid: int, pending: _Request) -> None:
        pending.sent_on = self._connection
        await self._send({**pending.message, "id": mid})

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a message and return its reply; error replies raise their typed exception.
        While reconnecting, the message waits and goes out on the new connection; if the
        connection is lost for good, this raises ConnectionFailed. `rate_limited` is waited
        out and the message sent again, for up to `rate_limit_patience` seconds."""
        give_up = time.monotonic() + self.rate_limit_patience
        while True:
            try:
                return await self._exchange(message)
            except RateLimited as exc:
                wait = exc.retry_after * random.uniform(1.0, 1.2)  # jitter: many clients must not come back at once
                if time.monotonic() + wait > give_up:
                    raise RateLimited(
                        f"{exc.message} (still refused after {self.rate_limit_patience:g} s of waiting)",
                        reply=exc.reply,
                    ) from exc
                await asyncio.sleep(wait)

    async def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        self._check_usable()
        mid, pending = next(self._ids), _Request(message)
        self._pending[mid] = pending
        try:
            if self._connected.is_set():
                await self._transmit(mid, pending)
            return await pending.future
        finally:
            self._pending.pop(mid, None)  # a caller that gave up leaves nothing to send again

    # ---- the protocol ----------------------------------------------------------------

    async def start(
        self,
        workflow: str,
        input: Any = None,
        *,
        run_id: str | None = None,
        subscribe: bool = False,
        delay: float | None = None,
        start_at: str | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start a run; returns its snapshot. A client-made run_id keeps retries idempotent.
        `delay` (seconds) or `start_at` (ISO 8601) put its start off; among due pending
        runs, higher `priority` (-100..100) starts first; `concurrency_key` overrides the
        workflow's key."""
        message = {
            "type": "start",
            "workflow": workflow,
            "input": input,
            "run_id": run_id or new_run_id(),
            "subscribe": subscribe,
        }
        later = {"delay": delay, "start_at": start_at, "priority": priority, "concurrency_key": concurrency_key}
        message.update({key: value for key, value in later.items() if value is not None})
        return dict((await self.request(message))["run"])

    async def subscribe(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Every event of the run with seq > after, in order, up to the terminal event.

        Any number of iterators may follow one run at once, each from its own `after`: the
        client subscribes once and gives each iterator the whole log from its cursor."""
        self._check_usable()
        follower = Follower(after, self.queue_size)
        feed = self._feeds.setdefault(run_id, Feed(run_id))
        feed.followers.append(follower)
        try:
            await self._steer(feed)
            while (event := await follower.get()) is not None:
                await self._steer(feed)  # a drained queue asks for a refill
                yield event
        finally:
            feed.followers.remove(follower)
            if not feed.followers and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]
            await self._steer(feed)  # nobody wants this run's events any more: unsubscribe

    async def run(self, workflow: str, input: Any = None, *, run_id: str | None = None) -> AsyncIterator[Event]:
        """Start a run and yield its events to the end."""
        started = await self.start(workflow, input, run_id=run_id)
        async for event in self.subscribe(started["run_id"]):
            yield event

    async def subscribe_runs(
        self, workflow: str | None = None, status: str | None = None, *, current: bool = False
    ) -> AsyncIterator[Run]:
        """Each change of a run that matches the filters, as its snapshot without steps plus
        `current_step` (and `steps_done`, `steps_total`), oldest change first; a run that
        leaves the `status` filter is told once. With `current`, the runs of one
        `list_runs` page (newest first, at most 500) come first.

        After a reconnect the client subscribes again and lists again (subscribe_runs, then
        list_runs), so changes made meanwhile are not lost; per run, only states with a
        higher `last_seq` than the last one yielded come out. A slow reader holds at most
        one state per run: the newest."""
        self._check_usable()
        follower = RunsFollower(workflow, status)
        self._runs_followers.append(follower)
        try:
            # Without `current`, what is there now is known, not yielded: after a reconnect, the
            # relist then yields only what changed since the iterator began.
            await self._watch_runs([follower], yield_listed=current)
            while True:
                yield await follower.get()
        finally:
            self._runs_followers.remove(follower)
            if self._connected.is_set() and self._failure is None and not self._closed:
                if self._runs_followers:
                    await self._watch_runs([])  # the others' filters
                else:
                    await self._send({"type": "unsubscribe_runs"})

    async def _watch_runs(self, relist: list[RunsFollower], *, yield_listed: bool = True) -> None:
        """Subscribe this connection's runs feed with the iterators' filters, then list runs
        for those in `relist`: to yield what they missed, or (not `yield_listed`) to know."""
        try:
            await self.request({"type": "subscribe_runs", **feed_filters(self._runs_followers)})
            for follower in relist:
                runs, _ = await self.list_runs(*follower.filters, limit=RELIST_LIMIT)
                take = follower.offer if yield_listed else follower.know
                for run in reversed(runs):  # oldest first, as changes come
                    take(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. bad_request for a status the server does not know
            for follower in relist or self._runs_followers:
                follower.fail(exc)

    async def poll(self, run_id: str) -> dict[str, Any]:
        return dict((await self.request({"type": "poll", "run_id": run_id}))["run"])

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return dict((await self.request({"type": "cancel", "run_id": run_id}))["run"])

    async def respond(self, run_id: str, request_id: str, value: Any) -> dict[str, Any]:
        """Answer the input a waiting run asked for (`waiting_for` in its snapshot, or an
        `input_requested` event); returns the run's snapshot. Raises InvalidInput if `value`
        does not fit the request's schema (the run keeps waiting), Conflict if the request is
        not open (already answered, or never asked), RunNotFound for an unknown run.

        A respond sent again after a reconnect whose first copy had got through is answered
        `conflict`; then the run's log decides: if the request was answered with this very
        value, that was this call, and the snapshot is returned."""
        message = {"type": "respond", "run_id": run_id, "request_id": request_id, "value": value}
        try:
            return dict((await self.request(message))["run"])
        except Conflict as exc:
            if not exc.resent or await self._answer_to(run_id, request_id) != _canonical(value):
                raise
            return await self.poll(run_id)

    async def _answer_to(self, run_id: str, request_id: str) -> bytes | None:
        """The value the run's log records for `request_id` (canonical JSON), or None."""
        last_seq = int((await self.poll(run_id)).get("last_seq") or 0)
        if last_seq == 0:
            return None
        async for event in self.subscribe(run_id):
            data = event.get("data") or {}
            if event["event"] == "input_received" and data.get("request_id") == request_id:
                return _canonical(data.get("value"))
            if event["seq"] >= last_seq:
                break
        return None

    async def list_workflows(self) -> list[dict[str, Any]]:
        return list((await self.request({"type": "list_workflows"}))["workflows"])

    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs, newest first, and the cursor of the next page (or None)."""
        message: dict[str, Any] = {"type": "list_runs", "limit": limit}
        for key, value in (("workflow", workflow), ("status", status), ("before", before)):
            if value is not None:
                message[key] = value
        reply = await self.request(message)
        return list(reply["runs"]), reply.get("next")

    async def list_schedules(self) -> list[dict[str, Any]]:
        return list((await self.request({"type": "list_schedules"}))["schedules"])

    async def create_schedule(
        self,
        name: str,
        workflow: str,
        input: Any = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        timezone: str | None = None,
        catchup: str | None = None,
    ) -> dict[str, Any]:
        """Start `workflow` on a clock: `cron` (in `timezone`, default UTC) or `every` seconds."""
        message: dict[str, Any] = {"type": "create_schedule", "name": name, "workflow": workflow, "input": input}
        for key, value in (("cron", cron), ("every", every), ("timezone", timezone), ("catchup", catchup)):
            if value is not None:
                message[key] = value
        return dict((await self.request(message))["schedule"])

    async def delete_schedule(self, name: str) -> dict[str, Any]:
        return dict((await self.request({"type": "delete_schedule", "name": name}))["schedule"])

    async def ping(self) -> None:
        await self.request({"type": "ping"})
