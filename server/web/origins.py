"""Where requests may come from (contract 7.1), checked before anything else runs.

- A browser's `Origin` must be the server's own (http or https, exactly the host and port of
  the `Host` header) or listed with --allow-origin (`*`: any, `null` included) on a /ws
  handshake and on every HTTP request but GET, HEAD and OPTIONS. Requests without `Origin`
  (programs, the client library, curl) are not concerned.
- While the server listens on loopback only, the `Host` must be `localhost`, an address in
  127.0.0.0/8, `[::1]` or a name listed with --allow-host (any port), on every path: a page
  whose DNS name was rebound to 127.0.0.1 reaches nothing.

Anything else gets 403 (`forbidden`) and nothing is done. `refusal` decides, from a scope's
headers alone; `Origins` is the ASGI middleware that answers."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from ..protocol import ErrorCode, RuncastError
from ..settings import Settings
from .http import error_response
from .serving import answers_cleanly

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
ANY = "*"
NULL = "null"
SHOWN = 200  # characters of a refused header's value repeated in the answer

# host[:port]: a name or IPv4 address, or an IPv6 address in brackets (text lower-cased first)
_AUTHORITY = re.compile(r"(?:\[([0-9a-f:.]+)\]|([a-z0-9_.-]+))(?::([0-9]{0,5}))?", re.ASCII)
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(.*)", re.ASCII | re.DOTALL)
_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


@dataclass(frozen=True)
class Authority:
    """A host (lower case; an IPv6 address compressed, without brackets) and its port, if given."""

    host: str
    port: int | None

    @property
    def shown(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


@dataclass(frozen=True)
class Origin:
    scheme: str
    authority: Authority

    @property
    def port(self) -> int | None:
        """The port, the scheme's default when none is given (None for a scheme without one)."""
        return self.authority.port if self.authority.port is not None else DEFAULT_PORTS.get(self.scheme)

    def __str__(self) -> str:
        """The canonical text: lower case, without the scheme's default port."""
        given = self.authority.port
        port = "" if given is None or given == DEFAULT_PORTS.get(self.scheme) else f":{given}"
        return f"{self.scheme}://{self.authority.shown}{port}"


def parse_authority(text: str) -> Authority | None:
    """`host[:port]` (a Host header's value, an origin's end), or None if it is not one."""
    match = _AUTHORITY.fullmatch(text.lower())
    if match is None:
        return None
    v6, name, port = match.groups()
    if v6 is not None:
        try:
            host = ipaddress.IPv6Address(v6).compressed
        except ValueError:
            return None
    else:
        host = name
    if port and int(port) > 65535:
        return None
    return Authority(host, int(port) if port else None)


def parse_origin(text: str) -> Origin | None:
    """`scheme://host[:port]` (no path, no user), or None (`null` included)."""
    match = _ORIGIN.fullmatch(text.lower())
    authority = parse_authority(match.group(2)) if match else None
    return Origin(match.group(1), authority) if match and authority else None


def is_loopback(host: str) -> bool:
    """`localhost`, an address in 127.0.0.0/8, or ::1 (with or without brackets)."""
    host = host.lower().removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address in _LOOPBACK_V4 if address.version == 4 else address == _LOOPBACK_V6


def _origin_key(text: str) -> str | None:
    """An --allow-origin entry or an `Origin` value as compared: `*`, `null`, or the canonical
    origin; None if it is none of them."""
    if text == ANY or text.lower() == NULL:
        return text.lower()
    origin = parse_origin(text)
    return str(origin) if origin else None


def _host_key(text: str) -> str | None:
    """An --allow-host name as compared (lower case, an IPv6 address without brackets), or
    None if it is not a bare name or address."""
    bare = text.lower()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    try:
        return ipaddress.ip_address(bare).compressed
    except ValueError:
        pass
    authority = parse_authority(bare)
    return authority.host if authority is not None and ":" not in bare else None


def wrong_sources(allow_origin: Iterable[str], allow_host: Iterable[str]) -> str | None:
    """What is wrong with --allow-origin and --allow-host values, or None."""
    for text in allow_origin:
        if _origin_key(text) is None:
            return f"--allow-origin {text!r}: an origin is scheme://host[:port] (no path), `null` or `*`"
    for text in allow_host:
        if _host_key(text) is None:
            return f"--allow-host {text!r}: give a host name or address, without scheme or port"
    return None


@dataclass(frozen=True)
class Sources:
    """Where requests may come from, as the settings say."""

    loopback_only: bool = True  # the server listens on loopback only: the Host is checked
    origins: frozenset[str] = frozenset()  # --allow-origin, canonical (`*` and `null` as such)
    hosts: frozenset[str] = frozenset()  # --allow-host, as compared

    @classmethod
    def from_settings(cls, settings: Settings) -> Sources:
        """ValueError if an --allow-origin or --allow-host value is not one (see wrong_sources)."""
        wrong = wrong_sources(settings.allow_origin, settings.allow_host)
        if wrong:
            raise ValueError(wrong)
        return cls(
            loopback_only=is_loopback(settings.host),
            origins=frozenset(key for o in settings.allow_origin if (key := _origin_key(o))),
            hosts=frozenset(key for h in settings.allow_host if (key := _host_key(h))),
        )


def _header(scope: Scope, name: bytes) -> str | None:
    """A header's value, None when absent (several are joined by commas, which no check accepts)."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key == name]
    return ", ".join(values) if values else None


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def refusal(scope: Scope, sources: Sources) -> str | None:
    """Why this request (an http or websocket scope) may not be served, or None if it may."""
    host_header = _header(scope, b"host")
    host = parse_authority(host_header) if host_header is not None else None
    if sources.loopback_only:
        if host_header is None:
            return (
                "a request with no Host header may not reach this server while it listens on loopback only; "
                "send the Host header"
            )
        if host is None:
            return f"Host {_shown(host_header)!r} is not host[:port]"
        if not (is_loopback(host.host) or host.host in sources.hosts):
            return (
                f"host {host.shown} may not reach this server, which listens on loopback only; "
                f"start it with --allow-host {host.shown} to allow it"
            )
    if scope["type"] == "http" and scope["method"] in SAFE_METHODS:
        return None
    origin_header = _header(scope, b"origin")
    if origin_header is None or ANY in sources.origins:
        return None
    key = _origin_key(origin_header)
    if key is not None and key in sources.origins:
        return None
    origin = parse_origin(origin_header)
    if origin is not None and host is not None and origin.scheme in DEFAULT_PORTS:
        host_port = host.port if host.port is not None else DEFAULT_PORTS[origin.scheme]
        if origin.authority.host == host.host and origin.port == host_port:
            return None  # the server's own
    if key is None:
        return f"origin {_shown(origin_header)!r} is not scheme://host[:port] nor null; it may not use this server"
    return f"origin {key} may not use this server; start it with --allow-origin {key} to allow it"


class Origins:
    """Answers 403 (`forbidden`) to a request or /ws handshake that `refusal` refuses, before
    the app sees it: an HTTP response, and on /ws the handshake's answer."""

    def __init__(self, app: ASGIApp, sources: Sources) -> None:
        self.app = app
        self.sources = sources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = refusal(scope, self.sources) if scope["type"] in ("http", "websocket") else None
        if reason is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket" and not answers_cleanly(scope):
            await send({"type": "websocket.close", "code": 1008})  # before accept: uvicorn answers 403, no body
            return
        await error_response(RuncastError(reason, ErrorCode.FORBIDDEN))(scope, receive, send)
