"""What every benchmark script shares: child processes that are always cleaned up, servers,
the result rows (figure next to its baseline), and printing them.

Every child process is started from the main thread with PR_SET_PDEATHSIG, so that even a
`kill -9` of the benchmark does not leave servers or client processes behind; a normal end,
an exception, Ctrl-C or SIGTERM stop them (SIGTERM, then SIGKILL) and remove the temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

PYTHON = sys.executable
TERMINAL = frozenset({"run_completed", "run_failed", "run_cancelled"})
FLOWS = str(BENCH / "flows.py")
# websockets.connect options of the benchmark clients: a short close_timeout, so that a teardown
# after an interruption does not wait 10 s a socket behind pipelined work.
WS_KW: dict[str, Any] = {"max_size": None, "ping_interval": None, "open_timeout": 10, "close_timeout": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


try:
    _LIBC: Any = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here, not in the forked child
except OSError:
    _LIBC = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the child gets SIGTERM if we die


class Child:
    """A child process of the benchmark, stopped by `stop_all()` whatever happens."""

    live: list[Child] = []

    def __init__(self, name: str, cmd: list[str], log: Path, *, pipes: bool = False) -> None:
        self.name = name
        self.log_path = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
        Child.live.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 2000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        if self in Child.live:
            Child.live.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for child in list(cls.live):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {child.name}: {exc}", file=sys.stderr)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class HttpServer(Child):
    """A child that serves HTTP on 127.0.0.1:port with GET /healthz."""

    def __init__(self, name: str, cmd: list[str], log: Path, port: int) -> None:
        super().__init__(name, cmd, log)
        self.port = port

    def ws_url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def ready(self, timeout: float = 30) -> HttpServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if await asyncio.to_thread(_healthy, f"http://127.0.0.1:{self.port}/healthz"):
                return self
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become healthy: {self.tail()}")


async def start_runcast(
    workdir: Path, name: str, *flags: str, workflows: bool = True, db: str | None = None
) -> HttpServer:
    """`python -m server` on a fresh SQLite file (or on `db`, e.g. a postgresql:// URL), quiet,
    without the per-connection start limit (so the benchmark measures the server, not the
    limiter), with bench/flows.py loaded."""
    port = free_port()
    cmd = [PYTHON, "-m", "server", "--port", str(port), "--db", db or str(workdir / f"{name}.db")]
    cmd += ["--log-level", "warning", "--starts-per-second", "1000000", "--retention-days", "0"]
    if workflows:
        cmd += ["--workflows", FLOWS]
    server = HttpServer(name, [*cmd, *flags], workdir / f"{name}.log", port)
    return await server.ready()


async def start_bare(workdir: Path, name: str = "bare") -> HttpServer:
    """bench/bare.py: bare Starlette WebSocket endpoints on uvicorn, configured as runcast's."""
    port = free_port()
    server = HttpServer(name, [PYTHON, str(BENCH / "bare.py"), "--port", str(port)], workdir / f"{name}.log", port)
    return await server.ready()


class Worker(Child):
    """A child that takes one JSON command per stdin line and answers JSON lines on stdout."""

    def __init__(self, name: str, cmd: list[str], log: Path) -> None:
        super().__init__(name, cmd, log, pipes=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        self._out: IO[bytes] = self.proc.stdout

    def send(self, msg: dict[str, Any]) -> None:
        self._in.write(json.dumps(msg).encode() + b"\n")
        self._in.flush()

    async def recv(self, timeout: float = 120) -> dict[str, Any]:
        line = await asyncio.wait_for(asyncio.to_thread(self._out.readline), timeout)
        if not line:
            raise RuntimeError(f"{self.name} ended: {self.tail()}")
        msg: dict[str, Any] = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.name}: {msg['error']}")
        return msg


def start_workers(workdir: Path, role: str, count: int) -> list[Worker]:
    return [
        Worker(f"{role}{i}", [PYTHON, str(BENCH / "clients.py"), role], workdir / f"{role}{i}.log")
        for i in range(count)
    ]


# ---- results ----------------------------------------------------------------------------


@dataclass
class Row:
    """One figure: its value per round, the baseline measured right next to it in that round."""

    figure: str  # "1a", "2b", ...
    what: str
    unit: str
    values: list[float]
    baseline: str
    baselines: list[float]
    goal: str = ""
    met: bool | None = None  # None: no goal on this row
    why: str = ""  # when not met: the measured reason
    note: str = ""
    lower_is_better: bool = False

    @property
    def value(self) -> float:
        return median(self.values) if self.values else math.nan

    @property
    def base(self) -> float:
        return median(self.baselines) if self.baselines else math.nan

    @property
    def ratios(self) -> list[float]:
        return [v / b if b else math.nan for v, b in zip(self.values, self.baselines, strict=False)]

    @property
    def ratio(self) -> float:
        return median(self.ratios) if self.ratios else math.nan


SLOPE_LIMIT = 1.10  # a log-log slope above this is called worse than linear (noise allowance)


@dataclass
class Scale:
    """A scaling curve: one line per size, runcast next to a baseline measured at that size."""

    title: str
    size_name: str
    columns: list[str]
    lines: list[list[str]] = field(default_factory=list)
    verdict: str = ""
    met: bool | None = None

    def judge(self, what: str, k: float, shown: str = "", more: str = "") -> None:
        """Met when `what` grows no worse than linearly with the size: its log-log slope `k`
        is at most SLOPE_LIMIT. `shown` replaces the slope in the text (e.g. one per system)."""
        self.met = k <= SLOPE_LIMIT
        self.verdict = (
            f"{what}, log-log slope {shown or f'{k:.2f}'} (1.0 = linear; at most {SLOPE_LIMIT:g} passes){more}"
        )


@dataclass
class Report:
    script: str
    rows: list[Row] = field(default_factory=list)
    scales: list[Scale] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    quick: bool = False


def fmt(value: float, unit: str = "") -> str:
    if value != value:  # nan
        return "n/a"
    if unit in ("ms", "KB", "x") or abs(value) < 100:
        text = f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    else:
        text = f"{value:,.0f}"
    return f"{text} {unit}".strip()


def met_text(met: bool | None) -> str:
    return "-" if met is None else ("**met**" if met else "**not met**")


def markdown_rows(rows: Sequence[Row]) -> list[str]:
    out = [
        "| fig | measured | goal | runcast | baseline | baseline value | ratio | per round | met? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rounds = " ".join(f"{x:.2f}" for x in r.ratios)
        out.append(
            f"| {r.figure} | {r.what} | {r.goal or '-'} | {fmt(r.value, r.unit)} | {r.baseline} | "
            f"{fmt(r.base, r.unit)} | {fmt(r.ratio, 'x')} | {rounds} | {met_text(r.met)} |"
        )
    return out


def markdown_scale(scale: Scale) -> list[str]:
    out = [f"**{scale.title}**", "", "| " + " | ".join([scale.size_name, *scale.columns]) + " |"]
    out.append("|" + "---|" * (len(scale.columns) + 1))
    out += ["| " + " | ".join(line) + " |" for line in scale.lines]
    if scale.verdict:
        out += ["", f"{scale.verdict} ({met_text(scale.met)})"]
    return out


def print_report(report: Report) -> None:
    print()
    print(f"## {report.script}: {report.seconds:.0f} s{' (--quick)' if report.quick else ''}")
    print()
    if report.rows:
        print("\n".join(markdown_rows(report.rows)))
        print()
    for row in report.rows:
        if row.met is False and row.why:
            print(f"- {row.figure} not met: {row.why}")
        if row.note:
            print(f"- {row.figure}: {row.note}")
    for scale in report.scales:
        print()
        print("\n".join(markdown_scale(scale)))
    if report.notes:
        print()
        for note in report.notes:
            print(f"- {note}")
    print(flush=True)


JSON_MARK = "@@runcast-bench-json@@ "  # `--json -`: the report as the last line of stdout, after this


def save_report(report: Report, path: str | None) -> None:
    if path == "-":
        print(JSON_MARK + json.dumps(asdict(report)), flush=True)
    elif path:
        Path(path).write_text(json.dumps(asdict(report), indent=1))


def load_report(text: str) -> Report:
    data = json.loads(text)
    rows = [Row(**r) for r in data.pop("rows")]
    scales = [Scale(**s) for s in data.pop("scales")]
    return Report(rows=rows, scales=scales, **data)


def growth(sizes: Sequence[float], seconds: Sequence[float]) -> list[float]:
    """Per step of size, how the time grew compared with linear (1.0 = exactly linear,
    below 1 = better than linear)."""
    out = [math.nan]
    for i in range(1, len(sizes)):
        out.append((seconds[i] / seconds[i - 1]) / (sizes[i] / sizes[i - 1]))
    return out


def slope(sizes: Sequence[float], costs: Sequence[float]) -> float:
    """The least-squares slope of log(cost) against log(size): 1.0 = cost grows linearly with
    size, 2.0 = quadratically. Uses every point, so one noisy measurement weighs less than in
    the step-by-step ratios."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(c) for c in costs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else math.nan


# ---- profiles -----------------------------------------------------------------------------


class Profile:
    """`py-spy record` of one process while a scenario runs (with --profile DIR).

    Scripts run their scenarios once more under it, after the measured rounds, so that the
    sampling never slows a reported figure. Writes DIR/NAME.txt (collapsed stacks, one root
    frame per thread) and DIR/NAME.top.txt: how busy each thread was, and the functions with
    the most samples on top of the stack (self) and anywhere in it (total)."""

    RATE = 200

    def __init__(self, directory: str | None, name: str, pid: int) -> None:
        self.child: Child | None = None
        self.out = Path(directory) / f"{name}.txt" if directory else None
        self.began = 0.0
        spy = Path(PYTHON).parent / "py-spy"
        if self.out is None or not spy.exists():
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", str(self.RATE), "--threads"]
        cmd += ["--function", "--output", str(self.out)]
        self.child = Child(f"py-spy {name}", cmd, self.out.with_suffix(".log"))

    def __enter__(self) -> Profile:
        if self.child is not None:
            time.sleep(0.5)  # py-spy attaches
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.child is None or self.out is None:
            return
        seconds = time.perf_counter() - self.began
        self.child.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.child.proc.wait(20)
        self.child.stop()
        if self.out.exists():
            self.out.with_suffix(".top.txt").write_text(summarize_profile(self.out, seconds * self.RATE))


# Leaf frames of threads that wait for work (py-spy does not always see them as idle).
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "Condition.wait (threading.py", "Event.wait (threading.py")


def summarize_profile(path: Path, ticks: float = 0.0, top: int = 30) -> str:
    """Per thread: share of the time it was busy (samples / ticks); then the top functions.
    Samples of idle pool threads (waiting for work) are left out."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    threads: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        samples += n
        thread = frames[0]
        if any("aiosqlite/core.py" in f for f in frames):
            thread += " aiosqlite"
        elif any("run_forever" in f for f in frames):
            thread += " event loop"
        elif "runcast-step" in thread or "ThreadPoolExecutor" in thread:
            thread = "step threads (all)"
        threads[thread] = threads.get(thread, 0) + n
        frames = frames[1:]
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    lines = [f"{samples} samples" + (f" over {ticks:.0f} ticks" if ticks else "")]
    for thread, n in sorted(threads.items(), key=lambda kv: -kv[1]):
        busy = f", busy {100 * n / ticks:.0f}% of the time" if ticks else ""
        lines.append(f"  {100 * n / max(samples, 1):5.1f}% of samples{busy}: {thread}")
    for title, table in (("self", own), ("total", total)):
        lines.append(f"-- top {top} by {title} (% of all samples) --")
        for frame, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"{100 * n / max(samples, 1):5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


# ---- running a script --------------------------------------------------------------------


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a few seconds, a smoke check")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-': to stdout)")
    p.add_argument("--profile", metavar="DIR", help="record the server with py-spy during the main figures")
    return p


def run_script(
    name: str, args: argparse.Namespace, main: Callable[[argparse.Namespace, Path, Report], Awaitable[None]]
) -> int:
    """Run `main(args, workdir, report)`; print and save the report; always clean up.

    SIGTERM cancels the main task as Ctrl-C does, so every `finally` runs in order."""
    workdir = Path(tempfile.mkdtemp(prefix=f"runcast-bench-{name}-"))
    report = Report(script=name, quick=args.quick)
    began = time.perf_counter()

    async def cancellable() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await main(args, workdir, report)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            # Before asyncio.run waits for its worker threads: a thread may be blocked reading a
            # child's stdout (Worker.recv), and only ends when that child does.
            Child.stop_all()

    try:
        asyncio.run(cancellable())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"{name}: interrupted; stopping child processes, removing temp files", file=sys.stderr)
        return 130
    finally:
        Child.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    report.seconds = time.perf_counter() - began
    if args.quick:  # a smoke check: sizes too small to judge a goal or a curve
        for row in report.rows:
            row.met, row.why = None, ""
        for scale in report.scales:
            scale.met = None
            scale.verdict = f"(--quick: not judged) {scale.verdict}"
    print_report(report)
    save_report(report, args.json)
    return 0


def over_budget(began: float, budget: float) -> bool:
    return time.perf_counter() - began > budget


def env_note() -> str:
    return f"nproc {os.cpu_count()}, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}"
