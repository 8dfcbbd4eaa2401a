"""Errors the client raises: one class per contract error code, under one root."""

from __future__ import annotations

from typing import Any


class RuncastClientError(Exception):
    """Root of every error this client raises."""


class ConnectionFailed(RuncastClientError):
    """The server could not be reached (and reconnecting is off or gave up)."""


class ServerError(RuncastClientError):
    """The server answered with an error frame; `code` is the contract's error code."""

    code = "internal"

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
