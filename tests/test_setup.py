"""`kioskd setup` and `kioskd cameras`: the config they write loads, ids are unique per board
and camera, the system time zone is found, sysfs is read, and a test grab measures faces."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kiosk.cameras import grab_faces, list_cameras
from kiosk.config import DEVICE_ID, EX_CONFIG, load_config
from kiosk.frames import CameraSource
from kiosk.setup import make_device_id, system_timezone


def kioskd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiosk.service", *args], capture_output=True, text=True, timeout=120
    )


def test_setup_with_flags_writes_a_config_that_check_config_accepts(tmp_path: Path) -> None:
    out = tmp_path / "etc" / "config.yaml"
    flags = ["--yes", "--out", str(out), "--camera", "/dev/video0", "--timezone", "Europe/Berlin"]
    r = kioskd("setup", *flags, "--thermal", "lepton:/dev/video2")
    assert r.returncode == 0, r.stderr
    check = kioskd("--check-config", "--config", str(out))
    assert check.returncode == 0 and "config ok" in check.stdout, check.stderr
    cfg = load_config(out)
    assert DEVICE_ID.fullmatch(cfg.device_id) and cfg.device_id != "demo-kiosk"
    assert "video0" in cfg.device_id
    assert (cfg.timezone, cfg.camera.source, cfg.classifier.model) == (
        "Europe/Berlin", "/dev/video0", "commercial",
    )  # fmt: skip
    assert (cfg.gate.mode, cfg.thermal.source, cfg.thermal.device) == (
        "thermal", "lepton", "/dev/video2",
    )  # fmt: skip
    # Only what differs between doors is written; the rest keeps the documented defaults.
    assert set(yaml.safe_load(out.read_text())) == {
        "device_id", "timezone", "camera", "classifier", "gate", "thermal",
    }  # fmt: skip

    again = kioskd("setup", *flags)
    assert again.returncode == 1 and "--force replaces it" in again.stderr
    assert load_config(out).gate.mode == "thermal"  # untouched
    forced = kioskd("setup", *flags, "--force", "--thermal", "none")
    assert forced.returncode == 0, forced.stderr
    assert load_config(out).gate.mode == "off"


def test_setup_refuses_bad_values(tmp_path: Path) -> None:
    out = tmp_path / "config.yaml"
    r = kioskd("setup", "--yes", "--out", str(out), "--thermal", "flir")
    assert r.returncode == 2 and "KIND:DEVICE" in r.stderr
    r = kioskd("setup", "--yes", "--out", str(out), "--timezone", "Mars/Olympus", "--camera", "0")
    assert r.returncode == EX_CONFIG and "timezone: unknown time zone" in r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_device_ids_differ_per_board_and_per_camera() -> None:
    machines = ("3d1219c7c4c5404aaa1f6d2a48adfda4", "b0b2d2b1d6e64a8f9d5c6e7f8a9b0c1d")
    cameras = ("/dev/v4l/by-id/usb-046d_C920_ABC-video-index0", "/dev/video2")
    ids = {make_device_id("raspberrypi", cam, m) for cam in cameras for m in machines}
    assert len(ids) == 4
    assert all(DEVICE_ID.fullmatch(i) and i.startswith("raspberrypi-") for i in ids)
    long = make_device_id("a" * 80 + ".store.example", "/dev/" + "b" * 80, machines[0])
    assert DEVICE_ID.fullmatch(long) and len(long) <= 64


def test_system_timezone(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    assert system_timezone(tmp_path) is None
    (etc / "timezone").write_text("Europe/Vienna\n")
    assert system_timezone(tmp_path) == "Europe/Vienna"
    (etc / "localtime").symlink_to("../usr/share/zoneinfo/America/New_York")
    assert system_timezone(tmp_path) == "America/New_York"  # the link wins
    (etc / "localtime").unlink()
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Not/A_Zone")
    assert system_timezone(tmp_path) == "Europe/Vienna"


def _fake_node(sys_root: Path, name: str, card: str, usb: tuple[str, str] | None) -> None:
    device = sys_root / "devices" / "platform" / "usb1" / f"1-{name[-1]}"
    interface = device / f"1-{name[-1]}:1.0"
    interface.mkdir(parents=True)
    if usb:
        (device / "idVendor").write_text(usb[0] + "\n")
        (device / "idProduct").write_text(usb[1] + "\n")
    node = sys_root / "class" / "video4linux" / name
    node.mkdir(parents=True)
    (node / "name").write_text(card + "\n")
    (node / "device").symlink_to(interface)


def test_cameras_are_read_from_sysfs_and_thermal_ones_named(tmp_path: Path) -> None:
    sys_root, dev = tmp_path / "sys", tmp_path / "dev"
    _fake_node(sys_root, "video10", "USB Camera", ("046d", "0825"))
    _fake_node(sys_root, "video2", "PureThermal (fw:v1.3.0)", ("1e4e", "0100"))
    (dev / "v4l" / "by-id").mkdir(parents=True)
    (dev / "v4l" / "by-id" / "usb-GroupGets_PureThermal-video-index0").symlink_to("../../video2")
    cameras = list_cameras(sys_root, dev)
    assert [c.device for c in cameras] == [str(dev / "video2"), str(dev / "video10")]
    thermal, webcam = cameras
    assert (thermal.thermal, thermal.usb_id, thermal.name) == (
        "lepton", ("1e4e", "0100"), "PureThermal (fw:v1.3.0)",
    )  # fmt: skip
    assert thermal.source.endswith("by-id/usb-GroupGets_PureThermal-video-index0")
    assert (webcam.thermal, webcam.source) == (None, str(dev / "video10"))
    assert "cannot open" in webcam.problem  # no device node here: said, not raised


def test_grab_measures_the_faces_of_the_demo() -> None:
    grab = grab_faces("demo", seconds=3.0)
    assert not grab.problem and not grab.live and grab.size == (640, 480)
    assert grab.frames >= 30 and grab.frames_with_face >= 10
    # The demo's portraits are 130-155 px wide at the door (frames.py renders them so).
    assert 100 <= sorted(grab.face_widths_px)[len(grab.face_widths_px) // 2] <= 170
    r = kioskd("cameras", "--grab", "demo", "--seconds", "2")
    assert r.returncode == 0, r.stderr
    assert "test grab demo:" in r.stdout and "face width: median" in r.stdout


def test_grab_of_a_missing_device_says_so(caplog: pytest.LogCaptureFixture) -> None:
    grab = grab_faces("/dev/video77", seconds=1.0)
    assert grab.frames == 0 and grab.problem == "no frame in 1 s"
    caplog.set_level(logging.INFO, "kiosk.frames")
    source = CameraSource("/dev/video77", reconnect_initial_s=0.1).start()
    try:
        deadline = time.monotonic() + 5
        while source.state != "reconnecting" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        source.close()
    assert not os.path.exists("/dev/video77")
    assert "cannot open: /dev/video77: no such device (`kioskd cameras` lists" in caplog.text
