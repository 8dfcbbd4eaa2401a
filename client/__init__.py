"""The runcast client: a library that resumes by itself, and `python -m client`.

async with Client("ws://127.0.0.1:8000/ws") as c:
    async for event in c.run("count", {"n": 3}):
        print(event["seq"], event["event"], event["data"])
"""

from .client import DEFAULT_URL, Client, new_run_id
from .errors import (
    AuthFailed,
    BadJson,
    BadRequest,
    Conflict,
    ConnectionFailed,
    HandshakeFailed,
    Internal,
    InvalidInput,
    Overloaded,
    RateLimited,
    RuncastClientError,
    RunNotFound,
    ServerError,
    Unauthorized,
    UnknownType,
    UnknownWorkflow,
)
from .sync import SyncClient

__all__ = [
    "DEFAULT_URL",
    "AuthFailed",
    "BadJson",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "HandshakeFailed",
    "Internal",
    "InvalidInput",
    "Overloaded",
    "RateLimited",
    "RunNotFound",
    "RuncastClientError",
    "ServerError",
    "SyncClient",
    "Unauthorized",
    "UnknownType",
    "UnknownWorkflow",
    "new_run_id",
]
