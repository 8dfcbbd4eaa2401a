"""The start rate limit (a token bucket) and what each identity may use together. (The
limits themselves are `settings.Limits`.)"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..protocol import ErrorCode, RuncastError


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


MAX_IDLE_BUCKETS = 10_000  # buckets of identities with no socket kept before they are let go


class Quotas:
    """What one identity (a `sub`) uses across all its connections and HTTP requests: its
    starts per second, and its sockets; and, before a socket signs in, what one address
    uses. So one user's script cannot starve the others. A caller without a `sub` (a
    `--token` token, a server without tokens) keeps a bucket of its own per connection,
    as before identities. Keys: `sub:<sub>`, `address:<host>`, or None (not shared)."""

    def __init__(self, starts_per_second: float, sockets_per_key: int) -> None:
        self.starts_per_second = starts_per_second
        self.sockets_per_key = sockets_per_key
        self._buckets: dict[str, RateLimiter] = {}
        self._sockets: dict[str, int] = {}

    @staticmethod
    def key(sub: str | None) -> str | None:
        return f"sub:{sub}" if sub is not None else None

    def starts(self, key: str | None) -> RateLimiter:
        """The start bucket of `key` (a fresh one for None: the caller keeps it)."""
        if key is None:
            return RateLimiter(self.starts_per_second)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > MAX_IDLE_BUCKETS + len(self._sockets):
                self._buckets = {k: b for k, b in self._buckets.items() if k in self._sockets}
            bucket = self._buckets[key] = RateLimiter(self.starts_per_second)
        return bucket

    def enter(self, key: str | None) -> bool:
        """Count one more socket for `key`; False (nothing counted) when it has its share."""
        if key is None:
            return True
        count = self._sockets.get(key, 0)
        if count >= self.sockets_per_key:
            return False
        self._sockets[key] = count + 1
        return True

    def leave(self, key: str | None) -> None:
        if key is None:
            return
        count = self._sockets.get(key, 0) - 1
        if count > 0:
            self._sockets[key] = count
        else:
            self._sockets.pop(key, None)

    def move(self, old: str | None, new: str | None) -> bool:
        """A socket signed in as `new` (it was counted as `old`); False, and it stays
        `old`, when `new` has its share."""
        if old == new:
            return True
        if not self.enter(new):
            return False
        self.leave(old)
        return True


def check_start_rate(bucket: RateLimiter) -> None:
    """A start: `rate_limited` (with when to try again) past the bucket's starts per second."""
    if not bucket.allow():
        wait = max(bucket.retry_after(), 0.001)
        raise RuncastError(
            f"more than {bucket.rate:g} starts per second; send it again in {wait:.3f} s",
            ErrorCode.RATE_LIMITED,
            retry_after=wait,
        )
