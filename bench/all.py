"""All of runcast's benchmarks, one after the other, then one table of every figure.

    .venv/bin/python bench/all.py            # full: about 8-9 minutes on 2 cores
    .venv/bin/python bench/all.py --quick    # smoke check: about 70 s
    .venv/bin/python bench/all.py --only runs,stream --profile /tmp/profiles

Each script also runs alone (bench/runs.py, stream.py, fanout.py, conns.py, cluster.py, loop.py, auth.py, js.py,
same flags). Every figure is measured next to its baseline in the same run, and the number to read is the
ratio: this machine is shared and noisy. Each script runs in its own process; whatever it
started is stopped, and its temp files removed, even when it fails or is interrupted.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time

from common import (
    BENCH,
    JSON_MARK,
    PYTHON,
    ROOT,
    Report,
    _die_with_parent,
    load_report,
    markdown_rows,
    markdown_scale,
    met_text,
)

SCRIPTS = ("runs", "stream", "fanout", "conns", "cluster", "loop", "auth", "js")


def describe_tree() -> str:
    """The commit measured, and whether server/ differs from it (read-only git calls)."""
    try:
        head = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "server"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "not a git checkout"
    if head.returncode != 0:
        return f"{ROOT} (not a git checkout)"
    state = "server/ has uncommitted changes" if dirty.stdout.strip() else "server/ clean"
    return f"{head.stdout.strip()[:90]} ({state})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke check of every script")
    p.add_argument("--only", default=",".join(SCRIPTS), help=f"comma-separated subset of {','.join(SCRIPTS)}")
    p.add_argument("--profile", metavar="DIR", help="record the server with py-spy during the main figures")
    args = p.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCRIPTS)
    if unknown:
        p.error(f"unknown scripts: {sorted(unknown)}")

    current: list[subprocess.Popen[str]] = []

    def stop(signum: int, frame: object) -> None:
        for proc in current:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    tree = describe_tree()
    load_before = os.getloadavg()[0]
    print(f"runcast benchmarks at {tree}", flush=True)
    began = time.perf_counter()
    reports: list[Report] = []
    failed: list[str] = []
    try:
        for name in chosen:
            cmd = [PYTHON, str(BENCH / f"{name}.py"), "--json", "-"]
            cmd += ["--quick"] if args.quick else []
            cmd += ["--profile", args.profile] if args.profile else []
            print(f"==> {' '.join(cmd[1:])}", flush=True)
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
            current[:] = [proc]
            report: Report | None = None
            assert proc.stdout is not None
            for line in proc.stdout:  # passed through, but for the report itself
                if line.startswith(JSON_MARK):
                    report = load_report(line[len(JSON_MARK) :])
                else:
                    print(line, end="", flush=True)
            code = proc.wait()
            if code != 0 or report is None:
                failed.append(f"{name} (exit {code})")
                continue
            reports.append(report)
    except KeyboardInterrupt:
        for proc in current:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("interrupted", file=sys.stderr)
        return 130

    seconds = time.perf_counter() - began
    print()
    print(f"# All figures ({'--quick, ' if args.quick else ''}{seconds:.0f} s, {time.strftime('%Y-%m-%d %H:%M %Z')})")
    print()
    rows = [row for report in reports for row in report.rows]
    print("\n".join(markdown_rows(rows)))
    print()
    for row in rows:
        if row.met is False and row.why:
            print(f"- {row.figure} not met: {row.why}")
    for report in reports:
        for scale in report.scales:
            print()
            print("\n".join(markdown_scale(scale)))
    print()
    goals = [(r.figure, r.met) for r in rows if r.met is not None]
    goals += [(s.title.split(":")[0], s.met) for rep in reports for s in rep.scales if s.met is not None]
    if args.quick:
        print("goals: not judged (--quick sizes are a smoke check)")
    elif not goals:
        print("goals: none among these figures")
    else:
        print("goals: " + ", ".join(f"{fig} {met_text(met)}" for fig, met in goals))
    print(f"scripts: {', '.join(f'{r.script} {r.seconds:.0f} s' for r in reports)}; total {seconds:.0f} s")
    print(f"tree: {tree}")
    print(f"machine: {platform.platform()}, nproc {os.cpu_count()}, python {platform.python_version()}")
    print(f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
