"""kiosk-report over real SQLite databases built with the project's Store."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kiosk import days, report, retention
from kiosk.labels import AGE_GROUPS, AGE_SPANS, GENDERS
from kiosk.store import Store
from kiosk.visit import Check
from tests.conftest import new_visit

ROOT = Path(__file__).resolve().parents[1]
BERLIN = ZoneInfo("Europe/Berlin")
PAIRS = [(a, g) for a in AGE_GROUPS for g in GENDERS]


def local(*args: int, tz: ZoneInfo = BERLIN, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)


@pytest.fixture
def db(store: Store, db_path: Path) -> tuple[Store, Path]:
    return store, db_path


def run_report(*args: str, out: Path) -> int:
    return report.main([*args, "--out", str(out)])


def read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    lines = text.split("\r\n")
    assert lines[-1] == "" and all("\n" not in line for line in lines), "RFC 4180: CRLF rows"
    return list(csv.DictReader(io.StringIO(text, newline="")))


def counts_of(rows: list[dict[str, str]]) -> dict[tuple[str, str], int]:
    """(age group, gender) -> visitors over the period rows (the total row left out)."""
    periods = [r for r in rows if r["date"] != "total"]
    return {(a, g): sum(int(r[f"{g}_{a}"]) for r in periods) for a, g in PAIRS}


def numbers(row: dict[str, str]) -> list[int]:
    return [int(row[c]) for c in report.PERIOD_COLUMNS[3:]]


def test_daily_counts_known_visits_in_fixed_order(db, tmp_path):
    store, path = db
    rng = random.Random(6)
    expected: Counter[tuple[str, str]] = Counter()
    day = date(2026, 6, 10)
    for _ in range(300):
        age, gender = rng.choice(AGE_GROUPS[1:]), rng.choice(GENDERS)
        at = local(2026, 6, 10, rng.randrange(24), rng.randrange(60), rng.randrange(60))
        store.add_visit(new_visit(at, age, gender))
        expected[(age, gender)] += 1
    # Noise that must not be counted: the days around it, and another device.
    store.add_visit(new_visit(local(2026, 6, 9, 23, 59, 59), "0-2", "male"))
    store.add_visit(new_visit(local(2026, 6, 11, 0, 0, 0), "0-2", "male"))
    store.add_visit(new_visit(local(2026, 6, 10, 12), "0-2", "male", device="kiosk-2"))
    for status, n in (("fail", 3), ("unmeasured", 2)):
        for k in range(n):
            store.add_check(Check("kiosk-1", local(2026, 6, 10, 9, k), status, 38.5))
    store.add_check(Check("kiosk-1", local(2026, 6, 11, 9), "fail", 38.5))

    out = tmp_path / "daily.csv"
    db_args = ["--db", str(path), "--tz", "Europe/Berlin", "--device", "kiosk-1"]
    assert run_report("daily", *db_args, "--date", day.isoformat(), out=out) == 0
    rows = read_csv(out)
    assert list(rows[0]) == list(report.PERIOD_COLUMNS)
    assert [r["date"] for r in rows] == ["2026-06-10", "total"]
    day, total = rows
    assert (day["start"], day["utc_offset"]) == ("2026-06-10 00:00:00", "UTC+02:00")
    assert counts_of(rows) == {pair: expected[pair] for pair in PAIRS}
    # Visitors, by gender and by age group, add up; checks are counted apart from them.
    assert int(day["visitors"]) == 300 == sum(int(day[g]) for g in GENDERS)
    assert sum(int(day[f"age_{a}"]) for a in AGE_GROUPS) == 300
    assert {a: int(day[f"age_{a}"]) for a in AGE_GROUPS} == {
        a: sum(expected[(a, g)] for g in GENDERS) for a in AGE_GROUPS
    }
    assert (day["failed_checks"], day["unmeasured_checks"]) == ("3", "2")
    assert numbers(total) == numbers(day) and total["start"] == total["utc_offset"] == ""

    everyone = tmp_path / "all.csv"
    all_args = ["--db", str(path), "--tz", "Europe/Berlin", "--all-devices"]
    assert run_report("daily", *all_args, "--date", "2026-06-10", out=everyone) == 0
    assert counts_of(read_csv(everyone))[("0-2", "male")] == 1


def test_last_second_and_midnight_land_on_their_own_days(db, tmp_path):
    store, path = db
    store.add_visit(new_visit(local(2026, 7, 1, 23, 59, 59), "38-43", "male"))
    store.add_visit(new_visit(local(2026, 7, 2, 0, 0, 0), "48-53", "female"))
    args = ["--db", str(path), "--tz", "Europe/Berlin"]
    for day, hit in (("2026-07-01", ("38-43", "male")), ("2026-07-02", ("48-53", "female"))):
        out = tmp_path / f"{day}.csv"
        assert run_report("daily", *args, "--date", day, out=out) == 0
        nonzero = {k: n for k, n in counts_of(read_csv(out)).items() if n}
        assert nonzero == {hit: 1}, day


@pytest.mark.parametrize(
    ("day", "hours"), [("2026-03-29", 23), ("2026-10-25", 25), ("2026-06-10", 24)]
)
def test_hours_of_a_dst_change_day(db, tmp_path, day, hours):
    _, path = db
    out = tmp_path / "hours.csv"
    args = ["--db", str(path), "--tz", "Europe/Berlin", "--by", "hour", "--date", day]
    assert run_report("daily", *args, out=out) == 0
    rows = read_csv(out)
    assert list(rows[0]) == list(report.PERIOD_COLUMNS)
    assert len(rows) == hours + 1 and rows[-1]["date"] == "total"  # one row an hour
    starts = [(r["start"], r["utc_offset"]) for r in rows[:-1]]
    assert len(set(starts)) == hours and starts[0][0] == f"{day} 00:00:00"


def test_visits_in_the_repeated_and_skipped_hours(db, tmp_path):
    store, path = db
    # 2026-10-25: 02:30 happens twice (CEST, then CET); 2026-03-29 has no 02:xx at all.
    store.add_visit(new_visit(local(2026, 10, 25, 2, 30, fold=0), "15-20", "female"))
    store.add_visit(new_visit(local(2026, 10, 25, 2, 30, fold=1), "15-20", "male"))
    store.add_visit(new_visit(local(2026, 3, 29, 1, 59, 59), "60-100", "female"))
    store.add_visit(new_visit(local(2026, 3, 29, 3, 0, 0), "60-100", "male"))
    args = ["--db", str(path), "--tz", "Europe/Berlin", "--by", "hour"]

    def hits(rows: list[dict[str, str]]) -> set[tuple[str, str, str]]:
        return {
            (r["start"][11:], r["utc_offset"], g) for r in rows[:-1] for g in GENDERS if r[g] != "0"
        }

    out = tmp_path / "fall.csv"
    assert run_report("daily", *args, "--date", "2026-10-25", out=out) == 0
    assert hits(read_csv(out)) == {
        ("02:00:00", "UTC+02:00", "female"),
        ("02:00:00", "UTC+01:00", "male"),
    }

    out = tmp_path / "spring.csv"
    assert run_report("daily", *args, "--date", "2026-03-29", out=out) == 0
    rows = read_csv(out)
    assert not any(r["start"][11:].startswith("02:") for r in rows)
    assert hits(rows) == {("01:00:00", "UTC+01:00", "female"), ("03:00:00", "UTC+02:00", "male")}


def test_hourly_rows_add_up_to_the_day(db, tmp_path):
    store, path = db
    rng = random.Random(1)
    start = local(2026, 10, 24, 22)
    for _ in range(400):
        at = start + timedelta(seconds=rng.randrange(30 * 3600))
        store.add_visit(new_visit(at, rng.choice(AGE_GROUPS), rng.choice(GENDERS)))
    args = ["--db", str(path), "--tz", "Europe/Berlin", "--date", "2026-10-25"]
    daily, hourly = tmp_path / "d.csv", tmp_path / "h.csv"
    assert run_report("daily", *args, out=daily) == 0
    assert run_report("daily", *args, "--by", "hour", out=hourly) == 0
    hours, days_ = read_csv(hourly), read_csv(daily)
    assert counts_of(hours) == counts_of(days_)
    assert numbers(hours[-1]) == numbers(days_[0]) == numbers(days_[-1])  # the totals agree
    assert int(days_[0]["visitors"]) > 0


def test_empty_day_gives_all_zero_rows_of_the_same_shape(db, tmp_path):
    store, path = db
    store.add_visit(new_visit(local(2026, 5, 1, 12)))
    args = ["--db", str(path), "--tz", "Europe/Berlin"]
    empty, full = tmp_path / "empty.csv", tmp_path / "full.csv"
    assert run_report("daily", *args, "--date", "2026-05-02", out=empty) == 0
    assert run_report("daily", *args, "--date", "2026-05-01", out=full) == 0
    rows = read_csv(empty)
    assert len(rows) == 2 and all(n == 0 for r in rows for n in numbers(r))
    assert [list(r) for r in rows] == [list(r) for r in read_csv(full)]


def test_range_is_inclusive_and_json_matches_csv(db, tmp_path):
    store, path = db
    for d in range(1, 6):
        for _ in range(d):
            store.add_visit(new_visit(local(2026, 4, d, 10), "8-12", "male"))
    args = [
        "--db",
        str(path),
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-04-02",
        "--to",
        "2026-04-04",
    ]
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    assert run_report("range", *args, out=out_csv) == 0
    assert run_report("range", *args, "--format", "json", out=out_json) == 0
    rows = read_csv(out_csv)
    boys = {r["date"]: int(r["male_8-12"]) for r in rows}
    assert boys == {"2026-04-02": 2, "2026-04-03": 3, "2026-04-04": 4, "total": 9}
    data = json.loads(out_json.read_text("utf-8"))
    assert [list(d) for d in data[:1]] == [list(report.PERIOD_COLUMNS)]
    assert [{k: "" if v is None else str(v) for k, v in d.items()} for d in data] == rows
    assert data[-1]["start"] is None and data[-1]["visitors"] == 9


def test_export_one_row_per_visit_in_utc_and_local(db, tmp_path):
    store, path = db
    a = new_visit(local(2026, 3, 29, 1, 30), "4-6", "female", model_version='m,"1"')
    b = new_visit(local(2026, 3, 29, 3, 30), "4-6", "male", temperature_c=None)
    store.add_visit(b)
    store.add_visit(a)
    store.add_visit(new_visit(local(2026, 3, 30, 0, 0), "4-6", "male"))
    args = [
        "--db",
        str(path),
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-29",
        "--to",
        "2026-03-29",
    ]
    out = tmp_path / "export.csv"
    assert run_report("export", *args, out=out) == 0
    rows = read_csv(out)
    assert list(rows[0]) == list(report.EXPORT_COLUMNS)
    assert "temperature_c" not in rows[0]
    assert [r["id"] for r in rows] == [a.id, b.id]
    assert rows[0]["started_at_utc"] == "2026-03-29T00:30:00Z"
    assert (rows[0]["started_at_local"], rows[0]["utc_offset"]) == (
        "2026-03-29 01:30:00",
        "UTC+01:00",
    )
    assert rows[1]["started_at_utc"] == "2026-03-29T01:30:00Z"
    assert (rows[1]["started_at_local"], rows[1]["utc_offset"]) == (
        "2026-03-29 03:30:00",
        "UTC+02:00",
    )
    assert rows[0]["model_version"] == 'm,"1"'

    with_temp = tmp_path / "export-t.json"
    assert run_report("export", *args, "--temperature", "--format", "json", out=with_temp) == 0
    data = json.loads(with_temp.read_text("utf-8"))
    assert [d["temperature_c"] for d in data] == [36.6, None]


def test_config_supplies_database_timezone_and_device(tmp_path):
    path = tmp_path / "state" / "kiosk.db"
    store = Store(f"sqlite:///{path}")
    at = datetime(2026, 1, 15, 4, 30, tzinfo=UTC)  # 2026-01-14 23:30 in New York
    store.add_visit(new_visit(at, age="25-32", gender="male", device="door-a"))
    store.add_visit(new_visit(at, age="25-32", gender="female", device="door-b"))
    store.close()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"device_id: door-a\ntimezone: America/New_York\nstore:\n  url: sqlite:///{path}\n"
    )
    out = tmp_path / "out" / "daily-{date}.csv"
    assert (
        report.main(["daily", "--config", str(cfg), "--date", "2026-01-14", "--out", str(out)]) == 0
    )
    written = tmp_path / "out" / "daily-2026-01-14.csv"
    assert {k: n for k, n in counts_of(read_csv(written)).items() if n} == {("25-32", "male"): 1}
    assert not list((tmp_path / "out").glob(".*")), "no temporary file left behind"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiosk.report", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_inputs_exit_2_with_a_clear_message(db, tmp_path):
    _, path = db
    ok = ["--db", str(path), "--tz", "Europe/Berlin"]
    cases = [
        (["daily", *ok, "--date", "2026-02-30"], "bad date '2026-02-30'"),
        (["daily", "--db", str(tmp_path / "missing.db"), "--tz", "UTC"], "database not found"),
        (["daily", "--db", str(path), "--tz", "Europe/Berlín"], "unknown timezone"),
    ]
    for args, message in cases:
        p = cli(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert message in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr
        assert p.stdout == ""


def test_more_bad_inputs_exit_2(db, tmp_path, capsys):
    _, path = db
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    other = tmp_path / "other.db"
    Store(f"sqlite:///{other}").close()
    import sqlite3

    with sqlite3.connect(other) as con:
        con.execute("DROP TABLE visits")
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("timezone: Nowhere/Land\n")
    cases = [
        (["daily", "--db", str(path), "--tz", "UTC", "--date", "29.03.2026"], "YYYY-MM-DD"),
        (["daily", "--db", str(junk), "--tz", "UTC"], "cannot read the database"),
        (["daily", "--db", str(other), "--tz", "UTC"], "not a kiosk database"),
        (["daily", "--db", str(path)], "--db needs --tz"),
        (["daily", "--tz", "UTC"], "give --config PATH or --db URL"),
        (["daily", "--config", str(bad_cfg)], "unknown time zone"),
        (["daily", "--config", str(tmp_path / "nope.yaml")], "file not found"),
        (
            [
                "range",
                "--db",
                str(path),
                "--tz",
                "UTC",
                "--from",
                "2026-02-02",
                "--to",
                "2026-02-01",
            ],
            "is after --to",
        ),
        (["purge", "--db", str(path), "--tz", "UTC"], "purge needs --older-than"),
        (["purge", "--db", str(path), "--tz", "UTC", "--older-than", "0"], "whole number of days"),
        (["chart", "--db", str(path), "--tz", "UTC"], "needs --out FILE"),
    ]
    for args, message in cases:
        assert report.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)


def test_chart_writes_a_valid_png(db, tmp_path):
    pytest.importorskip("matplotlib", reason="the optional chart extra (matplotlib) is absent")
    import matplotlib.image

    store, path = db
    for i, age in enumerate(AGE_GROUPS):
        for _ in range(i + 1):
            store.add_visit(new_visit(local(2026, 8, 1, 12), age, "female"))
        store.add_visit(new_visit(local(2026, 8, 1, 13), age, "male"))
    out = tmp_path / "chart.png"
    args = ["--db", str(path), "--tz", "Europe/Berlin", "--date", "2026-08-01"]
    assert run_report("chart", *args, out=out) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.shape[0] == 450 and image.shape[1] == 800
    assert image[..., :3].std() > 0.05, "not a blank image"


def test_chart_without_matplotlib_says_how_to_install(db, tmp_path, monkeypatch, capsys):
    _, path = db
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    out = tmp_path / "chart.png"
    assert (
        run_report("chart", "--db", str(path), "--tz", "UTC", "--date", "2026-08-01", out=out) == 2
    )
    assert "pip install 'kioskd[chart]'" in capsys.readouterr().err
    assert not out.exists()


def test_retention_keeps_whole_local_days(db):
    store, _ = db
    now = local(2026, 11, 28, 10)
    # Kept: today and the 30 full days before it (from 2026-10-29 00:00 Berlin).
    store.add_visit(new_visit(local(2026, 10, 29, 0, 0, 0)))
    store.add_visit(new_visit(local(2026, 11, 28, 9)))
    store.add_check(Check("kiosk-1", local(2026, 10, 29, 0, 0, 1), "fail", 38.0))
    # Purged: the seconds before that, and much older rows.
    store.add_visit(new_visit(local(2026, 10, 28, 23, 59, 59)))
    store.add_visit(new_visit(local(2025, 1, 1, 12)), outbox=True)
    store.add_check(Check("kiosk-1", local(2026, 3, 1, 12), "unmeasured", None))
    assert retention.apply_retention(store, 30, BERLIN, now=now) == (2, 1)
    assert store.visit_count() == 2
    assert store.outbox_depth() == 0
    assert retention.apply_retention(store, 30, BERLIN, now=now) == (0, 0)
    with pytest.raises(ValueError):
        retention.apply_retention(store, 0, BERLIN, now=now)


def test_purge_command(db, capsys):
    store, path = db
    old = datetime.now(UTC) - timedelta(days=40)
    store.add_visit(new_visit(old))
    store.add_visit(new_visit(datetime.now(UTC)))
    args = ["purge", "--db", str(path), "--tz", "Europe/Berlin", "--older-than", "30"]
    assert report.main(args) == 0
    assert "purged 1 visits and 0 checks" in capsys.readouterr().out
    assert store.visit_count() == 1


def test_hour_buckets_cover_the_day_without_gaps():
    for tz_name, day in (
        ("Europe/Berlin", date(2026, 3, 29)),
        ("America/Santiago", date(2026, 4, 5)),  # clocks change at midnight
        ("Australia/Lord_Howe", date(2026, 4, 5)),  # a 30-minute DST shift
        ("Asia/Kathmandu", date(2026, 1, 1)),  # +05:45
    ):
        tz = ZoneInfo(tz_name)
        buckets = days.hour_buckets(day, tz)
        whole = days.day_bucket(day, tz)
        assert buckets[0].start == whole.start and buckets[-1].end == whole.end
        assert all(a.end == b.start for a, b in zip(buckets, buckets[1:], strict=False))
        assert all(b.start.astimezone(tz).date() == day for b in buckets), tz_name
        assert len({b.hour for b in buckets}) == len(buckets), tz_name


def test_visits_stamped_before_clock_sync_are_flagged(db, tmp_path, capsys):
    """A board without an RTC that never reached NTP: the rows still count, the report
    warns on stderr and the export marks them, so nobody trusts their hour blindly."""
    store, path = db
    day = date(2026, 6, 10)
    store.add_visit(new_visit(local(2026, 6, 10, 9, 0)))
    store.add_visit(new_visit(local(2026, 6, 10, 9, 5), clock_synced=False))
    store.add_visit(new_visit(local(2026, 6, 11, 9, 5), clock_synced=False))  # another day
    args = ["--db", str(path), "--tz", "Europe/Berlin"]
    out = tmp_path / "daily.csv"
    assert run_report("daily", *args, "--date", day.isoformat(), out=out) == 0
    assert counts_of(read_csv(out))[("25-32", "female")] == 2
    err = capsys.readouterr().err
    assert "1 visit was stamped before the system clock was synchronised" in err
    assert "2026-06-10 to 2026-06-10" in err

    exported = tmp_path / "export.csv"
    rng = ["--from", "2026-06-10", "--to", "2026-06-11"]
    assert run_report("export", *args, *rng, out=exported) == 0
    assert [r["clock_synced"] for r in read_csv(exported)] == ["true", "false", "false"]
    assert "2 visits were stamped" in capsys.readouterr().err

    assert run_report("daily", *args, "--date", "2026-06-09", out=out) == 0
    assert capsys.readouterr().err == ""


def test_the_age_groups_table_in_the_docs_matches_the_labels():
    text = (ROOT / "docs" / "report.md").read_text()
    table = dict(re.findall(r"^\| `([0-9-]+)` \| ([0-9+-]+) \|$", text, re.M))
    assert table == dict(zip(AGE_GROUPS, AGE_SPANS, strict=True))
    assert AGE_SPANS[4] == "25-37"  # the gap the labels hide
