"""`python -m client` (also `runcast`): start, watch and inspect runs from a terminal or a script.

Exit codes: 0 completed, 1 failed, 2 usage or connection error, 3 cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import orjson

from .client import DEFAULT_URL, Client
from .errors import RuncastClientError
from .live import LiveView
from .servers import split_urls
from .view import JsonView, TextView, View

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 3
EXIT_BY_STATUS = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}


def urls(text: str) -> list[str]:
    """One --url value: a URL, or several separated by commas."""
    return list(split_urls(text))


def _common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        action="extend",
        type=urls,
        default=default(None),  # filled in by parse_args: a default list would be extended, not replaced
        help="server /ws URL; repeat it or separate with commas for several servers (RUNCAST_URL)",
    )
    parser.add_argument("--token", default=default(os.environ.get("RUNCAST_TOKEN")), help="token (RUNCAST_TOKEN)")
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="one JSON object per line (the default when output is not a terminal)",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m client", description="Start, watch and inspect runcast runs.")
    _common(parser, True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _common(p, False)
        return p

    p = command("run", "start a workflow and watch it to the end")
    p.add_argument("workflow")
    p.add_argument("--input", default=None, help="JSON input, or @file.json")
    p.add_argument("--run-id", default=None, help="your own run id (makes the start idempotent)")
    p.add_argument("--cancel-on-interrupt", action="store_true", help="Ctrl-C cancels the run instead of detaching")
    p = command("watch", "watch a run from a seq on")
    p.add_argument("run_id")
    p.add_argument("--after", type=int, default=0, help="last seq already seen (default 0: from the start)")
    p.add_argument("--cancel-on-interrupt", action="store_true", help="Ctrl-C cancels the run instead of detaching")
    p = command("poll", "print a run's snapshot")
    p.add_argument("run_id")
    p = command("runs", "list runs, newest first (or, with --watch, print each change as it happens)")
    p.add_argument("--workflow", default=None)
    p.add_argument("--status", default=None, help="pending, running, completed, failed, cancelled, ...")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--watch", action="store_true", help="then print one line per change of a run, until Ctrl-C")
    command("workflows", "list the workflows the server knows")
    p = command("cancel", "cancel a run")
    p.add_argument("run_id")
    args = parser.parse_args(argv)
    try:
        args.url = args.url or urls(os.environ.get("RUNCAST_URL") or DEFAULT_URL)
    except ValueError as exc:
        parser.error(f"RUNCAST_URL: {exc}")
    return args


def read_input(text: str | None) -> Any:
    """--input: JSON text, or @path to a JSON file."""
    if text is None:
        return None
    if text.startswith("@"):
        with open(text[1:], "rb") as f:
            return orjson.loads(f.read())
    return orjson.loads(text)


async def _watch(client: Client, run_id: str, after: int, view: View, cancel_on_interrupt: bool) -> int:
    status = "running"
    last = after
    try:
        async for event in client.subscribe(run_id, after):
            last = event["seq"]
            view.event(event)
            status = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled"}.get(
                event["event"], status
            )
    except asyncio.CancelledError:  # Ctrl-C
        if cancel_on_interrupt:
            await client.cancel(run_id)
            view.note(f"cancel requested for run {run_id}")
            return EXIT_CANCELLED
        view.note(f"detached; resume with: python -m client watch {run_id} --after {last}")
        return 130
    return EXIT_BY_STATUS.get(status, EXIT_FAILED)


async def _watch_runs(client: Client, args: argparse.Namespace, view: View) -> int:
    """`runs --watch`: one line per change of a run (after a reconnect, the changes missed)."""
    try:
        async for run in client.subscribe_runs(args.workflow, args.status):
            view.run_changed(run)
    except asyncio.CancelledError:  # Ctrl-C
        return EXIT_OK
    return EXIT_OK


async def _main(args: argparse.Namespace) -> int:
    json_mode = args.json or not sys.stdout.isatty()
    view: View = JsonView() if json_mode else LiveView() if args.command in ("run", "watch") else TextView()
    try:
        return await _command(args, view)
    finally:
        view.close()


async def _command(args: argparse.Namespace, view: View) -> int:
    async with Client(args.url, args.token, on_state=view.connection) as client:
        match args.command:
            case "run":
                started = await client.start(args.workflow, read_input(args.input), run_id=args.run_id)
                view.started(started)
                return await _watch(client, started["run_id"], 0, view, args.cancel_on_interrupt)
            case "watch":
                return await _watch(client, args.run_id, args.after, view, args.cancel_on_interrupt)
            case "poll":
                run = await client.poll(args.run_id)
                view.snapshot(run)
                return EXIT_BY_STATUS.get(run["status"], EXIT_OK)
            case "runs" if args.watch:
                return await _watch_runs(client, args, view)
            case "runs":
                runs, _ = await client.list_runs(args.workflow, args.status, args.limit)
                view.runs(runs)
            case "workflows":
                view.workflows(await client.list_workflows())
            case "cancel":
                view.snapshot(await client.cancel(args.run_id))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except orjson.JSONDecodeError as exc:
        print(f"--input is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuncastClientError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, for scripts and people
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
