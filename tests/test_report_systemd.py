"""The nightly report units pass `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

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


def test_report_service_writes_yesterdays_csv_into_the_state_directory():
    service = (UNITS / "kiosk-report.service").read_text()
    timer = (UNITS / "kiosk-report.timer").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert " daily " in exec_start and "--date" not in exec_start  # default: yesterday
    assert "--out /var/lib/kiosk/reports/daily-{date}.csv" in exec_start
    assert "StateDirectory=kiosk\n" in service and "User=kiosk\n" in service
    assert "OnCalendar=" in timer and "Persistent=true" in timer
