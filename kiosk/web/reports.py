"""The Reports page's downloads, made by kiosk-report's own functions (one code path): the
same periods (kiosk/periods.py), rows and renderer (kiosk/report.py) and the nightly folder's
file names (kiosk/deliver.py), so the bytes are those of `kiosk-report daily|range|chart`."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from zoneinfo import ZoneInfo

from kiosk.days import Bucket, days_between
from kiosk.deliver import file_names
from kiosk.periods import PeriodCounts, count_periods
from kiosk.report import MAX_RANGE_DAYS, PERIOD_COLUMNS, period_records, render_chart, write_table
from kiosk.store import Store


class BadRequest(ValueError):
    """A report the user asked for wrongly (dates the wrong way round, too long a range)."""


@dataclass(frozen=True, slots=True)
class Download:
    filename: str
    mimetype: str
    body: bytes


def counts_csv(
    store: Store, first: date, last: date, by: str, tz: ZoneInfo, device_id: str
) -> Download:
    """`kiosk-report daily` (first == last) or `range`, as CSV."""
    if first > last:
        raise BadRequest(f"from {first} is after to {last}")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise BadRequest(f"range covers more than {MAX_RANGE_DAYS} days; split it")
    periods = count_periods(store, days_between(first, last), tz, by, device_id)
    out = io.StringIO(newline="")
    write_table(out, PERIOD_COLUMNS, period_records(periods, tz), "csv")
    name = file_names(first, device_id)["csv"]
    if first != last:
        name = f"range-{first.isoformat()}_{last.isoformat()}-{device_id}.csv"
    if by == "hour":
        name = name.replace(".csv", "-by-hour.csv")
    return Download(name, "text/csv", out.getvalue().encode("utf-8"))


def chart_png(store: Store, day: date, tz: ZoneInfo, device_id: str) -> Download:
    """`kiosk-report chart`: the PNG bar chart of one day."""
    (counts,) = count_periods(store, [day], tz, "day", device_id)
    visitors, checks = tuple(counts.visitors.items()), tuple(counts.checks.items())
    body = _chart(counts.bucket, visitors, checks, device_id)
    return Download(file_names(day, device_id)["chart"], "image/png", body)


@lru_cache(maxsize=4)
def _chart(
    bucket: Bucket,
    visitors: tuple[tuple[tuple[str, str], int], ...],
    checks: tuple[tuple[str, int], ...],
    device_id: str,
) -> bytes:
    """Drawn again only when the day's numbers change: matplotlib takes 0.2-0.5 s of kioskd's
    CPU for each chart, and the Reports page shows one on every visit."""
    out = io.BytesIO()
    render_chart(PeriodCounts(bucket, dict(visitors), dict(checks)), device_id, out)
    return out.getvalue()
