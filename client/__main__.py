"""`python -m client` (also `runcast`): start, watch, answer and inspect runs from a terminal or a script.

Exit codes: 0 completed, 1 failed, 2 usage or connection error, 3 cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
from typing import Any

import orjson

from .client import DEFAULT_URL, Client
from .errors import RuncastClientError
from .live import LiveView
from .prompter import Prompter
from .servers import split_urls
from .terminal import Terminal
from .view import JsonView, TextView, View, open_requests, prompt_of

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 3
EXIT_BY_STATUS = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit 2, one line to stderr)."""


def program() -> str:
    """How the user called us, for the commands we suggest (and --help's usage line): as
    they can type it again in the same shell, where the venv may not be active."""
    if os.path.basename(sys.argv[0]) == "runcast":
        script = os.path.abspath(sys.argv[0])
        return "runcast" if shutil.which("runcast") == script else _shown_path(script)
    python = shutil.which("python")
    same = python is not None and os.path.abspath(python) == os.path.abspath(sys.executable)
    return f"{'python' if same else _shown_path(sys.executable)} -m client"


def _shown_path(path: str) -> str:
    """`path` relative to the current folder when it is inside it (`.venv/bin/python`),
    quoted for a shell."""
    relative = os.path.relpath(path)
    return shlex.quote(relative if not relative.startswith("..") else path)


def urls(text: str) -> list[str]:
    """One --url value: a URL, or several separated by commas."""
    try:
        return list(split_urls(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


NO_INPUT_HELP = "do not ask at the terminal when the run waits for input; print the respond command instead"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program(), description="Start, watch and inspect runcast runs.")
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
    p.add_argument("--delay", type=float, default=None, help="start no earlier than this many seconds from now")
    p.add_argument("--start-at", default=None, help="start no earlier than this ISO 8601 time (UTC unless it says)")
    p.add_argument("--priority", type=int, default=None, help="-100..100: among waiting runs, higher starts first")
    p.add_argument("--concurrency-key", default=None, help="at most the workflow's limit of runs with this key at once")
    p.add_argument("--cancel-on-interrupt", action="store_true", help="Ctrl-C cancels the run instead of detaching")
    p.add_argument("--no-input", action="store_true", help=NO_INPUT_HELP)
    p = command("watch", "watch a run from a seq on")
    p.add_argument("run_id")
    p.add_argument("--after", type=int, default=0, help="last seq already seen (default 0: from the start)")
    p.add_argument("--cancel-on-interrupt", action="store_true", help="Ctrl-C cancels the run instead of detaching")
    p.add_argument("--no-input", action="store_true", help=NO_INPUT_HELP)
    p = command("respond", "answer the input a waiting run asks for")
    p.add_argument("run_id")
    p.add_argument("--value", required=True, help="the answer as JSON (text in quotes: '\"yes\"'), or @file.json")
    p.add_argument("--request-id", default=None, help="which request (needed only when the run waits for several)")
    p = command("poll", "print a run's snapshot")
    p.add_argument("run_id")
    p = command("runs", "list runs, newest first (or, with --watch, print each change as it happens)")
    p.add_argument("--workflow", default=None)
    p.add_argument("--status", default=None, help="pending, running, waiting, completed, failed, cancelled, ...")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--watch", action="store_true", help="then print one line per change of a run, until Ctrl-C")
    command("workflows", "list the workflows the server knows")
    p = command("schedules", "list the schedules (or, with --create or --delete, make or remove one)")
    p.add_argument("--create", metavar="NAME", default=None, help="make a schedule with this name")
    p.add_argument("--workflow", default=None, help="with --create: the workflow it starts")
    p.add_argument("--cron", default=None, help="with --create: a cron expression, e.g. '0 3 * * *'")
    p.add_argument("--every", type=float, default=None, help="with --create: every this many seconds")
    p.add_argument("--input", default=None, help="with --create: JSON input of its runs, or @file.json")
    p.add_argument("--timezone", default=None, help="with --create: of the cron expression (default UTC)")
    p.add_argument("--catchup", choices=["latest", "skip", "all"], default=None, help="ticks missed while down")
    p.add_argument("--delete", metavar="NAME", default=None, help="remove the schedule with this name")
    p = command("cancel", "cancel a run")
    p.add_argument("run_id")
    args = parser.parse_args(argv)
    try:
        args.url = args.url or urls(os.environ.get("RUNCAST_URL") or DEFAULT_URL)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"RUNCAST_URL: {exc}")
    return args


def read_input(text: str | None, option: str = "--input") -> Any:
    """--input or --value: JSON text, or @path to a JSON file."""
    if text is None:
        return None
    try:
        if text.startswith("@"):
            with open(text[1:], "rb") as f:
                return orjson.loads(f.read())
        return orjson.loads(text)
    except OSError as exc:
        raise UsageError(f"{option} {text}: cannot read {text[1:]!r}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        hint = "; to send text, quote it as JSON, e.g. --value '\"yes\"'" if option == "--value" else ""
        raise UsageError(f"{option} is not valid JSON: {exc}{hint}") from None


def interactive(args: argparse.Namespace) -> bool:
    """Whether a person is there to be asked: stdin and stdout are a terminal, and not --json or
    --no-input (nor Windows, whose event loop cannot watch stdin: there the respond command is printed)."""
    if args.json or args.no_input or sys.platform == "win32":
        return False
    return sys.stdin.isatty() and sys.stdout.isatty()


async def _watch(client: Client, run: dict[str, Any], after: int, view: View, args: argparse.Namespace) -> int:
    """Follow the run to its end, asking at the terminal (or telling how to answer) whenever it waits."""
    run_id = run["run_id"]
    status = "running"
    last = after
    prompter = Prompter(client, run_id, view, Terminal() if interactive(args) else None, program())

    def connection(state: str) -> None:
        view.connection(state)
        prompter.connection(state)

    client.on_state = connection
    view.follow(run)
    prompter.begin(run, after)
    try:
        async for event in client.subscribe(run_id, after):
            last = event["seq"]
            view.event(event)
            prompter.event(event)
            status = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled"}.get(
                event["event"], status
            )
    except asyncio.CancelledError:  # Ctrl-C
        await prompter.close()
        if args.cancel_on_interrupt:
            await client.cancel(run_id)
            view.note(f"cancel requested for run {run_id}")
            return EXIT_CANCELLED
        view.note(f"detached; resume with: {program()} watch {run_id} --after {last}")
        return 130
    finally:
        await prompter.close()
    return EXIT_BY_STATUS.get(status, EXIT_FAILED)


async def _respond(client: Client, args: argparse.Namespace, view: View) -> int:
    """`respond`: answer the given request, or the run's only open one."""
    value = read_input(args.value, "--value")
    request_id = args.request_id
    if request_id is None:
        run = await client.poll(args.run_id)
        requests = open_requests(run)
        if not requests:
            raise UsageError(f"run {args.run_id} is not waiting for input (it is {run.get('status')})")
        if len(requests) > 1:
            listed = "; ".join(f"{r.get('request_id')} (step {r.get('step')}: {prompt_of(r, 80)})" for r in requests)
            raise UsageError(
                f"run {args.run_id} waits for {len(requests)} inputs: {listed}; say which with --request-id"
            )
        request_id = str(requests[0]["request_id"])
    view.answered(request_id, await client.respond(args.run_id, request_id, value))
    return EXIT_OK


async def _runs(client: Client, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A page of runs; the waiting ones with what they wait for (a server that lists runs
    without `waiting_for` is asked for each waiting run's snapshot)."""
    runs, _ = await client.list_runs(args.workflow, args.status, args.limit)
    for run in runs:
        if run.get("status") == "waiting" and "waiting_for" not in run:
            run["waiting_for"] = (await client.poll(run["run_id"])).get("waiting_for") or []
    return runs


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
                later = {"delay": args.delay, "start_at": args.start_at, "priority": args.priority}
                later["concurrency_key"] = args.concurrency_key
                started = await client.start(args.workflow, read_input(args.input), run_id=args.run_id, **later)
                view.started(started)
                return await _watch(client, started, 0, view, args)
            case "watch":
                return await _watch(client, await client.poll(args.run_id), args.after, view, args)
            case "respond":
                return await _respond(client, args, view)
            case "poll":
                run = await client.poll(args.run_id)
                view.snapshot(run)
                return EXIT_BY_STATUS.get(run["status"], EXIT_OK)
            case "runs" if args.watch:
                return await _watch_runs(client, args, view)
            case "runs":
                view.runs(await _runs(client, args))
            case "workflows":
                view.workflows(await client.list_workflows())
            case "schedules":
                await _schedules(client, args, view)
            case "cancel":
                view.snapshot(await client.cancel(args.run_id))
    return EXIT_OK


async def _schedules(client: Client, args: argparse.Namespace, view: View) -> None:
    """`schedules`: list them, or make (--create) or remove (--delete) one, and show it."""
    if args.create is not None:
        if args.workflow is None:
            raise UsageError("--create needs --workflow, and --cron or --every")
        made = await client.create_schedule(
            args.create,
            args.workflow,
            read_input(args.input),
            cron=args.cron,
            every=args.every,
            timezone=args.timezone,
            catchup=args.catchup,
        )
        view.schedules([made])
    elif args.delete is not None:
        view.schedules([await client.delete_schedule(args.delete)])
    else:
        view.schedules(await client.list_schedules())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuncastClientError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, for scripts and people
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
