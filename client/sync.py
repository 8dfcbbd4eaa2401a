"""SyncClient: the same client for scripts that do not use asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .client import DEFAULT_URL, Client, Event
from .servers import Urls


async def _next(events: AsyncIterator[Event]) -> Event | None:
    """One step of an async iterator, None at its end (StopAsyncIteration cannot cross threads)."""
    return await anext(events, None)


async def _close(events: AsyncIterator[Event]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(RuntimeError):  # still running after an interrupt: it ends itself
            await aclose()


class SyncClient:
    """Blocking calls on a Client that lives in a background thread.

    with SyncClient("ws://127.0.0.1:8000/ws") as c:
        for event in c.run("count", {"n": 3}):
            print(event["seq"], event["event"])

    `url` may be a list of servers, as for Client.
    """

    def __init__(self, url: Urls = DEFAULT_URL, token: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="runcast-sync-client", daemon=True)
        self._thread.start()
        self._client = Client(url, token, **options)
        try:
            self._call(self._client.connect())
        except BaseException:
            self._stop_loop()
            raise

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller's thread: stop the work in the loop too
            raise

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._client.close())
        self._call(self._loop.shutdown_asyncgens())  # subscriptions the caller left unfinished
        self._stop_loop()

    def start(self, workflow: str, input: Any = None, *, run_id: str | None = None, **later: Any) -> dict[str, Any]:
        """Start a run; `later` may say `delay`, `start_at` and `priority` (see Client.start)."""
        return dict(self._call(self._client.start(workflow, input, run_id=run_id, **later)))

    def subscribe(self, run_id: str, after: int = 0) -> Iterator[Event]:
        """Every event of the run with seq > after, to the end. Each event is fetched when the
        caller asks for it, so nothing piles up; leaving the loop early unsubscribes."""
        events = self._client.subscribe(run_id, after)
        try:
            while (event := self._call(_next(events))) is not None:
                yield event
        finally:
            if not self._loop.is_closed():
                self._call(_close(events))

    def run(self, workflow: str, input: Any = None, *, run_id: str | None = None) -> Iterator[Event]:
        started = self.start(workflow, input, run_id=run_id)
        yield from self.subscribe(started["run_id"])

    def poll(self, run_id: str) -> dict[str, Any]:
        return dict(self._call(self._client.poll(run_id)))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(self._call(self._client.cancel(run_id)))

    def respond(self, run_id: str, request_id: str, value: Any) -> dict[str, Any]:
        """Answer the input a waiting run asked for; returns the run's snapshot (see Client.respond)."""
        return dict(self._call(self._client.respond(run_id, request_id, value)))

    def list_workflows(self) -> list[dict[str, Any]]:
        return list(self._call(self._client.list_workflows()))

    def list_runs(self, **filters: Any) -> tuple[list[dict[str, Any]], str | None]:
        runs, cursor = self._call(self._client.list_runs(**filters))
        return list(runs), cursor
