"""kiosk-report on the central database (kiosk-collect's PostgreSQL): the same files as on a
kiosk, for one device (``--device``), a site (``--site``, a device-id prefix) or all, summed
or with a row block per device (``--per-device``).

Each visit and check is binned in its own kiosk's time zone (the one sent with it), so
"2026-06-10" is every device's own local day; ``--tz`` renders everything in one zone
instead. Queries: kiosk/centraldb/query.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from contextlib import closing
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from kiosk.centraldb.query import CentralDB, Selection
from kiosk.days import day_bucket, days_between, days_bounds, hour_buckets
from kiosk.labels import AGE_GROUPS, GENDERS
from kiosk.report import (
    CHECK_ROWS,
    EXPORT_COLUMNS,
    CountRow,
    InputError,
    Records,
    Source,
    count_records,
    export_row,
    open_output,
    out_path,
    period,
    render_chart,
    write_table,
)

UTC_ZONE = ZoneInfo("UTC")
# UTC offsets run from -12 h to +14 h: a local day's rows in any zone lie within these
# margins around the UTC day.
_BEFORE, _AFTER = timedelta(hours=14), timedelta(hours=12)


def central_count_rows(
    db: CentralDB,
    days: Iterable[date],
    by: str,
    sel: Selection,
    tz: ZoneInfo | None,
    per_device: bool,
) -> Iterator[CountRow]:
    """Every (device or all, period, age group, gender) row, zeros included, then the check
    rows; the devices of a per-device report are every registered one in the selection."""
    listed = [d.device_id for d in db.devices(sel)] if per_device else [None]
    for day in days:
        lo, hi = days_bounds(day, day, UTC_ZONE)
        zones = [tz.key] if tz else db.zones(lo - _BEFORE, hi + _AFTER, sel) or ["UTC"]
        for zone in zones:
            z = ZoneInfo(zone)
            buckets = hour_buckets(day, z) if by == "hour" else [day_bucket(day, z)]
            edges = [b.start for b in buckets] + [buckets[-1].end]
            only = None if tz else zone
            vc = _fold(db.visit_counts(edges, sel, only), per_device)
            cc = _fold(db.check_counts(edges, sel, only), per_device)
            for dev in listed:
                for i, b in enumerate(buckets):
                    for age in AGE_GROUPS:
                        for gender in GENDERS:
                            n = vc.get((dev, i, age, gender), 0)
                            yield CountRow(day, b.hour, age, gender, n, dev)
                    for status, label in CHECK_ROWS:
                        yield CountRow(day, b.hour, label, None, cc.get((dev, i, status), 0), dev)


def _fold(counts: dict, per_device: bool) -> dict:
    """Counts keyed by device, or summed over devices (key None) for a summed report."""
    if per_device:
        return counts
    out: dict = {}
    for key, n in counts.items():
        k = (None, *key[1:])
        out[k] = out.get(k, 0) + n
    return out


def summed(rows: Iterable[CountRow]) -> list[CountRow]:
    """Rows with the same period and label added up (several zones, one summed report)."""
    acc: dict[tuple, CountRow] = {}
    for r in rows:
        key = (r.day, r.hour, r.age_group, r.gender, r.device_id)
        old = acc.get(key)
        acc[key] = r if old is None else CountRow(*key[:4], old.visitors + r.visitors, r.device_id)
    return list(acc.values())


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
    if args.command == "purge":
        raise InputError(
            "the central database is purged by kiosk-collect (its retention.* settings)"
        )
    db = CentralDB(source.url)
    try:
        first, last = period(args, source.tz)
        if args.command == "chart":
            day = summed(central_count_rows(db, [first], "day", sel, source.tz, False))
            with open_output(out_path(args.out, first, first), binary=True) as out:
                render_chart(day, first, sel.label(), out)
            return 0
        if args.command == "export":
            columns, records = export_records(db, first, last, sel, source.tz, args.temperature)
        else:
            rows = central_count_rows(
                db, days_between(first, last), args.by, sel, source.tz, args.per_device
            )
            columns, records = count_records(summed(rows), args.by, args.per_device)
        with closing(records), open_output(out_path(args.out, first, last)) as out:
            write_table(out, columns, records, args.format)
        return 0
    finally:
        db.close()
