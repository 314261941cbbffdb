"""Is the wall clock right yet? Boards without a battery RTC boot with a clock in the past
(fake-hwclock restores the last shutdown time) and step forward when NTP syncs.

Tracks and durations use the monotonic clock, so a step never splits or merges a visit. What a
step does change is the UTC stamp of records written before it. The daemon stores such records
flagged (``clock_synced = false``), remembers the wall-minus-monotonic offset they were stamped
with, and once the clock is trusted shifts them by how far the offset moved, clearing the flag.
Records from a run that ended before the clock was trusted keep the flag: after a reboot the
monotonic clock restarts, so nothing can tell how wrong their stamps were.
"""

from __future__ import annotations

import ctypes
import functools
import time
from datetime import timedelta
from pathlib import Path

#: systemd-timesyncd creates this file once it has synchronised the clock.
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
TIMESYNCD_DIR = TIMESYNCD_FLAG.parent
_TIME_ERROR = 5  # adjtimex(): the kernel's clock is not synchronised (STA_UNSYNC)


def wall_offset_s() -> float:
    """UTC wall clock minus the monotonic clock: changes only when the wall clock is stepped."""
    return time.time() - time.monotonic()


@functools.cache
def _adjtimex():
    """libc's adjtimex from the symbols already loaded into this process (no library search)."""
    return getattr(ctypes.CDLL(None, use_errno=True), "adjtimex", None)


def kernel_synced() -> bool | None:
    """The kernel's NTP status (chrony, ntpd and timesyncd keep it); None if unavailable.

    A read-only adjtimex(); systemd's ProtectClock= refuses it with EPERM.
    """
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    timex = ctypes.create_string_buffer(512)  # struct timex with modes = 0: read only
    state = adjtimex(timex)
    if state < 0:  # EPERM under a seccomp filter, ENOSYS elsewhere
        return None
    return state != _TIME_ERROR


class ClockTrust:
    """Answers whether the wall clock can be trusted, per ``clock.trust``.

    * ``auto``: the kernel's NTP status; where that cannot be read (sandboxed), timesyncd's
      flag file when timesyncd runs; otherwise trusted (nothing to go by).
    * ``always``: a board with a battery-backed RTC.
    * a path: trusted once that file exists (e.g. touched by a chrony or NTP hook).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def synced(self) -> bool:
        if self.mode == "always":
            return True
        if self.mode != "auto":
            return Path(self.mode).exists()
        kernel = kernel_synced()
        if kernel is not None:
            return kernel
        if TIMESYNCD_DIR.is_dir():
            return TIMESYNCD_FLAG.exists()
        return True


def shift(offset_then: float, offset_now: float) -> timedelta:
    """How far to move a stamp taken when the wall-clock offset was `offset_then`."""
    return timedelta(seconds=offset_now - offset_then)
