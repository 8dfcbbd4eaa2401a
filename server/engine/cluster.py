"""This node's part in a cluster: it says it is alive, takes free and orphaned runs up
to its --max-running, and acts on cancels that were asked through other nodes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..store import Coordination
from ..waiting import cancelled, wait_set

log = logging.getLogger("runcast.cluster")


Adopt = Callable[[dict[str, Any], bool], None]  # (snapshot, taken over from another node)


class Cluster:
    """Heartbeats, claims and remote cancels for one node; `start()` runs them, `stop()` ends them."""

    def __init__(
        self,
        coordination: Coordination,
        *,
        takeover_seconds: float,
        free_slots: Callable[[], int],
        workflows: Callable[[], list[str]],
        adopt: Adopt,
        cancel: Callable[[str, str | None], Awaitable[Any]],  # (run id, who cancelled it)
    ) -> None:
        self.coordination = coordination
        self.takeover_seconds = takeover_seconds
        self._free_slots = free_slots
        self._workflows = workflows
        self._adopt = adopt
        self._cancel = cancel
        self._wake = asyncio.Event()
        self._cancels: dict[str, str | None] = {}  # run id -> who cancelled it (a sub, or None)
        self._tasks: list[asyncio.Task[None]] = []
        self._nudges: set[asyncio.Task[None]] = set()
        # Often enough that a dead node's runs move within takeover_seconds plus a beat.
        self.beat_seconds = max(0.2, min(2.0, takeover_seconds / 5))
        # Since when this node's heartbeats have been getting through (None: they fail now);
        # a node just started may take over at once.
        self._beating_since: float | None = float("-inf")
        # A run may wait for a free slot (a nudge came, this node made one, or the last claim
        # filled every slot): only then does a slot coming free look for one at once; else
        # the claims of each beat find what there is, without a round trip per run that ends.
        self._maybe_pending = True
        coordination.on_control(self._heard)

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._beat_loop(), name="runcast-heartbeat"),
            asyncio.create_task(self._claim_loop(), name="runcast-claims"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancelled(*tasks)

    def free_slots_now(self) -> int:
        return self._free_slots()

    def nudge_others(self) -> None:
        """Tell every node that a run waits for a free slot (best effort: they poll too)."""
        self._maybe_pending = True  # this node too, when a slot of its own comes free
        task = asyncio.create_task(self._nudge(), name="runcast-nudge")
        self._nudges.add(task)
        task.add_done_callback(self._nudges.discard)

    async def _nudge(self) -> None:
        with contextlib.suppress(Exception):
            await self.coordination.notify_control({"pending": True})

    def wake(self) -> None:
        """A slot came free: look for a run to take now, if one may be waiting."""
        if self._maybe_pending:
            self._wake.set()

    def freed(self, key: str | None) -> None:
        """A run of this node ended: a slot is free, and room in its concurrency key, which a
        run waiting on any node may take (a keyed run is always claimed)."""
        if key is not None:
            self.nudge_others()
            self.fall_due()
        else:
            self.wake()

    def fall_due(self) -> None:
        """A delayed run falls due now: look for runs to take (others poll each beat)."""
        self._maybe_pending = True
        self._wake.set()

    def _heard(self, message: dict[str, Any]) -> None:
        run_id, by = message.get("cancel"), message.get("by")
        if isinstance(run_id, str):
            self._cancels[run_id] = by if isinstance(by, str) else None
        if message.get("pending"):
            self._maybe_pending = True
        self._wake.set()

    async def claim_now(self) -> int:
        """Take as many runs as there are free slots; returns how many."""
        free = self._free_slots()
        if free <= 0:
            return 0
        self._maybe_pending = False  # before the query: a nudge heard meanwhile sets it again
        try:
            taken = await self.coordination.claim(free, self._takeover_after(), self._workflows())
        except BaseException:
            self._maybe_pending = True
            raise
        if len(taken) == free:  # every slot filled: more may wait
            self._maybe_pending = True
        for snapshot, takeover in taken:
            self._adopt(snapshot, takeover)
        if taken:
            log.info("node %s took %d run(s)", self.coordination.node_id, len(taken))
        return len(taken)

    def _takeover_after(self) -> float | None:
        """The takeover seconds, or None (free runs only) until this node's heartbeats have
        got through for that long: after the database was away, every node looks silent
        until it beats again, and none should take the others' runs meanwhile."""
        since = self._beating_since
        if since is None or time.monotonic() - since < self.takeover_seconds:
            return None
        return self.takeover_seconds

    async def _beat_loop(self) -> None:
        while True:
            try:
                await self.coordination.heartbeat()
            except Exception as exc:  # the store is down: the writer retries; we try again next beat
                if self._beating_since is not None:
                    log.warning("heartbeat failed: %s; no takeovers until it gets through again", exc)
                self._beating_since = None
            else:
                if self._beating_since is None:
                    log.info("heartbeat got through again; takeovers in %g s", self.takeover_seconds)
                    self._beating_since = time.monotonic()
            await asyncio.sleep(self.beat_seconds)

    async def _claim_loop(self) -> None:
        polls = 0
        while True:
            await wait_set(self._wake, self.beat_seconds)
            self._wake.clear()
            try:
                while await self.claim_now():
                    pass
                polls += 1
                if polls % 3 == 0:  # a cancel whose notification was lost still arrives
                    self._cancels.update(await self.coordination.cancel_requests())
                for run_id, by in list(self._cancels.items()):
                    del self._cancels[run_id]
                    if self.coordination.owns(run_id):
                        with contextlib.suppress(Exception):
                            await self._cancel(run_id, by)
            except Exception as exc:
                log.warning("claiming runs failed: %s", exc)
