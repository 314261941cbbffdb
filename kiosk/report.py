"""kiosk-report: the store manager's files, in the store's local time.

Subcommands: ``daily`` and ``range`` (one row per local day or hour: visitors, by gender, by
age group and by both, then the failed and unmeasured temperature checks, which are not
visitors; a last ``total`` row), ``export`` (one row per visit),
``chart`` (a PNG bar chart of a day; needs the optional ``chart`` extra), ``nightly`` (the
timer's: a day's files into ``report.folder`` and by e-mail, kiosk/deliver.py) and ``purge``
(retention). Reports open the database read-only, so they run beside a writing daemon (WAL).

Exit codes: 0 ok, 2 bad input (arguments, config, timezone, database), 1 anything else.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError

from kiosk.config import MAX_RETENTION_DAYS, ConfigError, ReportConfig, load_config
from kiosk.days import days_between, days_bounds, yesterday
from kiosk.labels import AGE_GROUPS, AGE_SPANS, GENDERS
from kiosk.logsetup import redact_url
from kiosk.periods import PeriodCounts, add_up, count_periods
from kiosk.retention import apply_retention, retention_cutoff
from kiosk.store import Store, StoreError, sqlite_path, url_problem
from kiosk.visit import Visit

EXIT_OK = 0
EXIT_INPUT = 2

# One row per period; the last row (date "total") sums the others. Local times are written
# "YYYY-MM-DD HH:MM:SS", which spreadsheets read as a date-time, with the UTC offset beside it.
PERIOD_COLUMNS: tuple[str, ...] = (
    "date",
    "start",
    "utc_offset",
    "visitors",
    *GENDERS,
    *(f"age_{a}" for a in AGE_GROUPS),
    *(f"{g}_{a}" for g in GENDERS for a in AGE_GROUPS),
    "failed_checks",
    "unmeasured_checks",
)
TOTAL = "total"
EXPORT_COLUMNS = (
    "id",
    "device_id",
    "started_at_utc",
    "started_at_local",
    "utc_offset",
    "ended_at_utc",
    "age_group",
    "age_confidence",
    "gender",
    "gender_confidence",
    "temperature_status",
    "frames",
    "model_version",
    "clock_synced",
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Dates a report accepts: a local day there and its neighbours convert to UTC in any zone.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 30)
# daily/range read one query per day; ten years is more than any store report needs.
MAX_RANGE_DAYS = 3700


# Table rows, produced lazily; closing the generator ends its query.
Records = Generator[tuple, None, None]


class InputError(Exception):
    """Something the user can fix: a bad argument, config, timezone or database."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where to read and how to render: from --config and/or --db/--tz/--device."""

    url: str
    tz: ZoneInfo | None  # None only for the central database: each device's own zone
    device_id: str | None
    retention_days: int | None
    report: ReportConfig | None = None  # the config's report section (nightly)
    report_folder: Path | None = None
    site: str | None = None  # central database: devices whose id starts with this


# ---- rendering -------------------------------------------------------------------------


def local_text(t: datetime, tz: ZoneInfo) -> tuple[str, str]:
    """("2026-03-29 03:00:00", "UTC+02:00"): a local date-time that spreadsheets read, and its
    offset (text that cannot start with a formula's "+" or "-")."""
    local = t.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S"), "UTC" + local.isoformat()[-6:]


def period_numbers(p: PeriodCounts) -> tuple[int, ...]:
    return (
        p.total,
        *(p.by_gender(g) for g in GENDERS),
        *(p.by_age(a) for a in AGE_GROUPS),
        *(p.visitors[(a, g)] for g in GENDERS for a in AGE_GROUPS),
        p.checks["fail"],
        p.checks["unmeasured"],
    )


def period_records(periods: Iterable[PeriodCounts], tz: ZoneInfo) -> Records:
    """One row per period, then the `total` row."""
    total: PeriodCounts | None = None
    for p in periods:
        total = p if total is None else add_up([total, p], p.bucket)
        yield (p.bucket.day.isoformat(), *local_text(p.bucket.start, tz), *period_numbers(p))
    if total is not None:
        yield (TOTAL, None, None, *period_numbers(total))


def _utc_text(t: datetime) -> str:
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def export_records(
    visits: Iterable[Visit], tz: ZoneInfo, temperature: bool
) -> tuple[tuple[str, ...], Records]:
    columns = EXPORT_COLUMNS + (("temperature_c",) if temperature else ())

    def records() -> Records:
        try:
            yield from (export_row(v, tz, temperature) for v in visits)
        finally:  # a query's generator ends its session now, not at garbage collection
            if close := getattr(visits, "close", None):
                close()

    return columns, records()


def export_row(v: Visit, tz: ZoneInfo, temperature: bool) -> tuple:
    row = (
        v.id,
        v.device_id,
        _utc_text(v.started_at),
        *local_text(v.started_at, tz),
        _utc_text(v.ended_at),
        v.age_group,
        round(v.age_confidence, 4),
        v.gender,
        round(v.gender_confidence, 4),
        v.temperature_status,
        v.frames,
        v.model_version,
        "true" if v.clock_synced else "false",
    )
    return (*row, v.temperature_c) if temperature else row


def write_table(out: IO[str], columns: tuple[str, ...], records: Iterable[tuple], fmt: str) -> None:
    """RFC 4180 CSV (CRLF, header row; None as an empty field) or a JSON array of objects."""
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(columns)
        writer.writerows(tuple(map(csv_cell, rec)) for rec in records)
        return
    out.write("[")
    for i, rec in enumerate(records):
        out.write(",\n " if i else "\n ")
        json.dump(dict(zip(columns, rec, strict=True)), out, ensure_ascii=False)
    out.write("\n]\n")


def csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a
    leading apostrophe (OWASP's advice for CSV injection); numbers stay numbers."""
    if isinstance(value, str) and value[:1] in _FORMULA_START:
        return "'" + value
    return value


@contextmanager
def open_output(path: str | None, binary: bool = False) -> Iterator[IO]:
    """stdout; or a file replaced atomically on success (a reader never sees half a file),
    through a symlink to the file it points at; or a FIFO or device, written as it is."""
    if path is None:
        if binary:
            raise InputError("this subcommand needs --out FILE")
        stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            yield stdout
        finally:
            try:
                stdout.flush()
            finally:
                stdout.detach()
        return
    target = Path(path).resolve()
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise InputError(f"--out {path}: {exc.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise InputError(f"--out {path} is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        with _open_for_write(target, binary) as out:
            yield out
        return
    with _replaced(target, mode, binary) as out:
        yield out


def _open_for_write(file: Path | int, binary: bool) -> IO:
    """Bytes, or UTF-8 text with the newlines as written (CSV's CRLF)."""
    return open(file, "wb") if binary else open(file, "w", encoding="utf-8", newline="")


@contextmanager
def _replaced(target: Path, mode: int | None, binary: bool) -> Iterator[IO]:
    """A temporary file beside `target`, renamed over it on success; an existing file keeps
    its permissions."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise InputError(f"--out {target}: {exc.strerror}") from None
    try:
        with _open_for_write(fd, binary) as out:
            yield out
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        else:
            os.chmod(tmp, stat.S_IMODE(mode))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_chart(day: PeriodCounts, device_id: str | None, out: IO) -> None:
    """A PNG bar chart: age groups on the x axis, female and male bars side by side."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise InputError(
            "chart needs matplotlib, the optional 'chart' extra: pip install 'kioskd[chart]'"
        ) from None
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.subplots()
    x = range(len(AGE_GROUPS))
    width = 0.4
    for k, (gender, colour) in enumerate(zip(GENDERS, ("#c2185b", "#1565c0"), strict=True)):
        values = [day.visitors[(age, gender)] for age in AGE_GROUPS]
        bars = ax.bar([i + (k - 0.5) * width for i in x], values, width, label=gender, color=colour)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(list(x), [f"{a}\n({s})" for a, s in zip(AGE_GROUPS, AGE_SPANS, strict=True)])
    ax.set_xlabel("age group (years), and the ages it counts")
    ax.set_ylabel("visitors")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    where = f" · {device_id}" if device_id else ""
    ax.set_title(f"Visitors on {day.bucket.day.isoformat()}{where}: {day.total}")
    notes = (
        f"temperature checks (not visitors): failed {day.checks['fail']}, "
        f"unmeasured {day.checks['unmeasured']}"
    )
    fig.text(0.01, 0.01, notes, fontsize=8, color="#555555")
    ax.legend()
    ax.margins(y=0.15)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, format="png")


# ---- command line ----------------------------------------------------------------------


def parse_day(text: str) -> date:
    if not _DATE_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"bad date {text!r}: expected YYYY-MM-DD")
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad date {text!r}: {exc}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"date {text} is outside {FIRST_DAY} to {LAST_DAY}")
    return day


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_RETENTION_DAYS:
        why = f"must be a whole number of days from 1 to {MAX_RETENTION_DAYS}"
        raise argparse.ArgumentTypeError(f"{why}, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    src = common.add_argument_group("data source")
    src.add_argument("--config", metavar="PATH", help="the daemon's config (database, tz, device)")
    src.add_argument("--db", metavar="URL", help="database URL or SQLite file (needs --tz)")
    src.add_argument("--tz", metavar="ZONE", help="IANA timezone of the store, e.g. Europe/Berlin")
    dev = src.add_mutually_exclusive_group()
    dev.add_argument("--device", metavar="ID", help="only this device (default: config's)")
    dev.add_argument("--all-devices", action="store_true", help="every device in the database")
    dev.add_argument(
        "--site", metavar="PREFIX", help="central database: devices whose id starts with this"
    )
    common.add_argument(
        "--out", metavar="FILE", help="output file (default stdout); {date} is replaced"
    )
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=("csv", "json"), default="csv")
    by = argparse.ArgumentParser(add_help=False)
    by.add_argument(
        "--by",
        choices=("day", "hour"),
        default="day",
        help="day, or a block of rows per local hour",
    )
    by.add_argument(
        "--per-device",
        action="store_true",
        help="central database: the rows of each device (a device_id column)",
    )

    p = argparse.ArgumentParser(prog="kiosk-report", description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser("daily", parents=[common, fmt, by], help="one day (default yesterday)")
    d.add_argument("--date", type=parse_day, help="YYYY-MM-DD, local (default: yesterday)")
    r = sub.add_parser("range", parents=[common, fmt, by], help="every day from..to, inclusive")
    r.add_argument("--from", dest="first", type=parse_day, required=True, metavar="DATE")
    r.add_argument("--to", dest="last", type=parse_day, required=True, metavar="DATE")
    e = sub.add_parser("export", parents=[common, fmt], help="one row per visit (for BI tools)")
    e.add_argument("--from", dest="first", type=parse_day, required=True, metavar="DATE")
    e.add_argument("--to", dest="last", type=parse_day, required=True, metavar="DATE")
    e.add_argument("--temperature", action="store_true", help="add temperature_c (health data)")
    c = sub.add_parser("chart", parents=[common], help="PNG bar chart of a day (matplotlib)")
    c.add_argument("--date", type=parse_day, help="YYYY-MM-DD, local (default: yesterday)")
    n = sub.add_parser(
        "nightly",
        parents=[common],
        help="yesterday's CSV, chart and summary into report.folder, e-mailed to report.email",
    )
    n.add_argument("--date", type=parse_day, help="YYYY-MM-DD, local (default: yesterday)")
    g = sub.add_parser("purge", parents=[common], help="delete old visits and checks")
    g.add_argument(
        "--older-than",
        type=positive_int,
        metavar="DAYS",
        help="keep today and this many full days (default: config store.retention_days)",
    )
    g.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete none")
    return p


def resolve_source(args: argparse.Namespace) -> Source:
    cfg = None
    if args.config:
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise InputError(f"config {exc}") from None
    url = args.db or (cfg.database_url if cfg else None)
    if not url:
        raise InputError("give --config PATH or --db URL")
    if "://" not in url:
        url = f"sqlite:///{Path(url).resolve()}"
    zone = args.tz or (cfg.timezone if cfg else None)
    tz = None  # the central database can do without: each device's own zone
    if zone:
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(
                f"unknown timezone {zone!r} (use an IANA name like Europe/Berlin)"
            ) from None
    wide = args.all_devices or args.site
    device = None if wide else (args.device or (cfg.device_id if cfg else None))
    if cfg is None:
        return Source(url, tz, device, None, site=args.site)
    return Source(
        url, tz, device, cfg.store.retention_days, cfg.report, cfg.report_folder, args.site
    )


def central(url: str) -> bool:
    """True when `url` is kiosk-collect's PostgreSQL (not one kiosk's own store)."""
    if sqlite_path(url) is not None or not url.startswith("postgresql"):
        return False
    if why := url_problem(url):
        raise InputError(f"database {redact_url(url)}: {why}")
    try:
        from kiosk.centraldb.query import is_central
    except ImportError as exc:
        why = f"{exc.name} is not installed: pip install 'kioskd[central]'"
        raise InputError(f"the central database needs the central extra ({why})") from None
    from kiosk.store import make_engine

    engine = make_engine(url)
    try:
        return is_central(engine)
    finally:
        engine.dispose()


def open_store(url: str, read_only: bool = True) -> Store:
    if why := url_problem(url):
        raise InputError(f"database {redact_url(url)}: {why}")
    path = sqlite_path(url)
    if path is not None:
        try:
            mode = path.stat().st_mode
        except PermissionError:
            raise InputError(f"{path}: permission denied (run as the kiosk user)") from None
        except OSError:
            mode = 0
        if not stat.S_ISREG(mode):
            raise InputError(f"database not found: {path}")
    try:
        return Store(url, read_only=read_only, create=False)
    except (ArgumentError, NoSuchModuleError):
        raise InputError(f"not a usable database URL: {redact_url(url)!r}") from None
    except StoreError as exc:
        raise InputError(f"cannot read the database {path or redact_url(url)}: {exc}") from None


def period(args: argparse.Namespace, tz: ZoneInfo | None) -> tuple[date, date]:
    """The first and last local day a subcommand covers (--date, or --from and --to)."""
    if args.command in ("daily", "chart", "nightly"):
        day = args.date or yesterday(tz or ZoneInfo("UTC"))
        return day, day
    first, last = args.first, args.last
    if first > last:
        raise InputError(f"--from {first} is after --to {last}")
    if args.command == "range" and (last - first).days >= MAX_RANGE_DAYS:
        raise InputError(f"range covers more than {MAX_RANGE_DAYS} days; split it")
    return first, last


def out_path(template: str | None, first: date, last: date) -> str | None:
    """--out with {date} replaced: the day, or FIRST_LAST for a range."""
    if template is None:
        return None
    when = first.isoformat() if first == last else f"{first.isoformat()}_{last.isoformat()}"
    return template.replace("{date}", when)


def warn_unsynced(
    store: Store, first: date, last: date, tz: ZoneInfo, device_id: str | None
) -> None:
    """Say on stderr when the period holds visits stamped before the clock was synchronised
    (a board without a real-time clock that never reached NTP): the numbers stay, the reader
    learns which of them may sit on the wrong day or hour."""
    start, end = days_bounds(first, last, tz)
    n = store.unsynced_visit_count(start, end, device_id)
    if n:
        print(
            f"kiosk-report: warning: {n} {'visit was' if n == 1 else 'visits were'} stamped "
            f"before the system clock was synchronised ({first} to {last}); their times may be "
            "wrong (export shows them with clock_synced false)",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    source = resolve_source(args)
    if central(source.url):
        from kiosk.reportcentral import run_central

        return run_central(args, source)
    if source.tz is None:
        raise InputError("--db needs --tz ZONE, the store's timezone (e.g. Europe/Berlin)")
    if args.site or getattr(args, "per_device", False):
        raise InputError("--site and --per-device need the central database (kiosk-collect)")
    return run_store(args, source, source.tz)


def run_store(args: argparse.Namespace, source: Source, tz: ZoneInfo) -> int:
    """A subcommand on one kiosk's own database."""
    if args.command == "purge":
        days = args.older_than or source.retention_days
        if days is None:
            raise InputError(
                "purge needs --older-than DAYS (or --config with store.retention_days)"
            )
        store = open_store(source.url, read_only=args.dry_run)
        try:
            visits, checks = apply_retention(
                store, days, tz, device_id=source.device_id, dry_run=args.dry_run
            )
        finally:
            store.close()
        cutoff = retention_cutoff(days, tz).astimezone(tz)
        verb = "would purge" if args.dry_run else "purged"
        devices = f"device {source.device_id}" if source.device_id else "all devices"
        print(
            f"{verb} {visits} visits and {checks} checks of {devices} before {cutoff.isoformat()}"
        )
        return EXIT_OK

    store = open_store(source.url)
    try:
        first, last = period(args, tz)
        if args.command == "nightly":
            return run_nightly(store, source, tz, first)
        if args.command == "chart":
            (counts,) = count_periods(store, [first], tz, "day", source.device_id)
            with open_output(out_path(args.out, first, first), binary=True) as out:
                render_chart(counts, source.device_id, out)
            return EXIT_OK
        if args.command == "export":
            start, end = days_bounds(first, last, tz)
            in_period = store.iter_visits(start, end, source.device_id)
            columns, records = export_records(in_period, tz, args.temperature)
        else:
            periods = count_periods(store, days_between(first, last), tz, args.by, source.device_id)
            columns, records = PERIOD_COLUMNS, period_records(periods, tz)
        # closing: a reader that leaves early (`| head`) must not leave a query open behind
        # the store's close, to fail later at garbage collection.
        with closing(records), open_output(out_path(args.out, first, last)) as out:
            write_table(out, columns, records, args.format)
        warn_unsynced(store, first, last, tz, source.device_id)
        return EXIT_OK
    finally:
        store.close()


def run_nightly(store: Store, source: Source, tz: ZoneInfo, day: date) -> int:
    from kiosk.deliver import nightly

    if source.report is None or source.report_folder is None:
        raise InputError("nightly needs --config (its report section says where files go)")
    code = nightly(store, day, tz, source.device_id, source.report, source.report_folder)
    warn_unsynced(store, day, day, tz, source.device_id)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message; 2 for bad arguments
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    try:
        return run(args)
    except InputError as exc:
        print(f"kiosk-report: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except DatabaseError as exc:
        why = str(exc.orig) if exc.orig is not None else str(exc)
        if "no such table" in why:
            why = "not a kiosk database (no visits table)"
        print(f"kiosk-report: error: cannot read the database: {why}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:  # `kiosk-report daily | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
