"""Which server to try next: round robin over the URLs a client was given.

Pure bookkeeping, no I/O, so the order is tested without sockets. The first connect
starts at the first URL: the list order is the user's preference (the nearest node
first) and the behaviour stays predictable; spreading clients over nodes is a load
balancer's job, or a shuffled list's. A lost connection moves on to the next URL, so
the node that just failed is tried last in the round.
"""

from __future__ import annotations

from collections.abc import Iterable

Urls = str | Iterable[str]  # one URL, "ws://a/ws,ws://b/ws", or a list of either


def split_urls(urls: Urls) -> tuple[str, ...]:
    """Every URL in `urls`, in order, once each; a string may hold several, comma separated."""
    parts = [urls] if isinstance(urls, str) else list(urls)
    found = (url.strip() for part in parts for url in part.split(","))
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
