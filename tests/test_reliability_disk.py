"""Disk full: kioskd keeps running, holds what it cannot write, and writes it when space returns.

End to end on a loop-mounted 8 MB ext4 image filled to the last byte (needs root and loop
devices; skipped otherwise), and in-process on SQLite's max_page_count, which works anywhere
and also drives the bounded queue past its limit.
"""

from __future__ import annotations

import logging
import re
import signal
import time

import pytest
from sqlalchemy import event

from kiosk.clock import ClockTrust
from kiosk.counters import Counters
from kiosk.recorder import Recorder
from kiosk.store import Store
from kiosk.visit import Visit
from tests.conftest import new_visit
from tests.kioskd import write_config
from tests.reliability import RunningKioskd, db_health, fill, small_filesystem

QUEUED = re.compile(r"cannot store records \(([^)]*)\): \d+ kept in memory .* newest visit (\S+)")


def test_full_filesystem_then_space_returns(tmp_path):
    with small_filesystem(tmp_path / "fs") as mnt:
        if mnt is None:
            pytest.skip("cannot loop-mount a filesystem image here (needs root and /dev/loop*)")
        state = mnt / "state"
        cfg = write_config(tmp_path, state_dir=str(state), camera={"loop": True})
        run = RunningKioskd(cfg)
        try:
            assert run.wait_for(" committed: ", 1, timeout=90), run.text
            filler = fill(mnt)
            assert run.wait_for("cannot store records", 2, timeout=60), run.text
            frames_full = run.count(" committed: ")
            time.sleep(3)  # still full: the loop keeps going, retries fail quietly
            assert run.proc.poll() is None
            assert run.count(" committed: ") == frames_full
            filler.unlink()
            assert run.wait_for("storage recovered", 1, timeout=30), run.text
            assert run.wait_for(" committed: ", run.count(" committed: ") + 1, timeout=60)
            run.proc.send_signal(signal.SIGTERM)
            assert run.finish(30) == 0, run.text
        finally:
            run.kill()
        text = run.text
        queued = QUEUED.findall(text)
        assert queued and all(reason == "database or disk is full" for reason, _ in queued)
        health = db_health(state / "kiosk.db")
        assert health["integrity"] == "ok"
        committed = set(run.committed())
        assert {vid for _, vid in queued} <= committed
        assert committed == set(health["ids"])
        assert "dropped" not in text and "lost" not in text


def _visit(i: int) -> Visit:
    return new_visit(device="dev", duration_s=0, temperature_c=None, temperature_status="off",
                     frames=10 + i, model_version="m")  # fmt: skip


def test_bounded_queue_on_max_page_count(store, db_path, caplog):
    limit = {"pages": 0}

    @event.listens_for(store.engine, "connect")
    def _cap(dbapi_conn, _record) -> None:
        if limit["pages"]:
            dbapi_conn.execute(f"PRAGMA max_page_count={limit['pages']}")

    with store.engine.connect() as conn:
        limit["pages"] = conn.exec_driver_sql("PRAGMA page_count").scalar()
    store.engine.dispose()  # reconnect under the cap
    counters = Counters()
    stored: list[str] = []
    rec = Recorder(
        store, counters, ClockTrust("always"), True, lambda v: stored.append(v.id), max_queued=3
    )
    caplog.set_level(logging.INFO, logger="kioskd")
    visits = [_visit(i) for i in range(300)]
    it = iter(visits)
    added = 0
    while not rec.queue:  # fill the pages that were left
        rec.add(next(it))
        added += 1
    assert len(stored) < 200
    first_queued = rec.queue[0].id
    for _ in range(4):
        rec.add(next(it))
        added += 1
    assert len(rec.queue) == 3 and counters.visits_dropped == 2
    assert first_queued not in {v.id for v in rec.queue}  # the oldest went first
    assert "storage queue full (3 records): visit" in caplog.text
    assert "database or disk is full" in caplog.text

    limit["pages"] = 0
    store.engine.dispose()  # space returns
    rec.poll(time.monotonic() + 10)
    assert not rec.queue
    assert "storage recovered" in caplog.text
    assert len(stored) == added - 2 == store.visit_count()
    assert {v.id for v in visits[:added]} - set(stored) == {first_queued, visits[added - 4].id}
    assert store.outbox_depth() == len(stored)
    store.close()
    assert db_health(db_path)["integrity"] == "ok"


def test_records_the_disk_will_not_take_at_exit_are_kept_for_the_next_start(tmp_path, caplog):
    """Issue 13, item 10: nothing queued is lost at exit; the next start stores it first."""
    db, spill = tmp_path / "kiosk.db", tmp_path / "kiosk-unstored.jsonl"
    store = Store(f"sqlite:///{db}")
    with store.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

    @event.listens_for(store.engine, "connect")
    def _cap(dbapi_conn, _record) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

    store.engine.dispose()
    rec = Recorder(store, Counters(), ClockTrust("always"), True, lambda v: None,
                   spill_path=spill)  # fmt: skip
    caplog.set_level(logging.INFO, logger="kioskd")
    visits = [_visit(i) for i in range(300)]
    for v in visits:
        rec.add(v)
    queued = [v.id for v in rec.queue]
    assert queued
    rec.close()
    store.close()
    assert "saved in" in caplog.text and spill.is_file()

    stored: list[str] = []
    store = Store(f"sqlite:///{db}")  # space again
    rec = Recorder(store, Counters(), ClockTrust("always"), True, lambda v: stored.append(v.id),
                   spill_path=spill)  # fmt: skip
    rec.start()
    assert stored == queued and not spill.exists()
    assert store.visit_count() == len(visits)
    store.close()
