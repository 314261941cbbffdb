"""Reporting while a daemon-like writer inserts must neither fail nor block the writer."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from kiosk import report
from kiosk.store import Store

ROOT = Path(__file__).resolve().parents[1]

# A separate process, like kioskd: one visit (+ its outbox row) per transaction, as fast
# as it can, timing each commit, until the stop file appears (or 60 s pass); prints "ready"
# after its first commit, then "<visits> <slowest commit s>".
WRITER = """
import os, sys, time
from datetime import UTC, datetime, timedelta
from kiosk.store import Store
from kiosk.visit import Check, Visit
store = Store(sys.argv[1])
day = datetime(2026, 9, 1, 8, tzinfo=UTC)
deadline = time.monotonic() + 60
n, slowest = 0, 0.0
while time.monotonic() < deadline and not os.path.exists(sys.argv[2]):
    at = day + timedelta(seconds=n)
    t0 = time.perf_counter()
    store.add_visit(Visit("kiosk-1", at, at + timedelta(seconds=3), "25-32", 0.8, "male",
                          0.9, 36.5, "pass", 10, "m"), outbox=True)
    if n % 10 == 0:
        store.add_check(Check("kiosk-1", at, "fail", 38.4))
    slowest = max(slowest, time.perf_counter() - t0)
    n += 1
    if n == 1:
        print("ready", flush=True)
store.close()
print(n, slowest, flush=True)
"""


def daily_total(url: str) -> int:
    buf = io.BytesIO()
    wrapper = io.TextIOWrapper(buf, encoding="utf-8")
    with redirect_stdout(wrapper):
        rc = report.main(["daily", "--db", url, "--tz", "UTC", "--date", "2026-09-01"])
        wrapper.flush()
    assert rc == 0
    rows = csv.DictReader(io.StringIO(buf.getvalue().decode("utf-8"), newline=""))
    return sum(int(r["visitors"]) for r in rows if r["date"] != "total")


def test_report_while_a_writer_inserts(tmp_path):
    path = tmp_path / "kiosk.db"
    Store(f"sqlite:///{path}").close()
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, f"sqlite:///{path}", str(stop)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        totals, exported = [], []
        for _ in range(6):
            totals.append(daily_total(str(path)))
            out = tmp_path / "export.csv"
            args = ["--db", str(path), "--tz", "UTC", "--from", "2026-09-01", "--to", "2026-09-01"]
            assert report.main(["export", *args, "--out", str(out)]) == 0
            exported.append(len(out.read_bytes().splitlines()) - 1)
            time.sleep(0.05)
        assert writer.poll() is None, "the writer kept running through the reports"
        stop.touch()
        out, err = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    inserted, slowest = out.split()
    assert totals == sorted(totals) and exported == sorted(exported), "never fewer later"
    assert totals[0] < totals[-1] < int(inserted), "the writer inserted while reports ran"
    assert 0 < exported[0] and exported[-1] <= int(inserted)
    # busy_timeout is 5 s: a blocked writer would show a commit that took seconds.
    assert float(slowest) < 1.0, f"slowest writer commit {float(slowest):.3f} s"
    assert daily_total(str(path)) == int(inserted)
