"""Where a request's token is: the `Authorization: Bearer` header. What a token is worth
is server/identities.py's business."""

from __future__ import annotations


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
