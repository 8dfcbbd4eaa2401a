"""What a server is set up with, one default each: the command line's flags are these
fields, and `create_app`, `Runtime` and `Engine` take them as they are."""

from __future__ import annotations

from dataclasses import dataclass, field

from .bounds import DEFAULT_MAX_EVENT_BYTES

DEFAULT_TOOL_THREADS = 32  # plain-function tool calls running at once
DEFAULT_MAX_HUNG = 64  # timed-out tool calls still in their threads before new calls are refused


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may use (docs/limits.md)."""

    max_frame_bytes: int = 1024 * 1024  # larger frames close the socket with 1009
    max_connections: int = 20_000  # past this, new sockets are closed with 1013
    connections_per_identity: int = 1_000  # sockets of one identity (or one address before it signs in); more: 1013
    max_subscriptions: int = 1_000  # per connection; more is `overloaded`
    starts_per_second: float = 100.0  # per identity (all its sockets and HTTP); more is `rate_limited`
    max_input_bytes: int = 256 * 1024  # a run's input as JSON; more is `invalid_input`
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES  # an event's data as JSON; more fails its step
    stuck_seconds: float = 60.0  # a client that reads nothing this long while events wait: 1008
    auth_seconds: float = 10.0  # time to present a valid token: then 1008
    auth_attempts: int = 3  # wrong tokens before 1008


@dataclass(frozen=True)
class Settings:
    """How one server runs: its node, its runs and threads, how long it keeps them, and
    the limits on its clients."""

    host: str = "127.0.0.1"  # the address listened on; loopback only: the Host header is checked
    allow_origin: tuple[str, ...] = ()  # browser origins besides the server's own (`*`: any)
    allow_host: tuple[str, ...] = ()  # Host names besides loopback ones, while on loopback only
    node_id: str | None = None  # in a cluster (default: host name and pid)
    max_running: int = 256  # runs executing at once; more wait `pending`
    step_threads: int = 64  # threads for plain-function steps
    tool_threads: int = DEFAULT_TOOL_THREADS  # threads for plain-function tools
    max_hung_tools: int = DEFAULT_MAX_HUNG  # timed-out tool calls still in their threads
    takeover_seconds: float = 10.0  # in a cluster: silence before other nodes take a node's runs
    retention_days: float = 7.0  # finished runs older than this are deleted (0: kept)
    trace_url: str | None = None  # the dashboard links a run to {trace_id} in this template
    limits: Limits = field(default_factory=Limits)
