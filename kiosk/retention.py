"""Retention: visits and checks older than the kept local days leave the database.

The store layer's policy, used by the daemon once a day and by ``kiosk-report purge``. It
deletes one day per transaction, so a writing daemon never waits long for the lock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from kiosk.config import MAX_RETENTION_DAYS
from kiosk.days import local_day, local_midnight
from kiosk.store import Store


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
