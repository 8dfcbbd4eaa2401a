"""Which server to try next: round robin over the URLs a client was given.

Pure bookkeeping, no I/O, so the order is tested without sockets. The first connect
starts at the first URL: the list order is the user's preference (the nearest node
first) and the behaviour stays predictable; spreading clients over nodes is a load
balancer's job, or a shuffled list's. A lost connection moves on to the next URL, so
the node that just failed is tried last in the round.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

Urls = str | Iterable[str]  # one URL, "ws://a/ws,ws://b/ws", or a list of either


WS_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def ws_url(text: str) -> str:
    """The WebSocket URL of a server address as people paste it: the dashboard's
    `http(s)://host:port` becomes `ws(s)://host:port/ws`, a bare `host:port` is `ws://`,
    a URL with no path gets runcast's `/ws`, and a fragment (`#/runs/...`) is dropped.
    ValueError for what cannot be a server's address."""
    text = text.strip()
    parts = urlsplit(text if "://" in text else f"ws://{text}")
    scheme = WS_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(
            f"{text!r} is not a server address; give ws://HOST:PORT/ws or the dashboard's http://HOST:PORT"
        )
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def split_urls(urls: Urls) -> tuple[str, ...]:
    """Every URL in `urls`, in order, once each, as WebSocket URLs (see `ws_url`); a string
    may hold several, comma separated."""
    parts = [urls] if isinstance(urls, str) else list(urls)
    found = (ws_url(url) for part in parts for url in part.split(",") if url.strip())
    unique = tuple(dict.fromkeys(url for url in found if url))
    if not unique:
        raise ValueError("no server URL given")
    return unique


class Servers:
    """The server URLs and the one in use; `round()` is the order to try them in next."""

    def __init__(self, urls: Urls) -> None:
        self.urls = split_urls(urls)
        self._current = 0  # index of the server in use, or of the first to try

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def current(self) -> str:
        """The server in use (before the first connect: the first one to try)."""
        return self.urls[self._current]

    def round(self, *, move_on: bool) -> list[str]:
        """Every URL once, from the current one, or with `move_on` from the one after it."""
        start = self._current + move_on
        return [self.urls[(start + k) % len(self.urls)] for k in range(len(self.urls))]

    def use(self, url: str) -> None:
        """Record that `url` is now the server in use."""
        self._current = self.urls.index(url)
