"""The start rate limit of one connection: a token bucket. (The limits themselves are
`settings.Limits`.)"""

from __future__ import annotations

import time
from collections.abc import Callable


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
