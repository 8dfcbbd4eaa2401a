"""How the command line shows runs: JSON lines for scripts, readable lines for people."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any, TextIO

import orjson

# What every view says when the connection drops (and the client reconnects by itself).
RECONNECTING = "connection lost: reconnecting; the events will continue where they left off"
RECONNECTED = "connected again"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(event: dict[str, Any]) -> str | None:
    """An event as one readable line (None for those that show as something else: streamed
    text, the run's start)."""
    kind, data, step = event["event"], event.get("data") or {}, event.get("step")
    match kind:
        case "step_output" | "run_started":
            return None
        case "step_started":
            attempt = data.get("attempt", 1)
            return f"> {step}" + (f" (attempt {attempt})" if attempt > 1 else "")
        case "step_completed":
            return f"  {step} done: {_cut(_json(data.get('output')))}"
        case "step_failed":
            return f"  {step} failed: {data.get('error')}"
        case "step_skipped":
            return f"  {step} skipped ({data.get('reason')})"
        case "progress":
            current, total = data.get("current"), data.get("total")
            bar = ""
            if isinstance(current, int | float) and isinstance(total, int | float) and total > 0:
                filled = int(20 * min(current / total, 1))
                bar = f"[{'#' * filled}{'.' * (20 - filled)}] {current}/{total} "
            return f"  {step} {bar}{data.get('message', '')}".rstrip()
        case "input_requested":
            return f"  {step} is waiting for input: {data.get('prompt')}"
        case "input_received":
            return f"  {step} got its input: {_cut(_json(data.get('value')))}"
        case "sleep_started":
            return f"  {step} is sleeping until {until_text(data.get('until'))}"
        case "sleep_ended":
            return f"  {step} woke up"
        case "run_resumed":
            return f"run resumed after a {data.get('reason')} from step {data.get('from_step')}"
        case "run_completed":
            return f"completed: {_json(data.get('output'))}"
        case "run_failed":
            return f"failed: {data.get('error')}"
        case "run_cancelled":
            return "cancelled"
    return f"{kind}: {_cut(_json(data))}"


def until_text(until: Any, now: float | None = None) -> str:
    """A wire time a sleep ends at, with how long until then: `2026-12-10T09:00:00.000Z (in 2d 3h)`."""
    if not isinstance(until, str):
        return "?"
    try:
        left = datetime.fromisoformat(until).timestamp() - (time.time() if now is None else now)
    except ValueError:
        return until
    if left <= 0:
        return f"{until} (due now)"
    parts: list[str] = []
    rest = int(left)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size or (unit == "s" and not parts):
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return f"{until} (in {' '.join(parts[:2])})"


def prompt_of(request: dict[str, Any], limit: int = 200) -> str:
    """A request's prompt on one line (a snapshot may hold a stand-in for a long one)."""
    prompt = request.get("prompt")
    if not isinstance(prompt, str):
        return "(a long prompt, whole in the run's input_requested event)"
    return _cut(" ".join(prompt.split()), limit)


def open_requests(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The requests a run's snapshot says are open (`waiting_for`; none if it has no such list)."""
    return [r for r in run.get("waiting_for") or [] if isinstance(r, dict)]


def waits_for(run: dict[str, Any]) -> list[str]:
    """What a waiting run waits for, one line per open request."""
    return [
        f"waiting for input at {r.get('step')}: {prompt_of(r)}  (request {r.get('request_id')})"
        for r in open_requests(run)
    ]


class View:
    """What the command line reports; each method gets one thing to show."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def started(self, run: dict[str, Any]) -> None: ...
    def follow(self, run: dict[str, Any]) -> None:
        """The run's snapshot where the events about to come continue it."""

    def event(self, event: dict[str, Any]) -> None: ...
    def snapshot(self, run: dict[str, Any]) -> None: ...
    def runs(self, runs: list[dict[str, Any]]) -> None: ...
    def run_changed(self, run: dict[str, Any]) -> None: ...
    def workflows(self, workflows: list[dict[str, Any]]) -> None: ...
    def schedules(self, schedules: list[dict[str, Any]]) -> None: ...
    def answered(self, request_id: str, run: dict[str, Any]) -> None: ...

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def close(self) -> None:
        """Called once at the end (a live screen draws its last frame)."""

    def hold(self) -> None:
        """Someone is being asked for input at this terminal: stop redrawing until release()."""

    def release(self) -> None:
        """The question is over: show the run again."""

    def connection(self, state: str) -> None:
        if state == "reconnecting":
            self.note(RECONNECTING)


class JsonView(View):
    """One JSON object per line on stdout: events as the server sent them."""

    def _line(self, value: Any) -> None:
        print(_json(value), file=self.out, flush=True)

    def event(self, event: dict[str, Any]) -> None:
        self._line(event)

    def snapshot(self, run: dict[str, Any]) -> None:
        self._line(run)

    def answered(self, request_id: str, run: dict[str, Any]) -> None:
        self._line(run)

    def runs(self, runs: list[dict[str, Any]]) -> None:
        for run in runs:
            self._line(run)

    def run_changed(self, run: dict[str, Any]) -> None:
        self._line(run)

    def workflows(self, workflows: list[dict[str, Any]]) -> None:
        for workflow in workflows:
            self._line(workflow)

    def schedules(self, schedules: list[dict[str, Any]]) -> None:
        for schedule in schedules:
            self._line(schedule)


class TextView(View):
    """Readable lines for a person at a terminal."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        super().__init__(out, err)
        self._streaming = False
        self._streamed: set[str] = set()  # steps whose text was shown as it came

    def _print(self, text: str) -> None:
        if self._streaming:
            print(file=self.out)
            self._streaming = False
        print(text, file=self.out, flush=True)

    def started(self, run: dict[str, Any]) -> None:
        self._print(f"run {run['run_id']} ({run['workflow']}) started{_when(run)}")

    def event(self, event: dict[str, Any]) -> None:
        kind, data, step = event["event"], event.get("data") or {}, event.get("step")
        if kind == "step_output":
            print(data.get("delta", ""), end="", file=self.out, flush=True)
            self._streaming = True
            self._streamed.add(step or "")
        elif kind == "step_completed" and step in self._streamed:
            self._print(f"  {step} done")
        elif (line := describe(event)) is not None:
            self._print(line)

    def snapshot(self, run: dict[str, Any]) -> None:
        self._print(f"run {run['run_id']}  {run['workflow']}  {run['status']}{_when(run)}  last seq {run['last_seq']}")
        for step in run.get("steps") or []:
            self._print(f"  {step['name']:<16} {step['status']:<10} attempts {step['attempts']}")
        for line in waits_for(run):
            self._print(line)
        if run.get("output") is not None:
            self._print(f"output: {_json(run['output'])}")
        if run.get("error") is not None:
            self._print(f"error: {run['error']}")

    def answered(self, request_id: str, run: dict[str, Any]) -> None:
        self._print(f"answered request {request_id}; run {run['run_id']} is now {run['status']}")
        for line in waits_for(run):
            self._print(f"  still {line}")

    def runs(self, runs: list[dict[str, Any]]) -> None:
        for run in runs:
            self._print(f"{run['run_id']}  {run['workflow']:<12} {run['status']:<10} {run['created_at']}")
            for line in waits_for(run):
                self._print(f"    {line}")
        if not runs:
            self._print("no runs")

    def run_changed(self, run: dict[str, Any]) -> None:
        done, total = run.get("steps_done"), run.get("steps_total")
        progress = f"{done}/{total} steps" if isinstance(done, int) and isinstance(total, int) else ""
        step = run.get("current_step")
        where = f"at {step}" if step else (f"error: {run['error']}" if run.get("error") else "")
        self._print(f"{run['run_id']}  {run['workflow']:<12} {run['status']:<10} {progress:<11} {where}".rstrip())
        for line in waits_for(run) if run.get("status") == "waiting" else []:
            self._print(f"    {line}")

    def workflows(self, workflows: list[dict[str, Any]]) -> None:
        for wf in workflows:
            self._print(f"{wf['name']:<12} {' -> '.join(wf['steps'])}")
            if wf.get("description"):
                self._print(f"             {wf['description']}")

    def schedules(self, schedules: list[dict[str, Any]]) -> None:
        if not schedules:
            self._print("no schedules (make one with: schedules --create NAME --workflow W --cron '0 3 * * *')")
        for s in schedules:
            when = f"cron {s['cron']} ({s['timezone']})" if s.get("cron") else f"every {s.get('every')}s"
            self._print(f"{s['name']:<16} {s['workflow']:<12} {when:<28} next {until_text(s.get('next_at'))}")
            last = s.get("last_run_id") or "none yet"
            self._print(f"{'':<16} {s.get('source')}, catchup {s.get('catchup')}, last run {last}")


def _when(run: dict[str, Any]) -> str:
    """`, scheduled for TIME` for a run that waits for its time; its priority when not 0."""
    said = ""
    if run.get("status") == "pending" and run.get("scheduled_for"):
        said += f", scheduled for {run['scheduled_for']}"
    if run.get("status") == "sleeping" and run.get("wake_at"):
        said += f", sleeping until {until_text(run['wake_at'])}"
    if run.get("priority"):
        said += f", priority {run['priority']}"
    return said
