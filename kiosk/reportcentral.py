"""kiosk-report on the central database (kiosk-collect's PostgreSQL): the same files as on a
kiosk, for one device (``--device``), a site (``--site``, a device-id prefix) or all, summed
or with the rows of each device (``--per-device``).

Each visit and check is counted in its own kiosk's time zone (the one sent with it), so
"2026-06-10" is every device's own local day and "09:00" every store's own nine o'clock;
``--tz`` renders everything in one zone instead. A summed row whose devices sit in
different UTC offsets says ``local`` in its ``utc_offset`` column. Queries:
kiosk/centraldb/query.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from kiosk.centraldb.query import CentralDB, Selection
from kiosk.days import day_bucket, days_between, days_bounds, hour_buckets
from kiosk.labels import AGE_GROUPS, CHECK_STATUSES, GENDERS
from kiosk.periods import PeriodCounts, add_up
from kiosk.report import (
    EXPORT_COLUMNS,
    PERIOD_COLUMNS,
    TOTAL,
    InputError,
    Records,
    Source,
    export_row,
    local_text,
    open_output,
    out_path,
    period,
    period_numbers,
    render_chart,
    write_table,
)

UTC_ZONE = ZoneInfo("UTC")
# UTC offsets run from -12 h to +14 h: a local day's rows in any zone lie within these
# margins around the UTC day.
_BEFORE, _AFTER = timedelta(hours=14), timedelta(hours=12)
MIXED = "local"  # the utc_offset of a summed row whose devices' offsets differ


@dataclass(frozen=True, slots=True)
class CentralPeriod:
    """One local period of one device (or of all, device None), as a report row shows it."""

    device_id: str | None
    start: str  # local "YYYY-MM-DD HH:MM:SS"
    utc_offset: str  # "UTC+02:00", or MIXED
    counts: PeriodCounts


def central_periods(
    db: CentralDB,
    days: Iterable[date],
    by: str,
    sel: Selection,
    tz: ZoneInfo | None,
    per_device: bool,
) -> Iterator[CentralPeriod]:
    """Each day's periods, zeros included; the devices of a per-device report are every
    registered one in the selection. A summed report adds up the same local period of every
    zone."""
    listed: list[str | None] = [None]
    if per_device:
        listed = [d.device_id for d in db.devices(sel)]
    for day in days:
        lo, hi = days_bounds(day, day, UTC_ZONE)
        zones = [tz.key] if tz else db.zones(lo - _BEFORE, hi + _AFTER, sel) or ["UTC"]
        rows = [p for zone in zones for p in _zone_periods(db, day, by, sel, zone, tz, listed)]
        yield from _merged(rows)


def _zone_periods(
    db: CentralDB,
    day: date,
    by: str,
    sel: Selection,
    zone: str,
    tz: ZoneInfo | None,
    listed: list[str | None],
) -> Iterator[CentralPeriod]:
    z = ZoneInfo(zone)
    buckets = hour_buckets(day, z) if by == "hour" else [day_bucket(day, z)]
    edges = [b.start for b in buckets] + [buckets[-1].end]
    only = None if tz else zone  # with --tz every row, else the rows sent with this zone
    summed = listed == [None]
    vc = _fold(db.visit_counts(edges, sel, only), summed)
    cc = _fold(db.check_counts(edges, sel, only), summed)
    for dev in listed:
        for i, b in enumerate(buckets):
            visitors = {(a, g): vc.get((dev, i, a, g), 0) for a in AGE_GROUPS for g in GENDERS}
            checks = {s: cc.get((dev, i, s), 0) for s in CHECK_STATUSES}
            yield CentralPeriod(dev, *local_text(b.start, z), PeriodCounts(b, visitors, checks))


def _fold(counts: dict, summed: bool) -> dict:
    """Counts keyed by device, or added up over devices (key None) for a summed report."""
    if not summed:
        return counts
    out: dict = {}
    for key, n in counts.items():
        k = (None, *key[1:])
        out[k] = out.get(k, 0) + n
    return out


def _merged(rows: Iterable[CentralPeriod]) -> list[CentralPeriod]:
    """The periods with the same device and local start added up, in their first order."""
    acc: dict[tuple[str | None, str], CentralPeriod] = {}
    for r in rows:
        key = (r.device_id, r.start)
        old = acc.get(key)
        if old is None:
            acc[key] = r
            continue
        offset = old.utc_offset if old.utc_offset == r.utc_offset else MIXED
        both = add_up([old.counts, r.counts], old.counts.bucket)
        acc[key] = CentralPeriod(r.device_id, r.start, offset, both)
    return list(acc.values())


def central_records(periods: Iterable[CentralPeriod], per_device: bool) -> Records:
    """One row per period (after a device_id column when per device), then `total`."""
    total: PeriodCounts | None = None
    for p in periods:
        c = p.counts
        total = c if total is None else add_up([total, c], c.bucket)
        head = (p.device_id,) if per_device else ()
        yield (*head, c.bucket.day.isoformat(), p.start, p.utc_offset, *period_numbers(c))
    if total is not None:
        head = (None,) if per_device else ()
        yield (*head, TOTAL, None, None, *period_numbers(total))


def export_records(
    db: CentralDB, first: date, last: date, sel: Selection, tz: ZoneInfo | None, temperature: bool
) -> tuple[tuple[str, ...], Records]:
    """One row per visit whose local start day (its own zone, or --tz) is in first..last."""
    columns = EXPORT_COLUMNS + (("temperature_c",) if temperature else ())
    lo, hi = days_bounds(first, last, UTC_ZONE)

    def records() -> Records:
        rows = db.iter_visits(lo - _BEFORE, hi + _AFTER, sel)
        with closing(rows):
            for visit, zone in rows:
                z = tz or ZoneInfo(zone)
                if first <= visit.started_at.astimezone(z).date() <= last:
                    yield export_row(visit, z, temperature)

    return columns, records()


def run_central(args: argparse.Namespace, source: Source) -> int:
    sel = Selection(source.device_id, source.site)
    if args.command in ("purge", "nightly"):
        raise InputError(
            f"{args.command} is for one kiosk's database; the central database's retention is "
            "kiosk-collect's (retention.*)"
        )
    db = CentralDB(source.url)
    try:
        first, last = period(args, source.tz)
        if args.command == "chart":
            day = [p.counts for p in central_periods(db, [first], "day", sel, source.tz, False)]
            counts = add_up(day, day_bucket(first, source.tz or UTC_ZONE))
            with open_output(out_path(args.out, first, first), binary=True) as out:
                render_chart(counts, sel.label(), out)
            return 0
        if args.command == "export":
            columns, records = export_records(db, first, last, sel, source.tz, args.temperature)
        else:
            days = days_between(first, last)
            periods = central_periods(db, days, args.by, sel, source.tz, args.per_device)
            columns = (("device_id",) if args.per_device else ()) + PERIOD_COLUMNS
            records = central_records(periods, args.per_device)
        with closing(records), open_output(out_path(args.out, first, last)) as out:
            write_table(out, columns, records, args.format)
        return 0
    finally:
        db.close()
