"""The one supervisor of a device read on its own thread; both cameras use it.

A supervisor thread starts a reader thread per connection. The reader opens the device, hands
every frame it reads to `publish` and releases the device when it leaves, so a handle is only
ever used by the thread that opened it (OpenCV does not support releasing a capture that another
thread is reading). The supervisor watches the connection: when the open or a read fails, or an
open connection gives no frame for `stall_timeout_s`, it gives the connection up and starts the
next one after a capped exponential backoff. A reader stuck in a blocking driver call is
abandoned, not waited for: what it reads after that is dropped, and it releases its handle when
the call returns. A read that raises `EndOfStream` ends the source without a reopen.

`publish` runs on the reader thread, the outage, end and slow-open callbacks on the supervisor
thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, Self, TypeVar

from kiosk.lifecycle import Backoff, Part

log = logging.getLogger(__name__)

H = TypeVar("H")  # an open device
T = TypeVar("T")  # what one read gives

Cause = Literal["cannot open", "read failed", "stalled"]


class EndOfStream(Exception):
    """A finite source has no more frames; not an error, so it is not reopened."""


@dataclass(frozen=True, slots=True)
class Outage:
    """Why a connection was given up, and how long until the next open."""

    cause: Cause
    error: Exception | None  # what the open or the read raised; None for a stall
    silent_s: float  # since the connection opened or gave its last frame
    delay_s: float


class _Connection:
    """One open-and-read attempt. Its reader writes the fields, the supervisor reads them."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.opened = False
        self.last_frame = self.started
        self.frames = 0
        self.error: Exception | None = None
        self.ended = False
        self.abandoned = False
        self.done = threading.Event()
        self.thread: threading.Thread | None = None


class Supervisor(Part, Generic[H, T]):
    """Opens, reads, watches and reopens one device; counts reopens and notes the end."""

    def __init__(
        self,
        name: str,
        *,
        open: Callable[[], H],
        read: Callable[[H], T],
        publish: Callable[[T], None],
        close: Callable[[H], None],
        backoff: Backoff,
        stall_timeout_s: float,
        on_outage: Callable[[Outage], None] | None = None,
        on_end: Callable[[], None] | None = None,
        on_slow_open: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self._open, self._read, self._publish, self._close = open, read, publish, close
        self._backoff = backoff
        self.stall_timeout_s = stall_timeout_s
        self._on_outage, self._on_end, self._on_slow_open = on_outage, on_end, on_slow_open
        self.reconnects = 0
        self.ended = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: _Connection | None = None

    def start(self) -> Self:
        if self._thread is None:
            self._stop = threading.Event()  # readers of an earlier run keep theirs, set
            self._thread = threading.Thread(
                target=self._supervise, args=(self._stop,), name=self.name, daemon=True
            )
            self._thread.start()
        return self

    def wait(self, seconds: float) -> bool:
        """Sleep in a hook (a replay's pace) but wake at close: True when closing."""
        return self._stop.wait(max(0.0, seconds))

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop, and give the current reader what is left of `timeout_s` to release its
        device; a reader stuck in the driver is left to release it when its call returns."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        deadline = time.monotonic() + timeout_s
        thread.join(timeout_s)
        conn = self._conn
        if conn is not None and conn.thread is not None:
            conn.thread.join(max(0.0, deadline - time.monotonic()))

    # Threads ---------------------------------------------------------------------------------

    def _supervise(self, stop: threading.Event) -> None:
        while not stop.is_set():
            conn = self._conn = _Connection()
            conn.thread = threading.Thread(
                target=self._run, args=(conn, stop), name=f"{self.name}-reader", daemon=True
            )
            conn.thread.start()
            why = self._watch(conn, stop)
            conn.abandoned = True  # what this reader reads from here on is dropped
            if why == "stop":
                return
            if why == "ended":
                self.ended = True
                if self._on_end is not None:
                    self._on_end()
                return
            if conn.frames:
                self._backoff.reset()
            outage = Outage(
                why, conn.error, time.monotonic() - conn.last_frame, self._backoff.delay()
            )
            self.reconnects += 1
            if self._on_outage is not None:
                self._on_outage(outage)
            stop.wait(outage.delay_s)

    def _watch(self, conn: _Connection, stop: threading.Event) -> Cause | Literal["stop", "ended"]:
        poll = min(0.1, self.stall_timeout_s / 4)
        warn_after_s = self.stall_timeout_s
        while not stop.wait(poll):
            if conn.done.is_set():
                if conn.ended:
                    return "ended"
                return "read failed" if conn.opened else "cannot open"
            waited = time.monotonic() - conn.last_frame
            if conn.opened and waited > self.stall_timeout_s:
                return "stalled"
            # An open blocked in the driver (a stream that accepts and never answers) is not a
            # stall: there is no handle yet to give up. It is only said, less and less often.
            if not conn.opened and waited > warn_after_s:
                warn_after_s = 2 * waited
                if self._on_slow_open is not None:
                    self._on_slow_open(waited)
        return "stop"

    def _run(self, conn: _Connection, stop: threading.Event) -> None:
        try:
            handle = self._open()
        except Exception as exc:
            conn.error = exc
            conn.done.set()
            return
        try:
            conn.last_frame = time.monotonic()
            conn.opened = True  # after last_frame: the watch must not see a stale one
            while not (stop.is_set() or conn.abandoned):
                data = self._read(handle)
                if stop.is_set() or conn.abandoned:
                    break
                self._publish(data)
                conn.frames += 1
                conn.last_frame = time.monotonic()
        except EndOfStream:
            conn.ended = True
        except Exception as exc:
            conn.error = exc
        finally:
            try:
                self._close(handle)
            except Exception as exc:
                log.debug("%s: close failed: %s", self.name, exc)
            conn.done.set()
