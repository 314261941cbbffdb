"""Privacy: what kioskd writes and sends, checked from the outside.

kioskd runs the demo with every location it could write to (state, home, temp, XDG folders,
working directory) under one temporary root and, where strace is installed, every file it opens
for writing is recorded. No image, crop or array may be written anywhere, the database holds
only short text and numbers, no MQTT payload carries pixels, and temperatures reach the broker
only when mqtt.publish_temperature allows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.broker import Broker, Subscriber, free_port, needs_mosquitto
from tests.conftest import ROOT

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pnm", ".tif", ".tiff", ".webp",
    ".gif", ".npy", ".npz", ".mp4", ".avi", ".mkv", ".raw", ".yuv", ".pkl", ".pickle",
}  # fmt: skip
MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG": "PNG",
    b"BM": "BMP",
    b"GIF8": "GIF",
    b"RIFF": "RIFF/WebP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"\x93NUMPY": "NumPy",
    b"PK\x03\x04": "NumPy .npz/zip",
    b"\x80\x04\x95": "pickle",
    b"P5\n": "PGM",
    b"P6\n": "PPM",
}
TEMPERATURE_C = 36.7
STRACE = shutil.which("strace")
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")


def _magic(data: bytes) -> str | None:
    return next((kind for m, kind in MAGIC.items() if data.startswith(m)), None)


def _run_demo(root: Path, port: int, publish_temperature: bool, *args: str):
    """kioskd on the demo, everything writable under `root`, external gate fed temperatures."""
    for sub in ("home", "tmp", "cache", "config", "data", "state", "work", "etc"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    gate_port = free_port()
    cfg = {
        "device_id": "privacy",
        "log_level": "INFO",
        "camera": {"source": "demo", "realtime": False},
        "gate": {"mode": "external", "http_port": gate_port, "match_window_s": 60},
        "mqtt": {
            "enabled": True,
            "port": port,
            "publish_temperature": publish_temperature,
            "stats_interval_s": 1,
        },
        "clock": {"trust": "always"},
    }
    config = root / "etc" / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_STATE_HOME": str(root / "state"),
        "STATE_DIRECTORY": str(root / "state"),
    }
    cmd = [sys.executable, "-m", "kiosk.service", "--config", str(config), *args]
    trace = root / "strace.txt"
    if STRACE:
        cmd = [STRACE, "-f", "-qq", "-e", "trace=open,openat,creat", "-o", str(trace), *cmd]
    proc = subprocess.Popen(
        cmd, cwd=root / "work", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    stop = threading.Event()

    def post_decisions() -> None:
        body = json.dumps({"status": "pass", "temperature_c": TEMPERATURE_C}).encode()
        while not stop.wait(0.2):
            req = urllib.request.Request(f"http://127.0.0.1:{gate_port}/", data=body)
            with contextlib.suppress(OSError):
                urllib.request.urlopen(req, timeout=1).close()

    poster = threading.Thread(target=post_decisions, daemon=True)
    poster.start()
    try:
        out = proc.communicate(timeout=240)[0]
    finally:
        stop.set()
        proc.kill()
    poster.join(5)
    return proc.returncode, out, trace if STRACE else None


def _written_paths(trace: Path) -> set[str]:
    paths = set()
    for line in trace.read_text(errors="replace").splitlines():
        m = re.search(r'open(?:at)?\((?:[^,]+, )?"([^"]+)", ([^,)]+)', line)
        if m and WRITE_FLAGS.search(m.group(2)) and "= -1" not in line:
            paths.add(m.group(1))
        elif line.split(" ", 1)[-1].startswith("creat(") and "= -1" not in line:
            paths.add(line.split('"')[1])
    return paths


def _check_db(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for col in cols:
                kinds = {r[0] for r in conn.execute(f"SELECT DISTINCT typeof({col}) FROM {table}")}
                assert kinds <= {"text", "integer", "real", "null"}, (table, col, kinds)
                longest = conn.execute(f"SELECT max(length({col})) FROM {table}").fetchone()[0]
                assert longest is None or longest <= 64, (table, col, longest)
        return conn.execute("SELECT count(*) FROM visits").fetchone()[0]


def _check_payload(topic: str, payload: bytes) -> None:
    assert len(payload) < 4096, (topic, len(payload))
    assert _magic(payload) is None, topic
    text = payload.decode("utf-8")  # never binary
    try:
        data = json.loads(text)
    except ValueError:
        assert len(text) < 64, (topic, text)
        return

    def walk(node) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            assert len(node) <= 16, (topic, "a long array")
            for v in node:
                walk(v)
        elif isinstance(node, str):
            assert len(node) <= 200, (topic, "a long string")

    walk(data)


@needs_mosquitto
@pytest.mark.parametrize("publish_temperature", [False, True])
def test_nothing_visual_leaves_and_temperatures_only_when_allowed(tmp_path, publish_temperature):
    root = tmp_path / "root"
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port, ["#"]) as sub:
        args = () if not publish_temperature else ("--max-frames", "250")
        rc, out, trace = _run_demo(root, broker.port, publish_temperature, *args)
        assert rc == 0, out
        sub.wait_for(lambda s: len(s.on("kiosk/privacy/visit")) >= 1, timeout=10)
        messages = list(sub.messages)

    # Files: only the database (and this test's own config and trace) under the root.
    found = sorted(p for p in root.rglob("*") if p.is_file())
    for path in found:
        assert path.suffix.lower() not in IMAGE_SUFFIXES, path
        with path.open("rb") as f:
            assert _magic(f.read(16)) is None, path
    names = {p.relative_to(root).as_posix() for p in found}
    allowed = {"etc/config.yaml", "strace.txt", "state/kiosk.db", "state/kiosk.db-wal",
               "state/kiosk.db-shm", "state/kiosk.db.lock"}  # fmt: skip
    assert names <= allowed, names - allowed
    visits = _check_db(root / "state" / "kiosk.db")
    assert visits >= 1, out
    if trace is not None:
        outside = {
            p for p in _written_paths(trace)
            if not Path(p).resolve().is_relative_to(root.resolve())
            and p not in ("/dev/null", "/dev/tty")
        }  # fmt: skip
        assert not outside, f"kioskd opened files for writing outside its root: {outside}"

    # MQTT: short JSON or text, no pixels; temperatures only when allowed.
    visit_payloads = []
    for msg in messages:
        _check_payload(msg.topic, msg.payload)
        if msg.topic == "kiosk/privacy/visit":
            visit_payloads.append(json.loads(msg.payload))
    assert len(visit_payloads) >= 1
    assert all(v["temperature_status"] == "pass" for v in visit_payloads)
    everything = b"\n".join(m.payload for m in messages)
    if publish_temperature:
        assert all(v["temperature_c"] == TEMPERATURE_C for v in visit_payloads)
    else:
        assert b"temperature_c" not in everything
        # Nor the value under another name; ISO times are left out first, since a time's
        # seconds can read "36.7" (09:14:36.712Z).
        untimed = re.sub(rb"\d\d:\d\d:\d\d\.\d+Z", b"", everything)
        assert str(TEMPERATURE_C).encode() not in untimed
