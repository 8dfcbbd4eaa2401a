"""Transport: the Starlette app (/ws, HTTP, SSE), one connection per socket, auth, limits,
metrics, and the adjustments to uvicorn."""

from ..settings import Limits
from .app import create_app
from .serving import Server, WebSocketProtocol, cannot_listen, redact_uvicorn_logs, serving_classes

__all__ = [
    "Limits",
    "Server",
    "WebSocketProtocol",
    "cannot_listen",
    "create_app",
    "redact_uvicorn_logs",
    "serving_classes",
]
