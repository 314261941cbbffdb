"""A bounded single worker whose results come back in the order they were submitted.

The pipeline gives it the classification of each closing visit, so a slow classifier does not
stall the frame loop (kiosk/pipeline.py). Threads: the worker thread only runs jobs. Results
are handed to `deliver` on the thread that calls `submit`, `put`, `collect` and `drain` (the
frame loop), oldest first, so whatever consumes them (recorder, store, counters) stays
single-threaded. `put` queues a value that needs no work (a check) behind the pending jobs, so
records keep the order in which they closed.

When `max_pending` results are waiting, `submit` and `put` first wait for the oldest: the frame
loop slows down rather than lose a record, and a warning says so. A job that raises is
delivered as its exception (a done Future); the caller logs it. With `threaded=False` every
job runs at once on the caller's thread (the frame path's "inline" mode, for comparison).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger("kioskd")

T = TypeVar("T")


def run_now(job: Callable[[], T]) -> Future[T]:
    """A done Future holding the job's result or its exception."""
    done: Future[T] = Future()
    try:
        done.set_result(job())
    except Exception as exc:  # handed to the caller, like a worker's
        done.set_exception(exc)
    return done


def finished(value: T) -> Future[T]:
    done: Future[T] = Future()
    done.set_result(value)
    return done


class OrderedWorker(Generic[T]):
    def __init__(
        self,
        deliver: Callable[[Future[T]], None],
        max_pending: int,
        threaded: bool = True,
        name: str = "worker",
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.deliver = deliver
        self.max_pending = max_pending
        self.name = name
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name) if threaded else None
        self._pending: deque[Future[T]] = deque()
        self.waits = 0  # times a full queue made the caller wait
        self._behind = False

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, job: Callable[[], T]) -> None:
        """Run `job` on the worker (at once when not threaded); its result is delivered later."""
        self._make_room()
        self._pending.append(self._pool.submit(job) if self._pool else run_now(job))
        self.collect()

    def put(self, value: T) -> None:
        """Deliver `value` after every job submitted before it."""
        self._make_room()
        self._pending.append(finished(value))
        self.collect()

    def _make_room(self) -> None:
        self.collect()
        if len(self._pending) < self.max_pending:
            return
        self.waits += 1
        if not self._behind:
            self._behind = True
            log.warning(
                "%s: %d results pending, the frame loop waits for the oldest",
                self.name, len(self._pending),
            )  # fmt: skip
        self._pending[0].exception()  # waits; the result or exception is delivered below
        self.collect()

    def collect(self) -> None:
        """Deliver the finished results at the front, without waiting."""
        while self._pending and self._pending[0].done():
            self.deliver(self._pending.popleft())
        if self._behind and not self._pending:
            self._behind = False
            log.info("%s: caught up after waiting %d times", self.name, self.waits)

    def drain(self) -> None:
        """Wait for every pending result and deliver it (shutdown, end of input)."""
        while self._pending:
            self._pending[0].exception()
            self.collect()

    def close(self) -> None:
        """Deliver everything pending, then stop the worker thread; idempotent."""
        self.drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
