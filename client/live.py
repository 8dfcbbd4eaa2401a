"""The live terminal view of `run` and `watch`: steps with state and duration, progress
bars, the tool calls of agent steps, the streamed text, and the final output, redrawn as
events arrive and on a clock, so that running steps' times move and a silence shows (rich)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Any

import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from server.fold import fold, new_run, new_step

from .view import RECONNECTING, View, until_text

STATE_STYLE = {
    "running": "yellow",
    "waiting": "bold magenta",
    "sleeping": "blue",
    "completed": "green",
    "failed": "red",
    "skipped": "dim",
    "pending": "dim",
}
TEXT_TAIL = 2000  # characters of streamed text kept on screen
CALL_TEXT = 60  # characters of a tool call's arguments, and of its result or error, shown
CALL_STATE = {"tool_call_started": "running", "tool_call_completed": "completed", "tool_call_failed": "failed"}
REDRAWS_PER_SECOND = 12  # at most: events between two ticks are drawn together
IDLE_REDRAW_SECONDS = 0.25  # with no event, the clock still redraws (running steps' times, the silence)
QUIET_SECONDS = 10  # a running run with no event for this long says so (a long step, or a stalled server)


def _short(value: Any, limit: int = CALL_TEXT) -> str:
    """A value on one line, as JSON unless a string, cut to `limit` characters."""
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(start: str | None, end: str | None) -> str:
    if not start:
        return ""
    begin = datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
    finish = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp() if end else time.time()
    return f"{max(0.0, finish - begin):.1f}s"


def _since(start: str | None) -> str:
    """When a waiting step began to wait, as a local time of day: right on a frame that stays on
    screen while its question is asked below it (a duration there would stand still)."""
    if not start:
        return ""
    return "since " + datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")


class LiveView(View):
    """A redrawn screen for people at a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console()
        self.run_id = ""
        self.workflow = ""
        self.status = "running"
        self.run: dict[str, Any] | None = None  # the run as the server keeps it, folded from its events
        self.steps: dict[str, dict[str, Any]] = {}
        self.text: dict[str, str] = {}
        self.result: RenderableType | None = None
        self.notice = ""
        self._live: Live | None = None
        self._held = False  # a question is being asked below the last frame: no redrawing
        self._heard = time.monotonic()  # when the last event (or connection change) came
        self._lost_at: float | None = None  # when the connection was lost, while it is
        self._clock: asyncio.Task[None] | None = None
        self._dirty = False  # changed since last drawn
        self._drawn = 0.0  # when last drawn (monotonic)

    def _start_live(self) -> None:
        if self._live is None and not self._held:
            # Drawn afresh at each tick of the clock, on the event loop (rich's own refresh
            # thread would read the steps while events change them).
            self._live = Live(get_renderable=self._render, console=self.console, auto_refresh=False)
            self._live.start(refresh=True)
            with contextlib.suppress(RuntimeError):  # no loop (a view drawn from plain code): no clock
                self._clock = self._clock or asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1 / REDRAWS_PER_SECOND)
            if self._dirty or time.monotonic() - self._drawn >= IDLE_REDRAW_SECONDS:
                self._redraw()

    def _changed(self) -> None:
        """Something to show: drawn at the clock's next tick (at once when there is no clock)."""
        self._dirty = True
        if self._clock is None:
            self._redraw()

    def _redraw(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._dirty, self._drawn = False, time.monotonic()

    def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    def hold(self) -> None:
        self.close()  # the last frame stays on screen, the question goes below it
        self._held = True

    def release(self) -> None:
        self._held = False
        self._start_live()

    def started(self, run: dict[str, Any]) -> None:
        self.run_id, self.workflow = run["run_id"], run["workflow"]
        self._start_live()

    def follow(self, run: dict[str, Any]) -> None:
        self.run = {**run, "steps": [dict(st) for st in run.get("steps") or []]}
        self.status = run["status"]

    def event(self, event: dict[str, Any]) -> None:
        self.run_id = event["run_id"]
        kind, step, data = event["event"], event.get("step"), event.get("data") or {}
        ts = event.get("ts")
        if step is not None:
            entry = self.steps.setdefault(step, {"state": "pending", "attempt": 1, "start": None, "end": None})
        self._describe(kind, step, data, ts, entry if step is not None else {})
        if self.run is None:  # no snapshot to start from: the steps are learnt as they come
            self.run = new_run(self.run_id, self.workflow, None, [], None)
        if step is not None and all(st["name"] != step for st in self.run["steps"]):
            self.run["steps"].append(new_step(step))
        if event.get("seq", 0) > self.run["last_seq"]:
            self._take_states(fold(self.run, event))
        self._heard = time.monotonic()
        self._start_live()
        self._changed()

    def _take_states(self, run: dict[str, Any]) -> None:
        """The run's and its shown steps' states, as the server's rules (server/fold.py) make them."""
        self.status = run["status"]
        for st in run["steps"]:
            if st["name"] in self.steps:
                self.steps[st["name"]]["state"] = st["status"]

    def _describe(self, kind: str, step: str | None, data: dict[str, Any], ts: Any, entry: dict[str, Any]) -> None:
        """What the screen shows of an event beyond states: text, calls, asks, the result."""
        match kind:
            case "run_started":
                self.workflow = data.get("workflow", self.workflow)
            case "step_started":
                if entry.get("completed"):  # a loop's next iteration makes new calls; an
                    entry["calls"] = {}  # agent run again keeps those it made (not made again)
                entry.update(attempt=data.get("attempt", 1), start=ts, end=None, progress=None, completed=False)
                for where in [w for w in self.text if w == step or w.startswith(f"{step} · ")]:
                    self.text[where] = ""  # a step run again streams its text from the start
            case "step_output":
                # A coordinating team's member speaks in a panel of its own, named.
                where = f"{step} · {data['agent']}" if "parent_call_id" in data and "agent" in data else step or ""
                self.text[where] = (self.text.get(where, "") + data.get("delta", ""))[-TEXT_TAIL:]
            case "progress":
                entry["progress"] = data
            case "tool_call_started" | "tool_call_completed" | "tool_call_failed":
                call = entry.setdefault("calls", {}).setdefault(str(data.get("call_id")), {"tool": data.get("tool")})
                call.update({k: data[k] for k in ("tool", "args", "result", "error") if k in data})
                if "parent_call_id" in data:  # a coordinating team's member: its calls under its name
                    call["agent"] = data.get("agent")
                call["state"] = CALL_STATE[kind]
            case "input_requested":
                ask = {"prompt": data.get("prompt"), "open": True}
                entry.setdefault("asks", {})[str(data.get("request_id"))] = ask
            case "input_received":
                ask = entry.setdefault("asks", {}).setdefault(str(data.get("request_id")), {"prompt": ""})
                ask.update(open=False, value=data.get("value"))
            case "sleep_started":
                entry["sleep"] = data.get("until")
            case "sleep_ended":
                entry.pop("sleep", None)
            case "step_completed":
                entry.update(end=ts, completed=True)
            case "step_skipped":
                entry.update(end=ts)
            case "step_failed":
                entry.update(end=ts, error=data.get("error"))
            case "run_resumed":
                self.notice = f"resumed after a {data.get('reason')} from step {data.get('from_step')}"
            case "run_completed":
                output = data.get("output")
                body = output if isinstance(output, str) else orjson.dumps(output, option=orjson.OPT_INDENT_2).decode()
                self.result = Panel(Text(body), title="output", border_style="green")
            case "run_failed":
                self.result = Panel(Text(str(data.get("error"))), title="error", border_style="red")
            case "run_cancelled":
                self.result = Panel(Text("the run was cancelled"), border_style="yellow")

    def connection(self, state: str) -> None:
        self._heard = time.monotonic()
        self._lost_at = self._heard if state == "reconnecting" else None
        self._changed()

    def note(self, text: str) -> None:
        self.close()
        super().note(text)

    @staticmethod
    def _call_row(call: dict[str, Any]) -> tuple[Text, Text, str, str, Text]:
        """A tool call as a row under its step: name, state, then the arguments and how it ended."""
        detail = Text(f"({_short(call.get('args', ''))})", style="dim")
        if "error" in call:
            detail.append(f" ✗ {_short(call['error'])}", style="red")
        elif "result" in call:
            detail.append(f" → {_short(call['result'])}")
        state = call.get("state", "running")
        who = f"{call['agent']} › " if call.get("agent") else ""
        return Text(f"  ↳ {who}{call.get('tool')}"), Text(state, style=STATE_STYLE.get(state, "")), "", "", detail

    @staticmethod
    def _ask_row(ask: dict[str, Any]) -> tuple[Text, Text, str, str, Text]:
        """An input request as a row under its step: the prompt, and the answer once given."""
        if ask.get("open"):
            return (
                Text(f"  ? {ask.get('prompt')}", style="magenta"),
                Text("waiting", style="bold magenta"),
                "",
                "",
                Text(""),
            )
        answer = Text(f"→ {_short(ask.get('value'))}", style="dim")
        return Text(f"  ? {ask.get('prompt')}", style="dim"), Text("answered", style="green"), "", "", answer

    def _render(self) -> RenderableType:
        head = Text.assemble(
            ("run ", "bold"),
            (self.run_id, "cyan"),
            f"  {self.workflow}  ",
            (self.status, STATE_STYLE.get(self.status, "")),
        )
        wake_at = (self.run or {}).get("wake_at")
        if self.status == "sleeping" and wake_at:
            head.append(f" until {until_text(wake_at)}", style="blue")
        table = Table.grid(padding=(0, 2))
        for name, entry in self.steps.items():
            state = entry["state"]
            attempt = f"attempt {entry['attempt']}" if entry["attempt"] > 1 else ""
            progress: RenderableType = ""
            info = entry.get("progress")
            if info and isinstance(info.get("total"), int | float) and info["total"]:
                progress = Group(
                    ProgressBar(total=float(info["total"]), completed=float(info.get("current") or 0), width=30),
                    Text(f"{info.get('current')}/{info.get('total')} {info.get('message', '')}".rstrip()),
                )
            elif info:
                progress = Text(orjson.dumps(info).decode(), style="dim")
            table.add_row(
                Text(name, style="bold"),
                Text(state, style=STATE_STYLE.get(state, "")),
                Text(
                    _since(entry["start"]) if state == "waiting" else _seconds(entry["start"], entry["end"]),
                    style="dim",
                ),
                Text(attempt, style="yellow"),
                progress,
            )
            for call in entry.get("calls", {}).values():
                table.add_row(*self._call_row(call))
            for ask in entry.get("asks", {}).values():
                table.add_row(*self._ask_row(ask))
            if entry.get("sleep"):
                until = Text(f"until {until_text(entry['sleep'])}", style="blue")
                table.add_row(Text("  ⏾ sleep", style="blue"), Text("sleeping", style="blue"), "", "", until)
        parts: list[RenderableType] = [head, table]
        for step, text in self.text.items():
            if text:
                parts.append(Panel(Text(text), title=step, border_style="blue"))
        if self.result is not None:
            parts.append(self.result)
        parts.extend(Text(line, style="bold yellow") for line in (self.notice, self._connection_line()) if line)
        return Group(*parts)

    def _connection_line(self) -> str:
        """What the screen says of the connection: lost for how long, or silent for how long."""
        now = time.monotonic()
        if self._lost_at is not None:
            return f"{RECONNECTING} (lost {now - self._lost_at:.0f}s ago)"
        if self.status == "running" and now - self._heard >= QUIET_SECONDS:
            return f"no event for {now - self._heard:.0f}s (a long step, or a server that stalled)"
        return ""
