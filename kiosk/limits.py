"""Rate bounds for what arrives from outside: a token bucket and a rate-limited log line.

A listener (HTTP, MQTT) that gets flooded must neither queue without bound nor write one log
line per message: the journal of a kiosk is on the same SD card as its database.
"""

from __future__ import annotations

import logging
import threading
import time


class TokenBucket:
    """`rate_per_s` events a second on average, bursts up to `burst`; thread-safe."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """True if an event may go ahead now (and counts it)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class LogEvery:
    """Logs the first event at once, then at most one line per `interval_s` with how many
    were held back; the rest go to DEBUG."""

    def __init__(self, logger: logging.Logger, level: int, interval_s: float = 60.0) -> None:
        self.logger, self.level, self.interval_s = logger, level, interval_s
        self._last = float("-inf")
        self._held = 0
        self._lock = threading.Lock()

    def __call__(self, msg: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval_s:
                self._held += 1
                self.logger.debug(msg, *args)
                return
            held, self._held, self._last = self._held, 0, now
        suffix = f" (and {held} more like it in the last {self.interval_s:g} s)" if held else ""
        self.logger.log(self.level, msg + suffix, *args)
