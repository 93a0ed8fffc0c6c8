"""A token bucket: at most ``rate`` messages a second on average, bursts up to ``burst``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Bucket(Protocol):
    """What a sender paces itself with: ``TokenBucket`` (one process) or a bucket shared through a
    database (``aidmatch.messages.ratelimit.SharedTokenBucket``, every worker)."""

    rate: float
    burst: float

    def take(self, n: int = 1) -> int: ...

    def give_back(self, n: int) -> None: ...

    def wait_s(self) -> float: ...


def checked(rate_per_s: float, burst: float | None) -> tuple[float, float]:
    """(rate, burst) of a bucket, the burst defaulting to one second's worth (at least 1)."""
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s = {rate_per_s} must be > 0")
    burst = burst if burst is not None else max(1.0, rate_per_s)
    if burst < 1:
        raise ValueError(f"burst = {burst} must be >= 1")
    return rate_per_s, burst


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst = checked(rate_per_s, burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def _fill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, n: int = 1) -> int:
        """Take up to ``n`` whole tokens now; returns how many were taken."""
        with self._lock:
            self._fill()
            got = min(n, int(self._tokens))
            self._tokens -= got
            return got

    def give_back(self, n: int) -> None:
        """Return tokens taken but not used (never above the burst)."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + n)

    def wait_s(self) -> float:
        """Seconds until the next whole token."""
        with self._lock:
            self._fill()
            return max(0.0, (1.0 - self._tokens) / self.rate)
