"""What the Today page and `GET /api/today` show, read from the store in the store's timezone.

Today's totals come from `kiosk.daystats.day_stats` (the same numbers as the MQTT `stats`
message), the hours and the age x gender table from `kiosk.periods` (as `kiosk-report daily
--by hour` counts them), the 30-day trend from one indexed range scan, the latest visits from
one indexed lookup. Bounds come from `kiosk.days`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kiosk.days import day_bucket, local_day
from kiosk.daystats import day_stats
from kiosk.labels import AGE_GROUPS, GENDERS
from kiosk.periods import PeriodCounts, add_up, count_periods
from kiosk.store import Store
from kiosk.wire import Stats, stats_payload

TREND_DAYS = 30
LATEST_VISITS = 10


@dataclass(frozen=True, slots=True)
class Hour:
    label: str  # local start, "HH:MM+HH:MM"
    visitors: dict[str, int]  # by gender
    failed: int
    unmeasured: int


@dataclass(frozen=True, slots=True)
class RecentVisit:
    at: datetime  # local time of the visit's start
    age_group: str
    gender: str
    confidence: float  # gender confidence
    temperature_status: str


@dataclass(frozen=True, slots=True)
class Today:
    stats: Stats
    age_gender: dict[str, dict[str, int]]  # age group -> gender -> visitors
    hours: list[Hour]
    trend: list[tuple[str, int]]  # (local date, visitors), oldest first, today last
    latest: list[RecentVisit]


def hours_of(store: Store, now: datetime, tz: ZoneInfo, device_id: str) -> list[PeriodCounts]:
    """Today's local hours, as `kiosk-report daily --by hour` counts them."""
    return list(count_periods(store, [local_day(now, tz)], tz, "hour", device_id))


def age_gender(hours: list[PeriodCounts]) -> dict[str, dict[str, int]]:
    day = add_up(hours, hours[0].bucket)
    return {age: {g: day.visitors[(age, g)] for g in GENDERS} for age in AGE_GROUPS}


def hour_of(p: PeriodCounts) -> Hour:
    label = p.bucket.hour or ""
    return Hour(label, {g: p.by_gender(g) for g in GENDERS}, p.checks["fail"],
                p.checks["unmeasured"])  # fmt: skip


def trend_of(store: Store, now: datetime, tz: ZoneInfo, device_id: str) -> list[tuple[str, int]]:
    last = local_day(now, tz)
    days = [last - timedelta(days=n) for n in range(TREND_DAYS - 1, -1, -1)]
    edges = [day_bucket(d, tz).start for d in days] + [day_bucket(last, tz).end]
    counts = store.visit_counts_binned(edges, device_id)
    per_day = [0] * len(days)
    for (i, _, _), n in counts.items():
        per_day[i] += n
    return [(d.isoformat(), n) for d, n in zip(days, per_day, strict=True)]


def today(store: Store, device_id: str, tz: ZoneInfo, now: datetime | None = None) -> Today:
    now = now or datetime.now(UTC)
    hours = hours_of(store, now, tz, device_id)
    latest = [
        RecentVisit(v.started_at.astimezone(tz), v.age_group, v.gender, v.gender_confidence,
                    v.temperature_status)
        for v in store.latest_visits(LATEST_VISITS, device_id)
    ]  # fmt: skip
    return Today(
        stats=day_stats(store, device_id, tz, now=now),
        age_gender=age_gender(hours),
        hours=[hour_of(p) for p in hours],
        trend=trend_of(store, now, tz, device_id),
        latest=latest,
    )


def totals_payload(view: Today) -> dict[str, Any]:
    """`GET /api/today`: the MQTT stats object plus the age group x gender table."""
    return stats_payload(view.stats) | {"age_gender": view.age_gender}


def page_payload(view: Today) -> dict[str, Any]:
    """Everything the Today page draws."""
    return totals_payload(view) | {
        "hours": [
            {"hour": h.label[:5], "offset": h.label[5:], "visitors": h.visitors,
             "failed": h.failed, "unmeasured": h.unmeasured}
            for h in view.hours
        ],
        "trend": [{"date": d, "visitors": n} for d, n in view.trend],
        "latest": [
            {"at": v.at.strftime("%H:%M:%S"), "date": v.at.date().isoformat(),
             "age_group": v.age_group, "gender": v.gender,
             "confidence": round(v.confidence, 2), "temperature": v.temperature_status}
            for v in view.latest
        ],
    }  # fmt: skip
