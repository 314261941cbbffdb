"""Visitors and temperature checks per local day or hour: the numbers every report shows.

One `PeriodCounts` per period, zeros included, so that files of different days line up. A
check (a refused or unmeasured temperature check) is never a visitor: it has no age group or
gender and is counted apart.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from zoneinfo import ZoneInfo

from kiosk.days import Bucket, day_bucket, hour_buckets
from kiosk.labels import AGE_GROUPS, CHECK_STATUSES, GENDERS
from kiosk.store import Store


@dataclass(frozen=True, slots=True)
class PeriodCounts:
    bucket: Bucket  # the local day or hour, as a UTC interval
    visitors: dict[tuple[str, str], int]  # (age group, gender) -> visitors, every pair present
    checks: dict[str, int] = field(default_factory=dict)  # "fail" / "unmeasured" -> checks

    @property
    def total(self) -> int:
        return sum(self.visitors.values())

    def by_gender(self, gender: str) -> int:
        return sum(n for (_, g), n in self.visitors.items() if g == gender)

    def by_age(self, age: str) -> int:
        return sum(n for (a, _), n in self.visitors.items() if a == age)


def _zeros() -> dict[tuple[str, str], int]:
    return {(age, gender): 0 for age in AGE_GROUPS for gender in GENDERS}


def count_periods(
    store: Store, days: Iterable[date], tz: ZoneInfo, by: str = "day", device_id: str | None = None
) -> Iterator[PeriodCounts]:
    """Each local day (or each of its local hours: 23 to 25) in order; one query per day."""
    for day in days:
        buckets = hour_buckets(day, tz) if by == "hour" else [day_bucket(day, tz)]
        edges = [b.start for b in buckets] + [buckets[-1].end]
        visits = store.visit_counts_binned(edges, device_id)
        checks = store.check_counts_binned(edges, device_id)
        unknown = sum(visits.values()) - sum(
            n for (_, age, gender), n in visits.items() if age in AGE_GROUPS and gender in GENDERS
        )
        if unknown:
            print(f"kiosk-report: {day}: {unknown} visits with unknown labels", file=sys.stderr)
        for i, b in enumerate(buckets):
            counts = _zeros()
            for key in counts:
                counts[key] = visits.get((i, *key), 0)
            yield PeriodCounts(b, counts, {s: checks.get((i, s), 0) for s in CHECK_STATUSES})


def add_up(periods: Iterable[PeriodCounts], bucket: Bucket) -> PeriodCounts:
    """The sum of several periods, as one period spanning `bucket`."""
    visitors, checks = _zeros(), dict.fromkeys(CHECK_STATUSES, 0)
    for p in periods:
        for key, n in p.visitors.items():
            visitors[key] += n
        for status, n in p.checks.items():
            checks[status] += n
    return PeriodCounts(bucket, visitors, checks)
