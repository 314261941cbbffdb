"""Retention: visits and checks older than the kept local days leave the database.

The store layer's policy, used by the daemon once a day and by ``kiosk-report purge``. It
deletes one day per transaction, so a writing daemon never waits long for the lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError

from kiosk.config import MAX_RETENTION_DAYS
from kiosk.days import local_day, local_midnight
from kiosk.lifecycle import Part
from kiosk.store import Store, driver_message

log = logging.getLogger("kioskd")


def retention_cutoff(
    days: int, tz: ZoneInfo | None = None, now: datetime | None = None
) -> datetime:
    """Start of the oldest kept local day: today and the `days` full days before it stay."""
    tz = tz or ZoneInfo("UTC")
    today = local_day(now or datetime.now(UTC), tz)
    return local_midnight(today - timedelta(days=days), tz)


def apply_retention(
    store: Store,
    days: int,
    tz: ZoneInfo | None = None,
    now: datetime | None = None,
    device_id: str | None = None,
    dry_run: bool = False,
) -> tuple[int, int]:
    """Delete visits and checks older than `days` local days, of one device or all; returns
    (visits, checks). `dry_run` counts them and deletes nothing."""
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise ValueError(f"retention must be 1 to {MAX_RETENTION_DAYS} days, got {days}")
    cutoff = retention_cutoff(days, tz, now)
    if dry_run:
        return store.count_older(cutoff, device_id)
    visits = checks = 0
    while (oldest := store.oldest_record_at(device_id)) is not None and oldest < cutoff:
        # skips empty stretches
        v, c = store.purge(min(oldest + timedelta(days=1), cutoff), device_id)
        visits, checks = visits + v, checks + c
    return visits, checks


class RetentionWorker(Part):
    """The daemon's daily purge, on its own thread: the frame loop and the watchdog pings go
    on, and one day per transaction keeps the recorder's waits for the write lock short."""

    # A purge deletes one day per transaction (~0.1 s with 100k outbox rows); close waits this.
    JOIN_S = 10.0

    def __init__(
        self,
        store: Store,
        days: int,
        tz: ZoneInfo,
        device_id: str,
        clock_trusted: Callable[[], bool],
    ) -> None:
        self.store = store
        self.days = days
        self.tz = tz
        self.device_id = device_id
        self.clock_trusted = clock_trusted
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        """Purge now in the background, unless a purge is still running."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self.purge, name="kiosk-retention", daemon=True)
        self._thread.start()

    def purge(self) -> None:
        if not self.clock_trusted():
            # A clock years ahead would purge everything; wait until it is trusted.
            log.info("retention: skipped until the wall clock is trusted")
            return
        try:
            visits, checks = apply_retention(
                self.store, self.days, self.tz, device_id=self.device_id
            )
        except SQLAlchemyError as exc:
            log.error("retention purge failed: %s", driver_message(exc))
            return
        if visits or checks:
            log.info("retention: deleted %d visits and %d checks older than %d days",
                     visits, checks, self.days)  # fmt: skip

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.JOIN_S)
