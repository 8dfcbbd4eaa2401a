"""Tokens: who may use the server. Pure checks; the endpoints decide what to do with them."""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable


class Tokens:
    """The configured tokens; with none, the server is open (and binds to 127.0.0.1)."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self._tokens = [t.encode() for t in tokens if t]

    @classmethod
    def from_sources(cls, flags: Iterable[str], env: str | None = None) -> Tokens:
        """--token values plus RUNCAST_TOKEN (comma separated)."""
        env = os.environ.get("RUNCAST_TOKEN", "") if env is None else env
        return cls([*flags, *(t.strip() for t in env.split(","))])

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def check(self, token: str | None) -> bool:
        """True if the token is one of ours. Compares with every token in constant time."""
        if not self._tokens:
            return True
        if not token:
            return False
        given = token.encode()
        return any([hmac.compare_digest(given, t) for t in self._tokens])  # no short cut: constant time

    def check_header(self, authorization: str | None) -> bool:
        return self.check(bearer(authorization))


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
