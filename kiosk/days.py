"""Local days and hours as UTC intervals: the one place that turns the store's time zone into
query bounds, for reports, the daemon's status, MQTT statistics and retention.

Every bound is an aware UTC datetime. A local midnight inside a DST gap maps to the end of
the gap, an ambiguous one to its first occurrence; a DST change day has 23 or 25 hours, and a
repeated hour is told apart by its UTC offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Every real UTC offset is a multiple of 15 minutes, so hours are found in quarter steps.
_QUARTER = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One reported period: a local day, or one local hour of it, as a UTC interval."""

    day: date
    hour: str | None  # local start "HH:MM+HH:MM" (offset included: a DST day repeats one)
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local day, in UTC."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def local_day(now: datetime, tz: ZoneInfo) -> date:
    """The local calendar date of an instant (naive instants are UTC)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(tz).date()


def yesterday(tz: ZoneInfo, now: datetime | None = None) -> date:
    """The local date before the one that contains `now` (default: now)."""
    return local_day(now or datetime.now(UTC), tz) - timedelta(days=1)


def day_bucket(day: date, tz: ZoneInfo) -> Bucket:
    return Bucket(day, None, local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz))


def today(now: datetime, tz: ZoneInfo) -> Bucket:
    """The local day that contains `now`."""
    return day_bucket(local_day(now, tz), tz)


def days_bounds(first: date, last: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """From the first local day's start to the last one's end, inclusive, in UTC."""
    return local_midnight(first, tz), local_midnight(last + timedelta(days=1), tz)


def hour_buckets(day: date, tz: ZoneInfo) -> list[Bucket]:
    """The local hours of a day: 24, or 23/25 on a DST change day."""
    whole = day_bucket(day, tz)
    buckets: list[Bucket] = []
    key: tuple[int, timedelta | None] | None = None
    label = ""
    t = start = whole.start
    while t < whole.end:
        local = t.astimezone(tz)
        here = (local.hour, local.utcoffset())
        if here != key:
            if key is not None:
                buckets.append(Bucket(day, label, start, t))
            key, start, label = here, t, local.isoformat(timespec="minutes")[11:]
        t += _QUARTER
    buckets.append(Bucket(day, label, start, whole.end))
    return buckets


def days_between(first: date, last: date) -> Iterator[date]:
    """Every date from first to last, inclusive."""
    for n in range((last - first).days + 1):
        yield first + timedelta(days=n)
