"""The one lifecycle of kioskd's long-lived parts, and the one reconnect backoff.

Every part (store, recorder, cameras, gate, publisher, metrics, pipeline) is built unstarted,
opened by ``start()`` (which returns the part, so ``with X.from_config(...) as x`` reads well)
and released by ``close()``, which may be called more than once. ``Daemon`` enters them into an
``ExitStack`` in data-flow order, so shutdown runs in the reverse order by construction.
"""

from __future__ import annotations

from typing import Self


class Part:
    """start() opens, close() releases (idempotent); a context manager over both."""

    def start(self) -> Self:
        return self

    def close(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backoff:
    """Capped exponential backoff: initial, 2x, 4x ... max, reset after a success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.next_s = initial_s

    def delay(self) -> float:
        d = self.next_s
        self.next_s = min(self.max_s, self.next_s * 2)
        return d

    def reset(self) -> None:
        self.next_s = self.initial_s
