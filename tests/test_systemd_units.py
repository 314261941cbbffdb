"""The systemd units: `systemd-analyze verify`, the `security` exposure score, and the
directives the daemon depends on (Type=notify, watchdog, exit code 78, sandbox)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.config import EX_CONFIG

ROOT = Path(__file__).resolve().parents[1]
UNIT_DIR = ROOT / "deploy" / "systemd"
UNITS = sorted(p for p in UNIT_DIR.iterdir() if p.suffix in (".service", ".timer", ".socket"))
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def runnable_copy(unit: Path, dest: Path) -> Path:
    """The unit with /opt/kiosk/bin/<tool> pointing at an executable that exists here.

    `systemd-analyze verify` fails when ExecStart='s binary is missing, as it is on a machine
    where install.sh has not run; the installed kioskd is used when it is on PATH.
    """
    bindir = dest / "bin"
    bindir.mkdir(exist_ok=True)
    text = unit.read_text(encoding="utf-8")
    for tool in set(re.findall(r"/opt/kiosk/bin/([\w.-]+)", text)):
        link = bindir / tool
        if not link.exists():
            link.symlink_to(shutil.which(tool) or sys.executable)
    out = dest / unit.name
    out.write_text(text.replace("/opt/kiosk/bin/", f"{bindir}/"), encoding="utf-8")
    return out


def test_units_exist() -> None:
    assert UNIT_DIR / "kiosk.service" in UNITS


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    for other in UNITS:  # a timer's service must be there to be verified alongside
        runnable_copy(other, tmp_path)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


@needs_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "kiosk.service"
    text = (UNIT_DIR / "kiosk.service").read_text(encoding="utf-8")
    broken.write_text(text.replace("ExecStart=", "ExecStart=/nonexistent/kioskd #"), "utf-8")
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True, text=True
    )
    assert proc.returncode != 0


@needs_analyze
def test_security_exposure_at_most_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    unit = runnable_copy(UNIT_DIR / "kiosk.service", tmp_path)
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for kiosk\.service: ([\d.]+)", proc.stdout)
    assert match, proc.stdout[-2000:]
    exposure = float(match.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security kiosk.service: exposure {exposure} (max {MAX_EXPOSURE})")
    assert exposure <= MAX_EXPOSURE, proc.stdout


def test_kiosk_service_directives() -> None:
    d = directives(UNIT_DIR / "kiosk.service")
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert one["ExecStart"].startswith("/opt/kiosk/bin/kioskd --config /etc/kiosk/config.yaml")
    assert int(one["WatchdogSec"]) >= 10  # kioskd pings at half of it, from the frame loop
    assert one["Restart"] == "on-failure" and int(one["RestartSec"]) > 0
    burst, interval = int(one["StartLimitBurst"]), int(one["StartLimitIntervalSec"])
    restart, watchdog = int(one["RestartSec"]), int(one["WatchdogSec"])
    # A crash loop (start-up ~5 s) trips the start limit; watchdog restarts (camera gone,
    # no frames) never do, so the kiosk recovers by itself when the camera is back.
    assert (restart + 5) * burst < interval
    assert (watchdog + restart) * burst > interval
    assert str(EX_CONFIG) in one["RestartPreventExitStatus"].split()
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"  # kioskd restarts in place on SIGHUP
    assert one["User"] == "kiosk" and one["Group"] == "kiosk"
    assert set(one["SupplementaryGroups"].split()) == {"video", "i2c"}
    assert one["StateDirectory"] == "kiosk" and one["ConfigurationDirectory"] == "kiosk"
    assert one["LoadCredential"].startswith("mqtt_password:")
    assert "time-sync.target" in one["After"].split()
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",  # tested in test_systemd_sandbox.py
    ):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == ""
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert d["SystemCallFilter"][0] == "@system-service"
    assert one["DevicePolicy"] == "closed"
    assert {"char-video4linux rw", "char-i2c rw"} <= set(d["DeviceAllow"])
    assert one["MemoryMax"]
