"""Errors the client raises: one class per contract error code, under one root."""

from __future__ import annotations

from typing import Any

from server.redaction import redact


class RuncastClientError(Exception):
    """Root of every error this client raises."""


class ConnectionFailed(RuncastClientError):
    """The server could not be reached (and reconnecting is off or gave up). Its message
    names the server's URL without secrets (a `?token=` in it is redacted)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class HandshakeFailed(ConnectionFailed):
    """The server was reached but opened no runcast session: it refused the HTTP upgrade
    (`http_status`), closed the socket at once (`close_code`), or did not greet like a
    runcast server. `retryable` says whether trying again later may help."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        close_code: int | None = None,
        http_status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.http_status = http_status
        if retryable is not None:
            self.retryable = retryable


class AuthFailed(HandshakeFailed):
    """The server refused the credentials (close 1008, HTTP 401/403, or `unauthorized`):
    trying again with the same token cannot help."""

    retryable = False


class ServerError(RuncastClientError):
    """The server answered with an error frame; `code` is the contract's error code."""

    code = "internal"
    resent = False  # the message went out again after a reconnect, so an earlier copy may have acted

    def __init__(self, message: str, code: str | None = None, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reply = reply or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadJson(ServerError):
    code = "bad_json"


class BadRequest(ServerError):
    code = "bad_request"


class UnknownType(ServerError):
    code = "unknown_type"


class Unauthorized(ServerError):
    code = "unauthorized"


class UnknownWorkflow(ServerError):
    code = "unknown_workflow"


class RunNotFound(ServerError):
    code = "run_not_found"


class Conflict(ServerError):
    code = "conflict"


class InvalidInput(ServerError):
    code = "invalid_input"


class RateLimited(ServerError):
    code = "rate_limited"

    @property
    def retry_after(self) -> float:
        """Seconds after which the same message would be accepted (1 s if the server did not say)."""
        value = self.reply.get("retry_after")
        return float(value) if isinstance(value, int | float) and value >= 0 else 1.0


class Overloaded(ServerError):
    code = "overloaded"


class Internal(ServerError):
    code = "internal"


ERRORS_BY_CODE: dict[str, type[ServerError]] = {
    cls.code: cls
    for cls in (
        BadJson,
        BadRequest,
        UnknownType,
        Unauthorized,
        UnknownWorkflow,
        RunNotFound,
        Conflict,
        InvalidInput,
        RateLimited,
        Overloaded,
        Internal,
    )
}


def error_from_reply(reply: dict[str, Any]) -> ServerError:
    """The typed exception for an error frame."""
    code = str(reply.get("code", "internal"))
    cls = ERRORS_BY_CODE.get(code, ServerError)
    return cls(str(reply.get("message", "")), code, reply)


# What a close code or HTTP status at connect time means, and what the user can do about it.
CLOSE_HINTS: dict[int, str] = {
    1001: "the server is shutting down; try again in a moment",
    1008: "the server refused the credentials; check the token (--token or RUNCAST_TOKEN)",
    1013: "the server is full (too many connections); try again later",
}
STATUS_HINTS: dict[int, str] = {
    401: "the server wants a valid token; check the token (--token or RUNCAST_TOKEN)",
    403: "the server refused the credentials; check the token (--token or RUNCAST_TOKEN)",
    404: "no WebSocket endpoint there; check the URL (it ends in /ws)",
    429: "the server is busy; try again later",
    503: "the server is unavailable; try again later",
}
AUTH_CLOSE_CODES = frozenset({1008})
AUTH_STATUSES = frozenset({401, 403})


def closed_at_connect(url: str, code: int | None, reason: str = "") -> HandshakeFailed:
    """The error for a server that closed the socket before the session was open."""
    said = (
        f"closed the connection with {code}" + (f" ({reason})" if reason else "") if code else "dropped the connection"
    )
    message = f"cannot connect to {url}: the server {said}"
    if code in CLOSE_HINTS:
        message += f": {CLOSE_HINTS[code]}"
    cls = AuthFailed if code in AUTH_CLOSE_CODES else HandshakeFailed
    return cls(message, close_code=code)


def refused_at_connect(url: str, status: int) -> HandshakeFailed:
    """The error for a server that answered the WebSocket upgrade with an HTTP error."""
    hint = STATUS_HINTS.get(status, "is this a runcast server? check the URL")
    message = f"cannot connect to {url}: the server answered HTTP {status}: {hint}"
    if status in AUTH_STATUSES:
        return AuthFailed(message, http_status=status)
    return HandshakeFailed(message, http_status=status, retryable=status >= 500 or status == 429)


def not_runcast(url: str, greeting: object) -> HandshakeFailed:
    """The error for a server whose first frame is not a runcast `welcome`."""
    shown = repr(greeting)[:120]
    return HandshakeFailed(
        f"{url} did not greet like a runcast server (first frame {shown}); check the URL", retryable=False
    )
