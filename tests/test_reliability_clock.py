"""Wall-clock faults: a board that boots in the past, then steps when NTP syncs.

The wall clock of the kioskd process is moved with libfaketime (the real LD_PRELOAD library,
monotonic clock left alone), driven through a file the test rewrites while kioskd runs.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest

from kiosk.frames import Frame
from kiosk.recorder import stamped_before_step
from kiosk.store import SCHEMA_VERSION, Store
from kiosk.visit import Visit
from tests.kioskd import run_kioskd, stored_visits, write_config
from tests.reliability import RunningKioskd, db_health, real_pipeline
from tools.make_demo import ENTER_S, FPS, Appearance, render, write_video

FAKETIME_LIBS = [
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/faketime/libfaketime.so.1"),
]
FAKETIME = next((p for p in FAKETIME_LIBS if p.is_file()), None)
needs_faketime = pytest.mark.skipif(
    FAKETIME is None, reason="libfaketime is not installed (apt-get install faketime)"
)


def faketime_env(offset_file: Path) -> dict[str, str]:
    # time.sleep() fails under libfaketime with a real monotonic clock; kioskd never calls it
    # (it waits on events and conditions), which this also keeps true.
    return {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_CACHE_DURATION": "1",
    }


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory):
    """25 s of one person standing in front of the kiosk."""
    path = tmp_path_factory.mktemp("clips") / "still.mp4"
    write_video(path, render((Appearance("hopper", -ENTER_S, 60.0, 320, 130),), 25.0))
    return path


def test_clock_steps_mid_visit_neither_split_nor_bend_it(still_clip):
    """The real pipeline over 25 s of one visitor, frames stamped by a wall clock that steps
    5 h forward at 8 s and 9 h back at 16 s (as they would be by a camera reader)."""
    visits: list[Visit] = []
    pipeline = real_pipeline(visits.append)
    cap = cv2.VideoCapture(str(still_clip))
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    i = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        t = i / FPS
        step = timedelta(hours=0 if t < 8 else 5 if t < 16 else -4)
        pipeline.process(Frame(image, i, 1000.0 + t, base + timedelta(seconds=t) + step))
        i += 1
    cap.release()
    pipeline.flush()
    assert len(visits) == 1
    v = visits[0]
    assert v.frames > 150
    assert 23 <= (v.ended_at - v.started_at).total_seconds() <= 25.5
    assert v.ended_at == base + timedelta(seconds=(i - 1) / FPS) - timedelta(hours=4)


@needs_faketime
def test_records_before_sync_are_flagged_then_restamped(tmp_path):
    offset = tmp_path / "faketime"
    offset.write_text("-400d\n")  # booted with the clock 400 days behind
    synced = tmp_path / "synchronized"
    env = faketime_env(offset)
    real_start = datetime.now(UTC)

    # A run that ends before the clock is ever trusted: its visits stay flagged.
    cfg = write_config(tmp_path, clock={"trust": str(synced)})
    first = RunningKioskd(cfg, "--max-frames", "200", env=env)
    assert first.finish(120) == 0, first.text
    assert "wall clock not synchronised yet" in first.text
    early = stored_visits(tmp_path)
    assert early and all(not v.clock_synced for v in early)
    assert all(v.started_at < real_start - timedelta(days=399) for v in early)

    # A run during which NTP syncs: what it stored before is shifted, the flag cleared.
    cfg = write_config(tmp_path, camera={"realtime": True}, clock={"trust": str(synced)})
    run = RunningKioskd(cfg, env=env)
    try:
        assert run.wait_for(" committed: ", 1, timeout=90), run.text
        offset.write_text("+0\n")
        # NTP steps the clock, then flags it synchronised; libfaketime reads its file at most
        # once a second (FAKETIME_CACHE_DURATION), so give the step time to land first.
        time.sleep(2.5)
        synced.touch()
        assert run.wait_for("wall clock trusted: restamped", timeout=30), run.text
        n = run.count(" committed: ")
        assert run.wait_for(" committed: ", n + 1, timeout=60), run.text
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish(30) == 0, run.text
    finally:
        run.kill()
    assert "retention: skipped until the wall clock is trusted" in run.text
    visits = {v.id: v for v in stored_visits(tmp_path)}
    late = [visits[i] for i in run.committed()]
    assert len(late) >= 2
    now = datetime.now(UTC)
    for v in late:
        assert v.clock_synced, v
        assert real_start <= v.started_at <= v.ended_at <= now + timedelta(seconds=5), v
    assert all(not visits[v.id].clock_synced for v in early)
    assert db_health(tmp_path / "state" / "kiosk.db")["integrity"] == "ok"


def test_schema_v1_database_gains_the_flag_and_keeps_its_rows(tmp_path):
    db = tmp_path / "kiosk.db"
    store = Store(f"sqlite:///{db}")
    store.close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        for table in ("visits", "checks"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN clock_synced")
            conn.execute(f"ALTER TABLE {table} DROP COLUMN skin_c")  # v4's
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute(
            "INSERT INTO visits VALUES ('a0000000-0000-0000-0000-000000000001', 'dev',"
            " '2026-01-02 10:00:00', '2026-01-02 10:00:05', '25-32', 0.8, 'female', 0.9,"
            " NULL, 'off', 12, 'm')"
        )
    store = Store(f"sqlite:///{db}")
    (visit,) = store.visits(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC))
    store.close()
    assert visit.clock_synced and visit.frames == 12
    assert (tmp_path / "kiosk.db.v1.bak").is_file()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        version = "SELECT value FROM meta WHERE key = 'schema_version'"
        assert conn.execute(version).fetchone()[0] == str(SCHEMA_VERSION)


def test_daemon_opens_a_v1_database(tmp_path):
    cfg = write_config(tmp_path, clock={"trust": "always"})
    db = tmp_path / "state" / "kiosk.db"
    db.parent.mkdir(parents=True)
    Store(f"sqlite:///{db}").close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        for table in ("visits", "checks"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN clock_synced")
            conn.execute(f"ALTER TABLE {table} DROP COLUMN skin_c")  # v4's
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    r = run_kioskd(cfg, "--max-frames", "150")
    assert r.returncode == 0, r.stderr
    assert f"schema v1 -> v{SCHEMA_VERSION}" in r.stderr
    visits = stored_visits(tmp_path)
    assert visits and all(v.clock_synced for v in visits)


def test_a_visit_closing_just_after_the_step_is_corrected_too():
    """Its frames were stamped on the old clock, but it is recorded after the sync."""
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    step = timedelta(days=400)
    assert stamped_before_step(now - step - timedelta(seconds=2), now, step) == step
    assert stamped_before_step(now - timedelta(seconds=2), now, step) is None  # after the step
    assert stamped_before_step(now + step, now, -step) == -step  # the clock was ahead
    assert stamped_before_step(now - timedelta(seconds=20), now, timedelta(seconds=30)) is None
