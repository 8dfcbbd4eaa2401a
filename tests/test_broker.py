"""Unit tests of server.broker on a real SQLite store: the two ways an event reaches a
subscriber (written at once to a caught-up socket, or queued and pumped) never drop,
repeat or reorder an event, whichever way each event goes."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from server.live import Broker, Framed, Subscription
from server.store import StoredEvent
from server.store.sqlite import SqliteStore
from server.web.framing import framed, text_frame

from .test_store import run_row


def split_frames(data: bytes) -> list[str]:
    """The texts of concatenated unmasked text frames (what `write_now` is handed)."""
    texts = []
    while data:
        assert data[0] == 0x81, "a final text frame"
        n, head = data[1], 2
        if n == 126:
            n, head = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[2:10], "big"), 10
        texts.append(data[head : head + n].decode())
        data = data[head + n :]
    return texts


@pytest.mark.parametrize("text", ["x", "é" * 70, "y" * 70_000])
def test_text_frame_lengths(text: str) -> None:
    assert split_frames(text_frame(text) * 2) == [text, text]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "runs.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class Socket:
    """A subscriber's socket that takes direct writes only when `ready`, and whose queued
    sends take a while: every frame it receives, by either way, lands in `texts` in order."""

    def __init__(self, rng: random.Random, ready: float) -> None:
        self.rng = rng
        self.ready = ready
        self.texts: list[str] = []
        self.direct = 0
        self.queued = 0
        self.sending = False

    def write_now(self, frames: Sequence[Framed]) -> bool:
        if self.sending or self.rng.random() > self.ready:
            return False  # like a connection with frames queued, or a full socket buffer
        self.texts += split_frames(framed(frames))  # the bytes a connection writes
        self.direct += 1
        return True

    async def send(self, frames: list[str]) -> None:
        self.sending = True
        await asyncio.sleep(self.rng.choice((0, 0, 0.001)))
        self.texts += frames
        self.queued += 1
        self.sending = False

    def seqs(self, batch: bool) -> list[int]:
        messages = [json.loads(t) for t in self.texts]
        if batch:
            assert all(m["type"] == "events" for m in messages)
            messages = [e for m in messages for e in m["events"]]
        return [m["seq"] for m in messages]


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("ready", [1.0, 0.7, 0.0])
async def test_direct_and_queued_delivery_keep_the_log_exact(store: SqliteStore, batch: bool, ready: float) -> None:
    rng = random.Random(11)
    broker = Broker(store)
    await store.create_run(run_row("r1", status="running"))
    n = 3000
    sockets, ended = [], []
    for i in range(n):
        if i % 500 == 0:  # subscribers join along the way, from the start or from now
            sock = Socket(rng, ready)
            after = 0 if i % 1000 == 0 else i
            sub = Subscription(broker, "r1", after, sock.send, batch=batch, write_now=sock.write_now)
            broker.subscribe(sub, ended.append)
            sockets.append((after, sock))
        event = "run_completed" if i == n - 1 else "progress"
        store.emit("r1", event, None, {"i": i + 1})
        if rng.random() < 0.05:
            await asyncio.sleep(rng.choice((0, 0.002)))
    await store.flush()
    for _ in range(500):
        if len(ended) == len(sockets):
            break
        await asyncio.sleep(0.01)
    assert len(ended) == len(sockets), "every subscription ends with the terminal event"
    for after, sock in sockets:
        assert sock.seqs(batch) == list(range(after + 1, n + 1))
    if ready == 1.0:
        assert sum(s.direct for _, s in sockets) > 0
    if ready == 0.0:
        assert sum(s.direct for _, s in sockets) == 0
    assert broker.subscription_count == 0


async def subscribed_until_ended(broker: Broker, sock: Socket, seconds: float) -> list[Subscription]:
    """Subscribe `sock` to run r1 from its start; the subscriptions ended within `seconds`."""
    ended: list[Subscription] = []
    broker.subscribe(Subscription(broker, "r1", 0, sock.send, write_now=sock.write_now), ended.append)
    for _ in range(int(seconds * 100)):
        if ended:
            break
        await asyncio.sleep(0.01)
    return ended


class CommitsDuringReads(SqliteStore):
    """A store whose first read of events is overtaken: the whole run commits (and is offered
    to the subscription) while that read is under way, after the read's snapshot was taken."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.overtake: list[tuple[str, str]] = []

    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]:
        events = await super().read_events(run_id, after, limit)
        for event, rid in self.overtake:
            self.emit(rid, event, None, {})
        self.overtake = []
        await self.flush()
        return events


async def test_events_offered_during_the_first_read_are_delivered(tmp_path: Path) -> None:
    store = CommitsDuringReads(str(tmp_path / "runs.db"))
    await store.open()
    try:
        broker = Broker(store)
        await store.create_run(run_row("r1", status="running"))
        store.emit("r1", "run_started", None, {})  # stored before: the subscription must read the store
        await store.flush()
        store.overtake = [("progress", "r1"), ("run_completed", "r1")]
        sock = Socket(random.Random(1), ready=1.0)
        ended = await subscribed_until_ended(broker, sock, 2.0)
        assert sock.seqs(batch=False) == [1, 2, 3]
        assert ended, "the terminal event ends the subscription"
    finally:
        await store.close()


class ReadsFailFor(SqliteStore):
    """A store whose reads of events fail as a restarting database's do (connection lost)
    until `failures` of them have failed."""

    def __init__(self, path: str, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    async def read_events(self, run_id: str, after: int, limit: int) -> list[StoredEvent]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError("connection lost in the middle of the read")
        return await super().read_events(run_id, after, limit)


async def test_a_store_read_that_fails_for_a_while_is_tried_again_not_the_end(tmp_path: Path) -> None:
    """A subscription whose store read fails while the database restarts goes on once it is
    back, with every event once; it used to end there, its client told nothing."""
    store = ReadsFailFor(str(tmp_path / "runs.db"), failures=3)
    await store.open()
    try:
        broker = Broker(store)
        await store.create_run(run_row("r1", status="running"))
        for event in ("run_started", "progress", "run_completed"):
            store.emit("r1", event, None, {})
        await store.flush()
        sock = Socket(random.Random(4), ready=1.0)
        ended = await subscribed_until_ended(broker, sock, 3.0)
        assert store.failures == 0 and sock.seqs(batch=False) == [1, 2, 3]
        assert ended, "the terminal event ends the subscription"
    finally:
        await store.close()


async def test_a_broken_subscriber_costs_the_others_nothing(store: SqliteStore) -> None:
    broker = Broker(store)
    await store.create_run(run_row("r1", status="running"))
    good, bad = Socket(random.Random(2), ready=1.0), Socket(random.Random(3), ready=1.0)

    def explode(frames: Sequence[Framed]) -> bool:
        raise OSError("socket gone")

    ended: list[Subscription] = []
    for sock, write in ((bad, explode), (good, good.write_now), (bad, explode)):
        broker.subscribe(Subscription(broker, "r1", 0, sock.send, write_now=write), ended.append)
    await asyncio.sleep(0.05)  # every subscription has read the (empty) store: caught up
    for i in range(50):
        store.emit("r1", "run_completed" if i == 49 else "progress", None, {})
        await store.flush()
    assert good.seqs(batch=False) == list(range(1, 51))
    assert len(ended) == 3 and broker.subscription_count == 0


async def test_a_clients_subscriptions_read_the_store_one_page_at_a_time(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty subscriptions of one client whose socket takes nothing: one of them holds a
    page read from the store (cut at REFILL_BYTES); the others wait their turn unread."""
    from server.live import ClientShare

    broker = Broker(store)
    for r in range(50):
        await store.create_run(run_row(f"r{r}", status="running"))
        for _ in range(30):
            store.emit(f"r{r}", "step_output", "s", {"delta": "z" * 100_000})
    await store.flush()
    reads: list[int] = []
    real = store.read_events

    async def counted(run_id: str, after: int, limit: int) -> list[StoredEvent]:
        page = await real(run_id, after, limit)
        reads.append(len(page))
        return page

    monkeypatch.setattr(store, "read_events", counted)
    stuck = asyncio.Event()

    async def never(frames: list[str]) -> None:
        await stuck.wait()

    share = ClientShare()
    subs = [Subscription(broker, f"r{r}", 0, never, share=share) for r in range(50)]
    for sub in subs:
        broker.subscribe(sub, lambda _s: None)
    await asyncio.sleep(0.5)
    assert reads == [30], reads  # one page, of one run
    for sub in subs:
        sub.stop()


async def test_a_subscription_that_has_had_all_that_is_stored_does_not_read_the_store(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run this process writes, whose every committed event the subscriber has had (a run
    just started, subscribed from 0): its events come live, with no read of the store."""
    broker = Broker(store)
    await store.create_run(run_row("fresh", status="running"))
    reads: list[str] = []
    real = store.read_events

    async def counted(run_id: str, after: int, limit: int) -> list[StoredEvent]:
        reads.append(run_id)
        return await real(run_id, after, limit)

    monkeypatch.setattr(store, "read_events", counted)
    sock = Socket(random.Random(5), ready=1.0)
    ended: list[Subscription] = []
    broker.subscribe(Subscription(broker, "fresh", 0, sock.send, write_now=sock.write_now), ended.append)
    await asyncio.sleep(0.05)
    for i in range(20):
        store.emit("fresh", "run_completed" if i == 19 else "progress", None, {})
    await store.flush()
    for _ in range(100):
        if ended:
            break
        await asyncio.sleep(0.01)
    assert reads == [] and sock.seqs(batch=False) == list(range(1, 21)) and ended
