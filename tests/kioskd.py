"""Helpers to run the real kioskd as a subprocess against a config the test writes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml
from sqlalchemy import inspect

from kiosk.store import Store


def write_config(tmp_path: Path, **sections) -> Path:
    """A config under tmp_path: its own database, the given sections merged over defaults."""
    data = {
        "device_id": "test-kiosk",
        "log_level": "INFO",
        "state_dir": str(tmp_path / "state"),
        "camera": {"source": "demo", "realtime": False},
        # The test host's NTP status is not under test (a container's kernel may report the
        # clock unsynchronised); tests of clock trust set clock.trust themselves.
        "clock": {"trust": "always"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def kioskd_cmd(config: Path, *args: str, module: str = "kiosk.service") -> list[str]:
    return [sys.executable, "-m", module, "--config", str(config), *args]


def run_kioskd(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        kioskd_cmd(config, *args), capture_output=True, text=True, timeout=timeout, env=env
    )


def start_kioskd(config: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
    return subprocess.Popen(
        kioskd_cmd(config, *args, module=kw.pop("module", "kiosk.service")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kw,
    )


def stored_visits(tmp_path: Path):
    db = tmp_path / "state" / "kiosk.db"
    if not db.exists():
        return []
    store = Store(f"sqlite:///{db}", read_only=True)
    try:
        if not inspect(store.engine).has_table("visits"):
            return []  # kioskd has created the file but not yet the schema
        return store.visits(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    finally:
        store.close()
