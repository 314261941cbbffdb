"""The nightly report units pass `systemd-analyze verify`."""

from __future__ import annotations

import csv
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kiosk.store import Store
from kiosk.visit import Visit

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/kiosk/bin/kiosk-report"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


@needs_analyze
def test_report_units_verify(tmp_path):
    service = (UNITS / "kiosk-report.service").read_text()
    assert INSTALLED in service
    # verify checks that ExecStart exists; point it at a real executable in tmp.
    shim = tmp_path / "kiosk-report"
    shim.write_text("#!/bin/sh\nexit 0\n")
    shim.chmod(0o755)
    (tmp_path / "kiosk-report.service").write_text(service.replace(INSTALLED, str(shim)))
    shutil.copy(UNITS / "kiosk-report.timer", tmp_path / "kiosk-report.timer")
    p = subprocess.run(
        ["systemd-analyze", "verify", "kiosk-report.service", "kiosk-report.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and "kiosk-report" not in p.stderr, p.stderr


def test_report_service_writes_yesterdays_report():
    service = (UNITS / "kiosk-report.service").read_text()
    timer = (UNITS / "kiosk-report.timer").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert " nightly " in exec_start and "--date" not in exec_start  # default: yesterday
    assert "LoadCredential=smtp_password:/etc/kiosk/smtp_password\n" in service
    assert "StateDirectory=kiosk\n" in service and "User=kiosk\n" in service
    assert "OnCalendar=" in timer and "Persistent=true" in timer


def test_the_units_command_writes_yesterdays_file(tmp_path):
    """Run the unit's ExecStart line as systemd would (STATE_DIRECTORY set, config from
    /etc/kiosk), with the installed paths mapped into tmp."""
    service = (UNITS / "kiosk-report.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    state, etc = tmp_path / "var-lib-kiosk", tmp_path / "etc-kiosk"
    etc.mkdir()
    (etc / "config.yaml").write_text("device_id: door-a\ntimezone: Pacific/Auckland\n")
    tz = ZoneInfo("Pacific/Auckland")
    yesterday = datetime.now(tz).date() - timedelta(days=1)
    at = datetime.combine(yesterday, datetime.min.time(), tzinfo=tz).replace(hour=12)
    store = Store(f"sqlite:///{state / 'kiosk.db'}")
    at = at.astimezone(UTC)
    store.add_visit(Visit("door-a", at, at, "8-12", 0.7, "female", 0.9, None, "off", 8, "m"))
    store.close()

    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[0] == INSTALLED
    argv = [sys.executable, "-m", "kiosk.report"] + [
        a.replace("/etc/kiosk", str(etc)).replace("/var/lib/kiosk", str(state)) for a in argv[1:]
    ]
    env = {"PATH": "/usr/bin:/bin", "STATE_DIRECTORY": str(state)}
    p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # report.folder is not set: <state_dir>/reports, the state directory systemd gives.
    written = state / "reports" / f"daily-{yesterday.isoformat()}-door-a.csv"
    with written.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["date"], r["female_8-12"]) for r in rows] == [
        (yesterday.isoformat(), "1"),
        ("total", "1"),
    ]
