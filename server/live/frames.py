"""What live/ hands the transport: frames as text, each with a place (`wire`) where the
transport keeps its bytes once it has framed them, so that one event framed for one socket
is framed for all (web/framing.py does the framing)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Framed(Protocol):
    """A frame's text, and its bytes on a socket once the transport has made them."""

    frame: str
    wire: bytes | None


@dataclass(slots=True)
class Frame:
    """A frame made for one client (e.g. an `events` frame of several events)."""

    frame: str
    wire: bytes | None = field(default=None, repr=False)


WriteNow = Callable[[Sequence[Framed]], bool]  # frames to one client's socket at once, if it takes them
