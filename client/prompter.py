"""What `run` and `watch` do when the run they follow waits for input: at a terminal, ask
the person there (questions built from the request's schema) and send the answer; anywhere
else, print the `respond` command that answers it, and keep watching either way.

Which requests are open comes from the run itself: those in the snapshot's `waiting_for`
when watching began, then each `input_requested` that arrives live; an `input_received`
closes one. An `input_requested` replayed from before the snapshot is either in
`waiting_for` or already answered, so replaying a run's log never asks twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import time
from typing import Any

import orjson

from .client import Client
from .errors import Conflict, InvalidInput, RunNotFound, ServerError
from .feeds import TERMINAL_EVENTS
from .questions import MISSING, EndOfInput, ask, example
from .terminal import Terminal
from .view import RECONNECTED, RECONNECTING, View, describe, prompt_of

SEND_PATIENCE = 10.0  # seconds an answer sent just before the run ended may take to be acknowledged
Request = dict[str, Any]  # request_id, prompt, schema, step: as in a snapshot's waiting_for


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def respond_command(program: str, run_id: str, request: Request) -> str:
    """The command line that answers `request` (with a value of the right shape to edit)."""
    value = _json(example(request.get("schema")))
    words = [*shlex.split(program), "respond", run_id, "--request-id", str(request["request_id"]), "--value", value]
    return shlex.join(words)


def _deadline(request: Request) -> str:
    """How long the request stays open, when the server says (`expires_at`, epoch seconds)."""
    expires_at = request.get("expires_at")
    if not isinstance(expires_at, int | float):
        return ""
    return f" (answer within {max(0, round(expires_at - time.time()))} s)"


class Prompter:
    """Follows the open input requests of one watched run (see the module docstring).
    With `terminal` None it only tells how to answer; otherwise it asks, one request at a
    time, while events go on arriving (they are shown between the questions)."""

    def __init__(
        self, client: Client, run_id: str, view: View, terminal: Terminal | None, program: str = "runcast"
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.view = view
        self.terminal = terminal
        self.program = program
        self._known_until = 0  # events up to this seq were in the snapshot
        self._initial: list[Request] = []  # the snapshot's open requests, asked once the replay has caught up
        self._queue: dict[str, Request] = {}  # open requests not asked yet, in the order they came
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._current: str | None = None  # the request being asked
        self._asking: asyncio.Task[Any] | None = None  # reading its answer (cancelled if answered elsewhere)
        self._told: set[str] = set()  # requests whose respond command was printed
        self._sending = False  # an answer is on its way to the server
        self._closing = False

    @property
    def asking(self) -> bool:
        """A question is on the screen (events are shown between it and the answer)."""
        return self._asking is not None

    def begin(self, run: dict[str, Any], after: int) -> None:
        """Watching starts from `after`; `run` is a snapshot taken before subscribing."""
        self._known_until = int(run.get("last_seq") or 0)
        names = [name for name in run.get("truncated") or [] if isinstance(name, str)]
        cut = {int(m.group(1)) for name in names if (m := re.match(r"waiting_for\[(\d+)\]", name))}  # too big
        self._initial = [
            {**r, "partial": True} if i in cut else r
            for i, r in enumerate(run.get("waiting_for") or [])
            if isinstance(r, dict) and "request_id" in r
        ]
        if after >= self._known_until:
            self._catch_up()

    def connection(self, state: str) -> None:
        """While a question is on the screen, say there that the connection dropped, and when
        it is back (the view below the question is not redrawn meanwhile)."""
        if self.asking and self.terminal is not None:
            self.terminal.interject(RECONNECTING if state == "reconnecting" else RECONNECTED)

    def event(self, event: dict[str, Any]) -> None:
        """Called with each event, after the view has shown it."""
        kind, data = event["event"], event.get("data") or {}
        if kind == "input_requested" and event["seq"] > self._known_until:
            self._offer({**data, "step": event.get("step")})
        elif kind == "input_requested":  # replayed: each request is whole in its event
            whole = {**data, "step": event.get("step")}
            self._initial = [whole if r["request_id"] == data.get("request_id") else r for r in self._initial]
        elif kind == "input_received":
            self._answered(str(data.get("request_id")), data.get("value"))
        elif kind in TERMINAL_EVENTS:
            self._queue.clear()
            self._initial.clear()
            if self._call_off() and self.terminal is not None:
                self.terminal.write(f"\n  the run ended ({kind.removeprefix('run_')}) before it was answered\n")
        if self.asking and self.terminal is not None and (line := describe(event)):
            self.terminal.interject(line)
        if event["seq"] >= self._known_until:
            self._catch_up()

    def _catch_up(self) -> None:
        initial, self._initial = self._initial, []
        for request in initial:
            self._offer(request)

    def _offer(self, request: Request) -> None:
        request_id = str(request["request_id"])
        if request_id == self._current or request_id in self._queue:
            return
        if self.terminal is None:
            self._tell(request)
            return
        self._queue[request_id] = request
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._ask_each(), name="runcast-prompter")

    def _tell(self, request: Request) -> None:
        request_id = str(request["request_id"])
        if request_id in self._told:
            return
        self._told.add(request_id)
        where = f"step {request.get('step')}: " if request.get("step") else ""
        self.view.note(
            f"run {self.run_id} is waiting for input ({where}{prompt_of(request)}); answer with: "
            + respond_command(self.program, self.run_id, request)
        )

    def _answered(self, request_id: str, value: Any) -> None:
        self._queue.pop(request_id, None)
        self._initial = [r for r in self._initial if str(r["request_id"]) != request_id]
        if request_id == self._current and self._call_off() and self.terminal is not None:
            self.terminal.write(f"\n  answered elsewhere: {_json(value)}\n")

    def _call_off(self) -> bool:
        """Take the question off the screen (the answer being typed is for nothing now)."""
        if self._asking is None or self._asking.done():
            return False
        self._asking.cancel()
        self._asking = None  # no more event lines between it and its answer
        if self.terminal is not None:
            self.terminal.discard_typed()
        return True

    async def _ask_each(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self.terminal is not None:
                request_id, request = next(iter(self._queue.items()))
                del self._queue[request_id]
                self._current = request_id
                self.view.hold()
                try:
                    await self._ask(request, self.terminal)
                finally:
                    self._current = None
                    self.view.release()
            for request in list(self._queue.values()):  # the input ended: tell how to answer instead
                self._tell(request)
            self._queue.clear()

    async def _ask(self, request: Request, terminal: Terminal) -> None:
        """Ask until the server takes an answer, someone else answers, or the input ends."""
        if request.get("partial"):
            request = await self._whole(request)
        request_id = str(request["request_id"])
        terminal.discard_typed()  # keys pressed before the question was there were not its answer
        where = f"{request.get('step')} asks" if request.get("step") else "the run asks"
        terminal.write(f"\n{where}: {request.get('prompt')}{_deadline(request)}\n")
        given = request.get("default", MISSING)  # a server may say what a request takes if not answered
        while True:
            self._asking = asyncio.ensure_future(ask(request.get("schema"), terminal, given))
            try:
                value = await self._asking
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # this watch is ending (Ctrl-C), not just this question
                return  # answered elsewhere (already said) or the run ended
            except EndOfInput:
                terminal.write("\n")
                self.terminal = None
                self._tell(request)
                return
            finally:
                self._asking = None
            self._sending = True
            try:
                run = await self.client.respond(self.run_id, request_id, value)
            except InvalidInput as exc:
                terminal.write(f"  not accepted: {exc.message}\n")
                given = value
                continue
            except Conflict:
                terminal.write("  someone else answered first; watching on\n")
                return
            except RunNotFound as exc:
                terminal.write(f"  {exc.message}\n")
                return
            except ServerError as exc:  # e.g. overloaded: the same answer may be taken later
                terminal.write(f"  not sent ({exc}); answer again\n")
                given = value
                continue
            finally:
                self._sending = False
            terminal.write(f"  sent; the run is {run.get('status')}\n")
            return

    async def _whole(self, request: Request) -> Request:
        """The request as its input_requested event holds it (the snapshot had cut it short)."""
        async for event in self.client.subscribe(self.run_id):
            data = event.get("data") or {}
            if event["event"] == "input_requested" and data.get("request_id") == request["request_id"]:
                return {**data, "step": event.get("step")}
            if event["seq"] >= self._known_until:
                break
        return request

    async def close(self) -> None:
        """The watch is over: an answer on its way is let through (and its outcome shown);
        a question still on the screen is called off."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        if self._sending:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), SEND_PATIENCE)
        if self._asking is not None and self.terminal is not None:
            self.terminal.write("\n")  # what comes next does not go on the question's line
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
