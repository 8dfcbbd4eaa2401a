"""Live fan-out of committed events to subscribers.

Each subscription keeps a small bounded buffer of live events and a cursor, `next_seq`.
It delivers strictly in seq order: from the buffer while the buffer continues the cursor,
from the store whenever it does not (a fresh subscription, a gap, or an overflow because
the client reads slowly). So the hand-over from stored to live events can neither drop
nor repeat an event, and a slow client costs a bounded amount of memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, KeysView, Sequence

from ..bounds import MAX_REPLY_BYTES
from ..store import RunStore, StoredEvent
from ..wire import events_frame
from .frames import Frame, Framed, WriteNow

log = logging.getLogger("runcast.broker")

LIVE_BUFFER = 4096  # live events held per subscription before it falls back to the store
LIVE_BYTES = 4 * 1024 * 1024  # the same, in bytes of frames, for all the subscriptions of one client
SEND_CHUNK = 256  # frames handed to the connection at a time
REFILL_PAGE = 2000  # events read from the store at a time
REFILL_BYTES = 1024 * 1024  # a page is cut after this many bytes of frames (one event at least)
READ_RETRY = (0.1, 2.0)  # seconds before a failed store read is tried again: first, and at most

Send = Callable[[list[str]], Awaitable[None]]  # frames, in order, to one client


class ClientShare:
    """What all the subscriptions of one client may hold together, so that a client that
    follows many runs and reads nothing costs a bounded amount: LIVE_BYTES of live events
    (past it, a subscription falls back to the store), and one page read from the store
    at a time (the others wait their turn before they read)."""

    __slots__ = ("live_bytes", "refills")

    def __init__(self) -> None:
        self.live_bytes = 0
        self.refills = asyncio.Lock()


class Subscription:
    """One client's view of one run, from `after` to the terminal event.

    An idle subscription holds no task: a pump task runs only while there is something
    to deliver, so that thousands of quiet subscribers cost little memory. A caught-up
    subscription does not even wake one: with `write_now` (the connection's synchronous
    write, see `Connection.write_now`), live events go to the socket as they are offered."""

    __slots__ = (
        "_from_store",
        "_live",
        "_live_bytes",
        "_on_end",
        "_send",
        "_share",
        "_task",
        "_write_now",
        "batch",
        "broker",
        "ended",
        "next_seq",
        "run_id",
    )

    def __init__(
        self,
        broker: Broker,
        run_id: str,
        after: int,
        send: Send,
        *,
        batch: bool = False,
        write_now: WriteNow | None = None,
        share: ClientShare | None = None,
    ) -> None:
        self.broker = broker
        self.run_id = run_id
        self.next_seq = after + 1
        self.batch = batch
        self.ended = False
        self._send = send
        self._write_now = write_now
        self._live: deque[StoredEvent] = deque()
        self._live_bytes = 0
        self._share = share or ClientShare()
        self._from_store = True  # read the store before trusting the live buffer
        self._task: asyncio.Task[None] | None = None
        self._on_end: Callable[[Subscription], None] | None = None

    def offer(self, events: list[StoredEvent]) -> None:
        """Take committed live events of this run, in seq order; never blocks (called for
        every subscriber of the run after each commit)."""
        if self.ended:
            return
        if (
            self._write_now is not None
            and self._task is None
            and not self._from_store
            and not self._live
            and events[0].seq == self.next_seq
            and self._deliver_now(events)
        ):
            return
        for event in events:
            if event.seq < self.next_seq:
                continue
            size = len(event.frame)
            if len(self._live) >= LIVE_BUFFER or self._share.live_bytes + size > LIVE_BYTES:
                self._drop_live()
                self._from_store = True
            else:
                self._live.append(event)
                self._live_bytes += size
                self._share.live_bytes += size
        self._kick()

    def start(self, on_end: Callable[[Subscription], None]) -> None:
        self._on_end = on_end
        self._kick()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._end()

    def _drop_live(self) -> None:
        self._live.clear()
        self._share.live_bytes -= self._live_bytes
        self._live_bytes = 0

    def _kick(self) -> None:
        if self._task is None and not self.ended:
            self._task = asyncio.create_task(self._pump(), name=f"runcast-sub-{self.run_id}")

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self._drop_live()
            self.broker.remove(self)
            if self._on_end is not None:
                self._on_end(self)

    async def _pump(self) -> None:
        try:
            while True:
                if self._from_store:  # read and hand over a page, one subscription of the client at a time
                    async with self._share.refills:
                        ended = await self._pass_on()
                else:
                    ended = await self._pass_on()
                if ended is not None:
                    self._task = None
                    if ended:
                        self._end()
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # a dead socket ends the subscription; anything else is a bug to see
            log.exception("subscription to %s ended by an error", self.run_id)
            self._task = None
            self._end()

    async def _pass_on(self) -> bool | None:
        """Deliver what is due: True once the terminal event is out, False when idle (the
        next offer starts a new pump), None to go on."""
        events = await self._take()
        if events:
            return True if await self._deliver(events) else None
        if not self._from_store and not self._live:  # (offered during a store read: go on)
            return False
        return None

    async def _take(self) -> list[StoredEvent]:
        if self._from_store:
            self._from_store = False
            head = self.broker.store.committed_head(self.run_id)
            if head is not None and head < self.next_seq:  # it has had all that is stored: no read
                return []
            events = await self._read(self.next_seq - 1)
            kept = _within(events, REFILL_BYTES)
            if len(events) == REFILL_PAGE or len(kept) < len(events):
                self._from_store = True
            return kept
        events = []
        expected = self.next_seq
        while self._live:
            event = self._live.popleft()
            self._live_bytes -= len(event.frame)
            self._share.live_bytes -= len(event.frame)
            if event.seq < expected:
                continue
            if event.seq > expected:  # missed some: the store has them
                self._from_store = True
                break
            events.append(event)
            expected += 1
        return events

    async def _read(self, after: int) -> list[StoredEvent]:
        """A page of stored events after `after`. A read the database cannot serve for now
        (restarting, connection lost) is tried again, with backoff, until it can: the
        subscription goes on where it was rather than end with nothing said."""
        delay, most = READ_RETRY
        while True:
            try:
                return await self.broker.store.read_events(self.run_id, after, REFILL_PAGE)
            except Exception as exc:
                if not self.broker.store.transient(exc):
                    raise
                if delay == READ_RETRY[0]:  # said once per outage, not at every try
                    log.info("subscription to %s: the store cannot be read now (%s); trying again", self.run_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, most)

    def _deliver_now(self, events: list[StoredEvent]) -> bool:
        """Write caught-up live events straight to the socket; False if it cannot take them
        now (then nothing was written, and they go the queued way)."""
        assert self._write_now is not None
        events = through_terminal(events)
        frames: Sequence[Framed] = [Frame(f) for f in batch_frames(self.run_id, events)] if self.batch else events
        if not self._write_now(frames):
            return False
        self._sent(events)
        if events[-1].terminal:
            self._end()
        return True

    async def _deliver(self, events: list[StoredEvent]) -> bool:
        """Send events in order; True once the terminal event is out."""
        events = through_terminal(events)
        self._sent(events)
        if self.batch:
            await self._send(batch_frames(self.run_id, events))
        else:
            for start in range(0, len(events), SEND_CHUNK):
                await self._send([e.frame for e in events[start : start + SEND_CHUNK]])
        return events[-1].terminal

    def _sent(self, events: list[StoredEvent]) -> None:
        self.next_seq = events[-1].seq + 1
        self.broker.delivered += len(events)


def batch_frames(run_id: str, events: list[StoredEvent], budget: int = MAX_REPLY_BYTES) -> list[str]:
    """`events` frames of consecutive events, each within `budget` bytes (one event each
    at least: an event alone always fits, see --max-event-bytes)."""
    frames: list[str] = []
    group: list[str] = []
    used = 0
    for event in events:
        frame = event.frame
        size = (len(frame) if frame.isascii() else len(frame.encode())) + 1
        if group and used + size > budget:
            frames.append(events_frame(run_id, group))
            group, used = [], 0
        group.append(frame)
        used += size
    if group:
        frames.append(events_frame(run_id, group))
    return frames


def _within(events: list[StoredEvent], budget: int) -> list[StoredEvent]:
    """The first events whose frames fit in `budget` bytes (the first one always)."""
    used = 0
    for i, event in enumerate(events):
        used += len(event.frame)
        if used > budget and i:
            return events[:i]
    return events


def through_terminal(events: list[StoredEvent]) -> list[StoredEvent]:
    """The events up to and including the terminal one: nothing follows the end of a run."""
    for i, event in enumerate(events):
        if event.terminal:
            return events[: i + 1]
    return events


class Broker:
    """Which subscriptions follow which run; fed by the store after each commit."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._subs: dict[str, set[Subscription]] = {}
        self.delivered = 0  # events handed to subscribers' connections
        store.add_listener(self.publish)

    def subscribe(self, sub: Subscription, on_end: Callable[[Subscription], None]) -> None:
        """Register first, then read the store: nothing committed in between is missed."""
        self._subs.setdefault(sub.run_id, set()).add(sub)
        sub.start(on_end)

    def remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.run_id]

    def publish(self, events: list[StoredEvent]) -> None:
        """Offer one commit's events to the subscribers of their runs, one list per run."""
        followed = self._subs
        by_run: dict[str, list[StoredEvent]] = {}
        for event in events:
            if event.run_id in followed:
                by_run.setdefault(event.run_id, []).append(event)
        for run_id, run_events in by_run.items():
            for sub in tuple(followed.get(run_id, ())):  # a terminal event ends subscriptions
                try:
                    sub.offer(run_events)
                except Exception:  # one broken subscriber must not cost the others these events
                    log.exception("subscription to %s ended by an error", run_id)
                    sub.stop()

    @property
    def followed(self) -> KeysView[str]:
        """The runs someone here follows (a view: no copy)."""
        return self._subs.keys()

    def had(self, run_id: str) -> int | None:
        """The lowest seq the subscribers of a run have had, or None if nobody follows it."""
        subs = self._subs.get(run_id)
        return min(s.next_seq for s in subs) - 1 if subs else None

    @property
    def subscription_count(self) -> int:
        return sum(len(s) for s in self._subs.values())
