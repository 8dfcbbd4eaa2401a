"""`/workflows/ws`: the WebSocket protocol of Agno's AgentOS (contract 10), so that Agno's
own clients work unchanged against the workflows runcast serves.

Actions (`{"action": ...}`): `authenticate`, `ping`, `start-workflow`, `reconnect`,
`continue-workflow`. Every event comes from the store (server/agentos.py says what each
becomes), so `reconnect` with `last_event_index` is exact after restarts, through any node
of a cluster, and for finished runs too. Every operation goes through `Commands`, so who
may do what is the same as on `/ws`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..agentos import agentos_id, to_agentos
from ..commands import Caller, Commands
from ..identities import ANYONE
from ..live import Subscription
from ..protocol import RuncastError, StartOptions
from ..vocabulary import CloseCode
from ..workflow import FINISHED
from .limits import Quotas, check_start_rate
from .sse import FrameQueue

log = logging.getLogger("runcast.agentos")

_STATUS = {"completed": "COMPLETED", "failed": "ERROR", "cancelled": "CANCELLED"}  # AgentOS's RunStatus
STUCK_SECONDS = 30.0  # a client that takes nothing this long stops being followed


class AgentOsSocket:
    """One `/workflows/ws` connection."""

    def __init__(self, commands: Commands, websocket: WebSocket, quotas: Quotas) -> None:
        self.commands = commands
        self.ws = websocket
        self.quotas = quotas
        self._starts = quotas.starts(None)  # this socket's own, while it has no `sub` (as on /ws)
        self.caller: Caller | None = None if commands.auth.enabled else Caller("ws", ANYONE)
        self._sending = asyncio.Lock()
        self._follows: dict[str, asyncio.Task[None]] = {}

    async def close(self, code: int) -> None:
        """Close the socket (a stop: 1001), ending what it follows."""
        for task in self._follows.values():
            task.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close(code)

    async def send(self, message: dict[str, Any]) -> None:
        async with self._sending:
            await self.ws.send_text(orjson.dumps(message, default=str).decode())

    async def error(self, text: str) -> None:
        await self.send({"event": "error", "error": text})

    async def serve(self) -> None:
        await self.ws.accept()
        needs = self.caller is None
        hello = "Connected to runcast. Please authenticate to continue." if needs else "Connected to runcast."
        await self.send({"event": "connected", "message": hello, "requires_auth": needs})
        try:
            while True:
                text = await self.ws.receive_text()
                try:
                    message = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    await self.error(f"not JSON: {exc}")
                    continue
                if not isinstance(message, dict):
                    await self.error('a message is a JSON object with an "action"')
                    continue
                try:
                    await self._act(message)
                except RuncastError as exc:
                    await self.error(exc.message)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in self._follows.values():
                task.cancel()

    async def _act(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action == "authenticate":
            await self._authenticate(message.get("token"))
        elif self.caller is None:
            await self.send({"event": "auth_required", "error": "Authentication required. Send authenticate action."})
        elif action == "ping":
            await self.send({"event": "pong"})
        elif action == "start-workflow":
            await self._start(message, self.caller)
        elif action == "reconnect":
            await self._reconnect(message, self.caller)
        elif action == "continue-workflow":
            await self._continue(message, self.caller)
        else:
            known = "authenticate, ping, start-workflow, reconnect, continue-workflow"
            await self.error(f"unknown action {action!r}; the actions are {known}")

    async def _authenticate(self, token: Any) -> None:
        if not isinstance(token, str) or not token:
            await self.send({"event": "auth_error", "error": "Token is required"})
            return
        try:
            identity = self.commands.auth.identify(token)
        except RuncastError as exc:
            await self.send({"event": "auth_error", "error": exc.message})
            return
        self.caller = Caller("ws", identity)
        key = self.quotas.key(identity.sub)
        self._starts = self.quotas.starts(key) if key is not None else self._starts
        await self.send({"event": "authenticated", "message": "Authentication successful. You can now send commands."})

    def _workflow(self, workflow_id: Any) -> str:
        """The runcast name of the workflow an AgentOS id (or a name) names."""
        names = self.commands.runtime.engine.workflows
        for name in names:
            if workflow_id in (name, agentos_id(name)):
                return name
        known = ", ".join(sorted(agentos_id(n) for n in names))
        raise RuncastError(f"Workflow {workflow_id} not found; the workflows are {known}")

    async def _start(self, message: dict[str, Any], caller: Caller) -> None:
        name = self._workflow(message.get("workflow_id"))
        check_start_rate(self._starts)  # --starts-per-second, as on /ws
        run, _ = await self.commands.start(caller, name, message.get("message"), None, StartOptions())
        self._follow(run["run_id"], name, message.get("session_id"), 0)

    async def _reconnect(self, message: dict[str, Any], caller: Caller) -> None:
        run_id = message.get("run_id")
        if not isinstance(run_id, str):
            await self.error("run_id is required for subscription")
            return
        run = await self.commands.follow(caller, run_id)
        last = message.get("last_event_index")
        after = last + 1 if isinstance(last, int) and not isinstance(last, bool) and last >= 0 else 0
        total = run["last_seq"]
        if run["status"] in FINISHED:
            note = f"Run {run['status']}. Replaying the events after event_index {after - 1}."
            status = _STATUS[run["status"]]
            await self.send(
                {"event": "replay", "run_id": run_id, "status": status, "total_events": total, "message": note}
            )
            self._follow(run_id, run["workflow"], message.get("session_id"), after)
            return
        missed = max(0, total - after)
        if missed:
            note = f"Catching up on {missed} missed events."
            await self.send(
                {
                    "event": "catch_up",
                    "run_id": run_id,
                    "status": "running",
                    "missed_events": missed,
                    "current_event_count": total,
                    "message": note,
                }
            )
        subscribed = {
            "event": "subscribed",
            "run_id": run_id,
            "status": "running",
            "current_event_count": total,
            "message": "Subscribed to workflow run. You will receive new events as they occur.",
        }
        if not missed:
            await self.send(subscribed)
        self._follow(run_id, run["workflow"], message.get("session_id"), min(after, total), then=(total, subscribed))

    async def _continue(self, message: dict[str, Any], caller: Caller) -> None:
        """Answer a run that waits, from AgentOS's `step_requirements` (each: `step_id`, the
        request, or `step_name`; `confirmed` or `user_input`), and follow it on."""
        run_id = message.get("run_id")
        if not isinstance(run_id, str):
            await self.error("run_id is required")
            return
        run = await self.commands.get_run(caller, run_id)
        for need in message.get("step_requirements") or []:
            if not isinstance(need, dict):
                continue
            request = next(
                (
                    w
                    for w in run.get("waiting_for") or []
                    if need.get("step_id") in (w["request_id"], None) and need.get("step_name") in (w.get("step"), None)
                ),
                None,
            )
            if request is None:
                await self.error(f"Run {run_id} does not wait for {need.get('step_id') or need.get('step_name')}")
                return
            value = need["confirmed"] if "confirmed" in need else need.get("user_input")
            run = await self.commands.respond(caller, run_id, request["request_id"], value)
        if run_id not in self._follows:  # (this socket may follow the run already: it goes on)
            self._follow(run_id, run["workflow"], message.get("session_id"), run["last_seq"])

    def _follow(
        self, run_id: str, workflow: str, session_id: Any, after: int, then: tuple[int, dict[str, Any]] | None = None
    ) -> None:
        old = self._follows.pop(run_id, None)
        if old is not None:
            old.cancel()
        task = asyncio.create_task(self._deliver(run_id, workflow, session_id, after, then))
        self._follows[run_id] = task
        task.add_done_callback(
            lambda done: self._follows.pop(run_id, None) if self._follows.get(run_id) is done else None
        )

    async def _deliver(
        self, run_id: str, workflow: str, session_id: Any, after: int, then: tuple[int, dict[str, Any]] | None
    ) -> None:
        """Every event of the run with seq > after, as AgentOS events, then live ones to the
        end; `then`: (seq, message) sent right after the event of that seq."""
        session = session_id if isinstance(session_id, str) else None
        queue = FrameQueue()
        broker = self.commands.runtime.broker
        sub = Subscription(broker, run_id, after, queue.put)
        broker.subscribe(sub, lambda _sub: queue.end())
        try:
            while (chunk := await queue.get(None)) is not None:
                for frame in chunk:
                    event = orjson.loads(frame)
                    await asyncio.wait_for(self.send(to_agentos(event, workflow, session)), STUCK_SECONDS)
                    if then is not None and event["seq"] == then[0]:
                        await self.send(then[1])
        except (WebSocketDisconnect, RuntimeError, TimeoutError, OSError):
            pass
        finally:
            sub.stop()


def agentos_endpoint(commands: Commands, quotas: Quotas, open_sockets: set[Any], room: Any) -> Any:
    """The endpoint; its sockets are kept in `open_sockets` (closed with /ws's at a stop) and
    admitted while `room()` (--max-connections, counted with /ws's)."""

    async def endpoint(websocket: WebSocket) -> None:
        if not room():
            await websocket.accept()
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "too many connections; try again later")
            return
        socket = AgentOsSocket(commands, websocket, quotas)
        open_sockets.add(socket)
        try:
            await socket.serve()
        except Exception:  # one connection's bug must not reach uvicorn's loop
            log.exception("a /workflows/ws connection failed")
        finally:
            open_sockets.discard(socket)

    return endpoint
