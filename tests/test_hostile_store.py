"""Issue 13, the store and kiosk-report side: real SQLite files, the real CLI entry point, a
real listening socket for the broker that drops; and the config invariants as properties."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk import report, retention
from kiosk.config import MAX_TOPIC_CHARS, ConfigError, parse_config
from kiosk.counters import Counters
from kiosk.mqtt import Publisher
from kiosk.store import SCHEMA_VERSION, Store, StoreError
from kiosk.wire import topics
from tests.broker import wait_until

UTC_ZONE = ZoneInfo("UTC")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def fill(db: Path, old_visits: int, pending: int, devices=("door",), old_day: int = 400) -> None:
    """`old_visits` visits (per device) on one day `old_day` days ago, and `pending` recent
    visits each with an undelivered outbox row: written with plain SQL, quickly."""
    Store(f"sqlite:///{db}").close()
    day = (NOW - timedelta(days=old_day)).replace(tzinfo=None)
    recent = (NOW - timedelta(hours=1)).replace(tzinfo=None)

    def row(device: str, t: datetime) -> tuple:
        visit = (str(uuid.uuid4()), device, t, t, "25-32", 0.9, "male", 0.9, None, "off", 9, "m")
        return (*visit, 1, None)  # clock_synced (v2), skin_c (v4)

    rows = [row(d, day + timedelta(seconds=i)) for d in devices for i in range(old_visits)]
    fresh = [row(devices[0], recent) for _ in range(pending)]
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO visits VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows + fresh)
        conn.executemany(
            "INSERT INTO outbox (visit_id, created_at) VALUES (?, ?)",
            [(r[0], recent) for r in fresh],
        )


def test_one_days_purge_with_100k_pending_outbox_rows_takes_under_a_second(tmp_path, capsys):
    db = tmp_path / "kiosk.db"
    fill(db, 3000, 100_000)
    store = Store(f"sqlite:///{db}")
    try:
        t0 = time.perf_counter()
        assert retention.apply_retention(store, 365, UTC_ZONE, now=NOW) == (3000, 0)
        took = time.perf_counter() - t0
        assert store.outbox_depth() == 100_000
    finally:
        store.close()
    with capsys.disabled():
        print(f"\npurge of 3000 visits beside 100000 pending outbox rows: {took:.3f} s")
    assert took < 1.0


def test_a_v2_database_gains_the_outbox_index(tmp_path):
    db = tmp_path / "kiosk.db"
    Store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX ix_outbox_visit_id")
        conn.execute("ALTER TABLE visits DROP COLUMN skin_c")  # v4's
        conn.execute("ALTER TABLE checks DROP COLUMN skin_c")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    Store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN DELETE FROM outbox WHERE visit_id = 'x'").fetchall()
    assert "ix_outbox_visit_id" in str(plan)


def test_a_v3_database_gains_the_skin_column_and_keeps_its_rows(tmp_path, make_visit, make_check):
    db = tmp_path / "kiosk.db"
    store = Store(f"sqlite:///{db}")
    old = make_visit(temperature_c=36.1)
    store.add_visit(old)
    store.close()
    with sqlite3.connect(db) as conn:
        for table in ("visits", "checks"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN skin_c")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    store = Store(f"sqlite:///{db}")
    try:
        new = make_visit(temperature_c=36.9, skin_c=35.6)
        store.add_visit(new)
        store.add_check(make_check(temperature_c=37.8, skin_c=36.5))
        visits = {v.id: v for v in store.visits(old.started_at - timedelta(1), datetime.now(UTC))}
    finally:
        store.close()
    # A row written before v4 keeps its value and has no skin reading; a new one keeps both.
    assert (visits[old.id].temperature_c, visits[old.id].skin_c) == (36.1, None)
    assert (visits[new.id].temperature_c, visits[new.id].skin_c) == (36.9, 35.6)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT temperature_c, skin_c FROM checks").fetchall() == [(37.8, 36.5)]
    assert (tmp_path / "kiosk.db.v3.bak").is_file()


def purge(db: Path, *args: str) -> int:
    return report.main(["purge", "--db", str(db), "--tz", "UTC", *args])


def test_purge_device_and_dry_run(tmp_path, capsys):
    db = tmp_path / "kiosk.db"
    fill(db, 5, 0, devices=("door", "other-door"))
    assert purge(db, "--device", "other-door", "--older-than", "1", "--dry-run") == 0
    assert "would purge 5 visits and 0 checks of device other-door" in capsys.readouterr().out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM visits").fetchone() == (10,)
    assert purge(db, "--device", "other-door", "--older-than", "1") == 0
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT device_id, count(*) FROM visits GROUP BY 1").fetchall()
    assert left == [("door", 5)]


def test_report_refuses_foreign_empty_and_newer_databases_unchanged(tmp_path, capsys):
    foreign, empty, newer = tmp_path / "f.db", tmp_path / "e.db", tmp_path / "n.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    empty.write_bytes(b"")
    Store(f"sqlite:///{newer}").close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key='schema_version'")
    for db in (foreign, empty, newer):
        before = db.read_bytes()
        assert purge(db, "--older-than", "1") == 2
        assert report.main(["daily", "--db", str(db), "--tz", "UTC"]) == 2
        assert db.read_bytes() == before
    err = capsys.readouterr().err
    assert "not a kiosk database" in err and "newer than this kiosk" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["daily", "--date", "9999-12-31"], "outside"),
        (["daily", "--date", "0001-01-01", "--tz", "Pacific/Kiritimati"], "outside"),
        (["purge", "--older-than", "1000000"], "from 1 to 36500"),
        (["range", "--from", "1970-01-01", "--to", "9998-12-30"], "more than 3700 days"),
    ],
)
def test_report_bad_dates_and_ranges_exit_2(tmp_path, capsys, args, message):
    db = tmp_path / "kiosk.db"
    Store(f"sqlite:///{db}").close()
    tz = [] if "--tz" in args else ["--tz", "UTC"]
    assert report.main([*args, "--db", str(db), *tz]) == 2
    assert message in capsys.readouterr().err


def test_report_never_prints_a_database_password(capsys):
    if importlib.util.find_spec("pg8000") or importlib.util.find_spec("MySQLdb"):
        pytest.skip("a driver these URLs need is installed here")
    urls = ("postgresql+pg8000://kiosk:dbPa55word@127.0.0.1/test", "mysql://k:dbPa55word@h/x")
    for url in urls:
        assert report.main(["daily", "--db", url, "--tz", "UTC"]) == 2
    err = capsys.readouterr().err
    assert "driver is not installed" in err and "dbPa55word" not in err and "k:***@" in err


def daily(db: Path, out: Path) -> int:
    return report.main(["daily", "--db", str(db), "--tz", "UTC", "--out", str(out)])


def test_out_follows_symlinks_writes_fifos_and_refuses_directories(tmp_path, capsys):
    db = tmp_path / "kiosk.db"
    Store(f"sqlite:///{db}").close()
    real = tmp_path / "real.csv"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert daily(db, link) == 0
    assert link.is_symlink() and real.read_text().startswith("date,start,utc_offset,visitors")
    assert real.stat().st_mode & 0o777 == 0o640

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert daily(db, fifo) == 0
    reader.join(10)
    assert got and got[0].startswith(b"date,start,utc_offset,visitors") and fifo.is_fifo()

    assert daily(db, tmp_path) == 2
    assert "is a directory" in capsys.readouterr().err


def test_export_cells_cannot_run_as_formulas(tmp_path, capsys):
    db = tmp_path / "kiosk.db"
    Store(f"sqlite:///{db}").close()
    t = datetime(2026, 1, 2, 10, 0)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO visits VALUES ('v1', '-door', ?, ?, '25-32', 0.9, 'male', 0.9, NULL,"
            " 'off', 9, '=HYPERLINK(\"http://x\")', 1, NULL)",
            (t, t),
        )
    args = ["--db", str(db), "--tz", "UTC", "--from", "2026-01-02", "--to", "2026-01-02"]
    assert report.main(["export", *args]) == 0
    out = capsys.readouterr().out
    assert "'=HYPERLINK" in out and ",'-door," in out and ",=" not in out


def test_export_into_a_closed_pipe_is_quiet(tmp_path):
    import subprocess
    import sys

    db = tmp_path / "kiosk.db"
    fill(db, 20_000, 0, old_day=1)
    day = (NOW - timedelta(days=1)).date().isoformat()
    cmd = [sys.executable, "-m", "kiosk.report", "export", "--db", str(db), "--tz", "UTC",
           "--from", "2000-01-01", "--to", day]  # fmt: skip
    r = subprocess.run(f"{' '.join(cmd)} | head -1", shell=True, capture_output=True, text=True)
    assert r.stdout.startswith("id,device_id") and r.stderr == "", r.stderr


# -- the broker that accepts, then drops -------------------------------------------------


def test_a_broker_that_accepts_then_drops_is_a_warning(tmp_path, caplog, store):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    stop = threading.Event()

    def accept_and_close() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    cfg = parse_config(
        {"mqtt": {"enabled": True, "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}}
    ).mqtt
    caplog.set_level(logging.INFO, logger="kiosk.mqtt")
    p = Publisher(cfg, "door", store, UTC_ZONE, Counters())
    try:
        p.start()
        assert wait_until(lambda: p._fail_count >= 2, 10)
    finally:
        p.close()
        store.close()
        stop.set()
        thread.join(2)
        server.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("closed the connection before accepting it" in w for w in warnings), warnings


# -- config invariants: whatever loads also works at run time ------------------------------

numbers = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0, 1, 65535, 65536, 36500, 36501, 3600, 3600.5, 1e300]),
)
NUMERIC_KEYS = [
    ("store", "retention_days"), ("mqtt", "keepalive_s"), ("mqtt", "stats_interval_s"),
    ("mqtt", "outbox_max_age_days"), ("mqtt", "reconnect_max_s"), ("camera", "fps"),
    ("camera", "stall_timeout_s"), ("camera", "reconnect_max_s"), ("tracker", "max_gap_s"),
    ("gate", "match_window_s"), ("thermal", "stall_timeout_s"), ("thermal", "reconnect_max_s"),
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(NUMERIC_KEYS), numbers), max_size=6),
    st.text(max_size=80),
    st.text(max_size=300),
)
def test_any_accepted_config_is_usable_at_run_time(values, device_id, prefix):
    data: dict = {"device_id": device_id, "mqtt": {"prefix": prefix}}
    for (section, key), value in values:
        data.setdefault(section, {})[key] = value
    try:
        cfg = parse_config(data)
    except ConfigError:
        return
    retention.retention_cutoff(cfg.store.retention_days, cfg.tz)  # no OverflowError
    assert cfg.mqtt.keepalive_s <= 65535
    assert cfg.device_id.isascii() and len(cfg.device_id) <= 64
    assert all(len(t.encode()) <= 65535 for t in topics(cfg.mqtt.prefix, cfg.device_id).values())
    assert len(cfg.mqtt.prefix) <= MAX_TOPIC_CHARS
    c, m = cfg.camera, cfg.mqtt
    waits = [c.stall_timeout_s, c.reconnect_max_s, cfg.tracker.max_gap_s, m.reconnect_max_s,
             m.stats_interval_s, cfg.thermal.reconnect_max_s]  # fmt: skip
    assert all(w <= threading.TIMEOUT_MAX for w in waits)
    threading.Event().wait(min(waits) * 1e-9)


def test_writer_lock_is_exclusive_and_released(tmp_path):
    url = f"sqlite:///{tmp_path / 'kiosk.db'}"
    first = Store(url, writer=True)
    with pytest.raises(StoreError, match=f"pid {os.getpid()}"):
        Store(url, writer=True)
    first.close()
    Store(url, writer=True).close()
