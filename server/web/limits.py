"""Limits that keep one client from hurting the others; each is a server flag."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..bounds import DEFAULT_MAX_EVENT_BYTES


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may use, with the defaults the README documents."""

    max_frame_bytes: int = 1024 * 1024  # larger frames close the socket with 1009
    max_connections: int = 20_000  # past this, new sockets are closed with 1013
    max_subscriptions: int = 1_000  # per connection; more is `overloaded`
    starts_per_second: float = 100.0  # per connection; more is `rate_limited`
    max_input_bytes: int = 256 * 1024  # a run's input as JSON; more is `invalid_input`
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES  # an event's data as JSON; more fails its step
    stuck_seconds: float = 60.0  # a client that reads nothing this long while events wait: 1008
    auth_seconds: float = 10.0  # time to present a valid token: then 1008
    auth_attempts: int = 3  # wrong tokens before 1008


class RateLimiter:
    """A token bucket: `rate` per second on average, bursts up to `rate`."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._allowance = rate
        self._last = self._clock()

    def allow(self) -> bool:
        now = self._clock()
        self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
        self._last = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    def retry_after(self) -> float:
        """Seconds until `allow` would say yes again (0 when it would now)."""
        return max(0.0, (1 - self._allowance) / self.rate) if self.rate > 0 else 1.0
