"""The Reports page's downloads, made by kiosk-report's own functions (one code path): the
same rows, the same renderer, so the bytes are those of `kiosk-report daily|range|chart`."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from zoneinfo import ZoneInfo

from kiosk.days import days_between
from kiosk.report import (
    MAX_RANGE_DAYS,
    CountRow,
    count_records,
    count_rows,
    out_path,
    render_chart,
    write_table,
)
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
    rows = count_rows(store, days_between(first, last), tz, by, device_id)
    columns, records = count_records(rows, by)
    out = io.StringIO(newline="")
    write_table(out, columns, records, "csv")
    suffix = "-by-hour" if by == "hour" else ""
    name = out_path(f"kiosk-{device_id}-{{date}}{suffix}.csv", first, last)
    return Download(str(name), "text/csv", out.getvalue().encode("utf-8"))


def chart_png(store: Store, day: date, tz: ZoneInfo, device_id: str) -> Download:
    """`kiosk-report chart`: the PNG bar chart of one day."""
    rows = tuple(count_rows(store, [day], tz, "day", device_id))
    body = _chart(rows, day, device_id)
    return Download(f"kiosk-{device_id}-{day.isoformat()}.png", "image/png", body)


@lru_cache(maxsize=4)
def _chart(rows: tuple[CountRow, ...], day: date, device_id: str) -> bytes:
    """Drawn again only when the day's numbers change: matplotlib takes 0.2-0.5 s of kioskd's
    CPU for each chart, and the Reports page shows one on every visit."""
    out = io.BytesIO()
    render_chart(list(rows), day, device_id, out)
    return out.getvalue()
