"""Command line: `python -m server [--host] [--port] [--db] [--workflows ...]`, and
`python -m server token --sub NAME ...` (prints a signed token)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import uvicorn

from . import tracing
from .agents.agno import agno_workflows
from .agents.tool_threads import configure_tool_threads
from .examples import BUILT_IN
from .identities import DEFAULT_TTL, Authenticator, mint_token
from .redaction import redact
from .settings import Limits, Settings
from .store import StoreError, backend_for
from .web import cannot_listen, create_app, redact_uvicorn_logs, serving_classes
from .web.origins import wrong_sources
from .workflow import Workflow

log = logging.getLogger("runcast")
DEFAULTS = Settings()


def load_workflows(spec: str) -> list[Workflow]:
    """Every Workflow defined at the top level of a module (`pkg.mod`) or file (`flows.py`),
    runcast's own and Agno's (served through server.agents.agno)."""
    try:
        module = _import(spec)
    except ImportError as exc:
        raise SystemExit(f"--workflows {spec}: {_missing(spec, exc)}") from None
    found = [value for value in vars(module).values() if isinstance(value, Workflow)]
    for workflow in found:
        log.info("workflow %r served, its steps: %s", workflow.name, ", ".join(repr(s.name) for s in workflow.steps))
    try:
        found += agno_workflows(vars(module).values())
    except ValueError as exc:
        raise SystemExit(f"--workflows {spec}: {exc}") from exc
    if not found:
        raise SystemExit(f"--workflows {spec}: defines no Workflow at its top level")
    return found


def _import(spec: str) -> ModuleType:
    """The module `spec` names: a file (`path/flows.py`) or a module (`pkg.mod`)."""
    if not (spec.endswith(".py") or os.sep in spec):
        sys.path.insert(0, os.getcwd())
        return importlib.import_module(spec)
    path = Path(spec).resolve()
    if not path.is_file():
        raise SystemExit(f"--workflows {spec}: no such file")
    loader = importlib.util.spec_from_file_location(f"runcast_user_{path.stem}", path)
    if loader is None or loader.loader is None:
        raise SystemExit(f"--workflows {spec}: cannot load this file")
    module = importlib.util.module_from_spec(loader)
    sys.modules[loader.name] = module
    loader.loader.exec_module(module)
    return module


def _missing(spec: str, exc: ImportError) -> str:
    """What an import error of --workflows means, and what to install."""
    package = (exc.name or "").split(".")[0]
    if not package or package == spec:
        return str(exc)
    install = "-e '.[agno]'" if package == "agno" else package
    return f"it imports {package!r}, which this Python does not have: {sys.executable} -m pip install {install}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m server", description="Serve runcast on /ws and /api.")
    parser.add_argument(
        "--host",
        default=DEFAULTS.host,
        help=f"address to bind (default {DEFAULTS.host}); on loopback only, Host headers are checked (--allow-host)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--db",
        default="./data/runcast.db",
        help="SQLite file (or sqlite:///relative.db, sqlite:////absolute.db), "
        "or postgresql://user:pass@host:port/dbname for a cluster",
    )
    parser.add_argument("--node-id", help="this node's name in a cluster (default: host name and pid)")
    parser.add_argument(
        "--takeover-seconds",
        type=float,
        default=DEFAULTS.takeover_seconds,
        help="in a cluster, how long a node may be silent before the others take over its runs (default 10)",
    )
    parser.add_argument(
        "--workflows", action="append", default=[], metavar="MODULE_OR_FILE", help="register workflows (repeatable)"
    )
    parser.add_argument(
        "--max-running", type=int, default=DEFAULTS.max_running, help="runs executing at once; more wait pending"
    )
    _tracing_flags(parser)
    parser.add_argument(
        "--tool-threads",
        type=int,
        default=DEFAULTS.tool_threads,
        help=f"plain-function tool calls running at once (default {DEFAULTS.tool_threads})",
    )
    parser.add_argument(
        "--max-hung-tools",
        type=int,
        default=DEFAULTS.max_hung_tools,
        help=f"timed-out tool calls left in their threads before new ones fail (default {DEFAULTS.max_hung_tools})",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=DEFAULTS.retention_days,
        help="delete finished runs older than this many days (default 7; 0 keeps them forever)",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="require this token from every client (repeatable; also RUNCAST_TOKEN, comma separated); "
        "its holder may do everything",
    )
    _add_auth(parser)
    _add_sources(parser)
    _add_limits(parser.add_argument_group("limits (per client unless said otherwise)"))
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def _add_auth(parser: argparse.ArgumentParser) -> None:
    auth = parser.add_argument_group("signed tokens (JWT): each client an identity, each run an owner")
    auth.add_argument(
        "--auth-secret", help="accept JWTs signed HS256 with this secret (32+ bytes; RUNCAST_AUTH_SECRET)"
    )
    auth.add_argument(
        "--auth-public-key", metavar="FILE", help="accept JWTs signed by this PEM key's private key (RS256 or ES256)"
    )
    auth.add_argument("--auth-issuer", help="tokens' `iss` must be this")
    auth.add_argument("--auth-audience", help="tokens' `aud` must include this")


def _add_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages from this origin (e.g. https://app.example.com; `*` any, `null`) use /ws and change "
        "things over HTTP; the server's own origin always may (repeatable)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="answer requests for this Host name too (any port) while listening on loopback only, e.g. behind "
        "a reverse proxy that passes its own name (repeatable)",
    )


def _add_limits(limits: argparse._ArgumentGroup) -> None:
    defaults = DEFAULTS.limits
    limits.add_argument("--max-frame-bytes", type=int, default=defaults.max_frame_bytes, help="close 1009 past it")
    limits.add_argument(
        "--max-connections", type=int, default=defaults.max_connections, help="server-wide; close 1013 past it"
    )
    limits.add_argument("--max-subscriptions", type=int, default=defaults.max_subscriptions, help="per connection")
    limits.add_argument(
        "--starts-per-second", type=float, default=defaults.starts_per_second, help="per identity, over every door"
    )
    limits.add_argument(
        "--connections-per-identity",
        type=int,
        default=defaults.connections_per_identity,
        help="sockets of one identity (or one address before it signs in); close 1013 past it",
    )
    limits.add_argument("--max-input-bytes", type=int, default=defaults.max_input_bytes, help="a run's input as JSON")
    limits.add_argument(
        "--max-event-bytes",
        type=int,
        default=defaults.max_event_bytes,
        help="an event's data as JSON (a step's output, a delta, progress); more fails the step",
    )
    limits.add_argument(
        "--stuck-seconds", type=float, default=defaults.stuck_seconds, help="close 1008 a client that reads nothing"
    )
    limits.add_argument("--auth-seconds", type=float, default=defaults.auth_seconds, help="time to authenticate")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return token_command(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workflows = [wf for spec in args.workflows for wf in load_workflows(spec)]
    # Say what stops a start plainly now, before anything is made, not from inside uvicorn's startup.
    refused = cannot_listen(args.host, args.port)
    if refused:
        log.error("%s", refused)
        return 1
    try:
        backend = backend_for(args.db, args.node_id)
        backend.preflight()
    except StoreError as exc:
        log.error("%s", exc)
        return 1
    wrong = _wrong_settings(args)
    if wrong:
        log.error("%s", wrong)
        return 2
    settings = settings_from(args)
    configure_tool_threads(settings.tool_threads, settings.max_hung_tools)
    try:
        auth = authenticator(args)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if auth.enabled:
        log.info("authentication on: clients must present a token%s", " (signed tokens too)" if auth.signed else "")
    else:
        reach = (
            "this machine only (127.0.0.1)" if args.host in LOOPBACK else f"every machine that can reach {args.host}"
        )
        log.warning("no --token nor --auth-secret: the server is open to %s; see docs/security.md", reach)
    if tracing.wanted(args.otel):
        try:
            tracing.start()
        except RuntimeError as exc:
            log.error("%s", exc)
            return 2
    app = create_app(args.db, [*BUILT_IN, *workflows], settings=settings, auth=auth)  # built-ins always
    try:
        return serve(app, args, settings, backend.url)
    finally:
        tracing.stop()  # what is left goes out


def authenticator(args: argparse.Namespace) -> Authenticator:
    """The tokens the flags (and RUNCAST_TOKEN, RUNCAST_AUTH_SECRET) accept; ValueError or
    OSError for a secret too short or a key file that cannot be read."""
    env_tokens = [t.strip() for t in os.environ.get("RUNCAST_TOKEN", "").split(",")]
    secret = args.auth_secret or os.environ.get("RUNCAST_AUTH_SECRET") or None
    key = Path(args.auth_public_key).read_bytes() if args.auth_public_key else None
    return Authenticator(
        [*args.token, *env_tokens], secret=secret, public_key=key, issuer=args.auth_issuer, audience=args.auth_audience
    )


def token_command(argv: list[str]) -> int:
    """`python -m server token --sub alice [--scope ...] [--run ID]... [--workflow NAME]... [--ttl 900]`."""
    parser = argparse.ArgumentParser(prog="python -m server token", description="Print a token signed HS256.")
    parser.add_argument("--sub", required=True, help="the identity the token is for")
    parser.add_argument("--scope", help="space-separated, of start read cancel respond admin (default: all but admin)")
    parser.add_argument("--run", action="append", dest="runs", help="reach only this run (repeatable)")
    parser.add_argument("--workflow", action="append", dest="workflows", help="start only this workflow (repeatable)")
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL, help=f"seconds it lasts (default {DEFAULT_TTL:g})")
    parser.add_argument("--auth-secret", help="the server's --auth-secret (default: RUNCAST_AUTH_SECRET)")
    args = parser.parse_args(argv)
    secret = args.auth_secret or os.environ.get("RUNCAST_AUTH_SECRET")
    if not secret:
        parser.error("give --auth-secret or set RUNCAST_AUTH_SECRET: the secret the server checks tokens with")
    try:
        print(
            mint_token(secret, sub=args.sub, scope=args.scope, runs=args.runs, workflows=args.workflows, ttl=args.ttl)
        )
    except ValueError as exc:
        parser.error(str(exc))
    return 0


def _wrong_settings(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags' values, or None."""
    if args.max_running < 1 or args.retention_days < 0:
        return "--max-running must be at least 1 and --retention-days at least 0"
    if args.takeover_seconds <= 0:
        return "--takeover-seconds must be more than 0"
    if args.tool_threads < 1 or args.max_hung_tools < 0:
        return "--tool-threads must be at least 1 and --max-hung-tools at least 0"
    return wrong_sources(args.allow_origin, args.allow_host)


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _tracing_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace-url",
        default=None,
        metavar="TEMPLATE",
        help="the dashboard links each run to its trace: a URL with {trace_id}, e.g. http://jaeger:16686/trace/{trace_id}",
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces over OTLP (also on when OTEL_EXPORTER_OTLP_ENDPOINT is set; "
        "the OTEL_* variables configure it; needs the otel extra)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """The flags as Settings: each flag is the field of the same name (a field without a
    flag keeps its default)."""

    def given(kind: Any) -> dict[str, Any]:
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(kind) if hasattr(args, f.name)}
        return {name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}  # repeatable flags

    return Settings(**given(Settings), limits=Limits(**given(Limits)))


def serve(app: Any, args: argparse.Namespace, settings: Settings, store: str) -> int:
    """Run uvicorn with runcast's adjustments until stopped; the exit code."""
    protocol, server_class = serving_classes(app, plain=os.environ.get("RUNCAST_PLAIN_ASGI") == "1")
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        ws_max_size=settings.limits.max_frame_bytes,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        timeout_graceful_shutdown=2,  # a backstop: sockets are dropped after DRAIN_SECONDS
        lifespan="on",
        ws=protocol,
        ws_per_message_deflate=False,
    )
    redact_uvicorn_logs()  # tokens in query strings must not reach the logs
    server = server_class(config)
    log.info("runcast serving http://%s:%d (store %s)", args.host, args.port, redact(store))
    server.run()  # on uvloop when it is installed (uvicorn's loop="auto"), else asyncio
    if not server.started:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
