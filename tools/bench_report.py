"""Benchmark `kiosk-report daily` over a large visits database (target: <= 1 s at 1M visits).

The database is made with the project's Store (schema, indexes, pragmas), then filled with
bulk SQL (one transaction, executemany) in the exact row format SQLAlchemy writes, so the
report reads it like a database kioskd wrote. Visits are spread evenly over `--days` local
days ending 2026-11-27, at random times within opening hours (08:00-20:00 local, so DST days
are honoured), random age group and gender; ~2 % failed and ~1 % unmeasured checks on top.

    python tools/bench_report.py                       # 1,000,000 visits over 365 days
    python tools/bench_report.py --days 1 --db /tmp/one-day.db   # worst case: all on one day

The database is kept and reused (same --visits/--days) unless --rebuild is given.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time as clock
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kiosk import report  # noqa: E402
from kiosk.days import days_between  # noqa: E402
from kiosk.labels import AGE_GROUPS, GENDERS  # noqa: E402
from kiosk.periods import count_periods  # noqa: E402
from kiosk.store import Store  # noqa: E402

LAST_DAY = date(2026, 11, 27)
OPEN_S = 12 * 3600  # opening hours: 08:00-20:00 local
VISIT_LENGTH = timedelta(seconds=4)


def _uuid4(bits: int) -> str:
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def visit_rows(n: int, days: int, tz: ZoneInfo, rng: random.Random) -> Iterator[tuple]:
    """n visits in started_at order, evenly over the days, inside local opening hours."""
    first = LAST_DAY - timedelta(days=days - 1)
    rand, bits = rng.random, rng.getrandbits
    done = 0
    for d in range(days):
        day = first + timedelta(days=d)
        opening = datetime.combine(day, time(8), tzinfo=tz)
        base = opening.astimezone(UTC).replace(tzinfo=None)
        count = (n * (d + 1)) // days - done
        done += count
        for s in sorted(rand() * OPEN_S for _ in range(count)):
            start = base + timedelta(seconds=s)
            yield (
                _uuid4(bits(128)),
                "bench-1",
                start.isoformat(" ", "microseconds"),  # SQLAlchemy's SQLite DateTime format
                (start + VISIT_LENGTH).isoformat(" ", "microseconds"),
                AGE_GROUPS[int(rand() * len(AGE_GROUPS))],
                0.8,
                GENDERS[bits(1)],
                0.9,
                36.6,
                "pass",
                12,
                "bench",
            )


def build(path: Path, n: int, days: int, tz: ZoneInfo) -> float:
    """Create the schema with Store, then bulk-insert n visits and ~3 % checks."""
    t0 = clock.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    Store(f"sqlite:///{path}").close()
    rng = random.Random(42)
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    with con:
        con.executemany(
            "INSERT INTO visits (id, device_id, started_at, ended_at, age_group, age_confidence,"
            " gender, gender_confidence, temperature_c, temperature_status, frames,"
            " model_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            visit_rows(n, days, tz, rng),
        )
        checks = (
            (_uuid4(rng.getrandbits(128)), "bench-1", at, status, temp)
            for (_, _, at, *_rest) in visit_rows(n // 33, days, tz, random.Random(7))
            for status, temp in [("fail", 38.2) if rng.random() < 0.67 else ("unmeasured", None)]
        )
        con.executemany(
            "INSERT INTO checks (id, device_id, at, status, temperature_c) VALUES (?,?,?,?,?)",
            checks,
        )
        con.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('bench', ?)", (f"{n}/{days}",)
        )
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return clock.perf_counter() - t0


def built_as(path: Path) -> str | None:
    if not path.is_file():
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'bench'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return row[0] if row else None


def time_in_process(url: str, tz: ZoneInfo, day: date, by: str, runs: int) -> list[float]:
    """Open the store read-only, build the rows and render the CSV, `runs` times."""
    times = []
    for _ in range(runs):
        t0 = clock.perf_counter()
        store = Store(url, read_only=True)
        periods = count_periods(store, [day], tz, by)
        report.write_table(
            io.StringIO(), report.PERIOD_COLUMNS, report.period_records(periods, tz), "csv"
        )
        store.close()
        times.append(clock.perf_counter() - t0)
    return times


def time_cli(path: Path, tz: str, day: date, runs: int) -> tuple[list[float], list[float]]:
    """The whole `kiosk-report daily` process (interpreter start, imports, query, file):
    wall-clock seconds, and CPU seconds (user + system), which other load barely changes."""
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "kiosk.report", "daily", "--db", str(path), "--tz", tz]
        cmd += ["--date", day.isoformat(), "--out", f"{tmp}/daily.csv"]
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = clock.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True)
            walls.append(clock.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def summary(times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return f"median {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "kiosk-bench.db")
    p.add_argument("--visits", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--tz", default="Europe/Berlin")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--target", type=float, default=1.0, help="seconds allowed for daily")
    p.add_argument("--rebuild", action="store_true")
    args = p.parse_args(argv)
    tz = ZoneInfo(args.tz)
    url = f"sqlite:///{args.db.resolve()}"

    if args.rebuild or built_as(args.db) != f"{args.visits}/{args.days}":
        print(f"building {args.db}: {args.visits:,} visits over {args.days} days ...", flush=True)
        took = build(args.db, args.visits, args.days, tz)
        print(f"  built in {took:.1f} s, {args.db.stat().st_size / 1e6:.0f} MB")
    store = Store(url, read_only=True)
    total = store.visit_count()
    store.close()
    print(f"database: {args.db} ({total:,} visits)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work slows the timings)")

    day = LAST_DAY - timedelta(days=args.days // 2)
    daily = time_in_process(url, tz, day, "day", args.runs)
    hourly = time_in_process(url, tz, day, "hour", args.runs)
    cli, cli_cpu = time_cli(args.db, args.tz, day, args.runs)
    print(f"daily {day} in-process:        {summary(daily)}")
    print(f"daily {day} --by hour:         {summary(hourly)}")
    print(f"kiosk-report daily, process wall: {summary(cli)}")
    print(f"kiosk-report daily, process CPU:  {summary(cli_cpu)}")

    first = LAST_DAY - timedelta(days=args.days - 1)
    store = Store(url, read_only=True)
    t0 = clock.perf_counter()
    periods = list(count_periods(store, days_between(first, LAST_DAY), tz))
    whole = clock.perf_counter() - t0
    store.close()
    counted = sum(p.total for p in periods)
    print(f"range {first}..{LAST_DAY}: {whole * 1000:.0f} ms, {counted:,} visits counted")
    if counted != total:
        print(f"FAIL: the range counted {counted:,} of {total:,} visits")
        return 1
    # In-process wall time and the whole process's CPU time: both must fit the target.
    worst = max(statistics.median(daily), statistics.median(cli_cpu))
    verdict = "ok" if worst <= args.target else "FAIL"
    print(f"{verdict}: daily {worst:.3f} s (target {args.target:.1f} s)")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
