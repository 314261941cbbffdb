"""One snapshot of the daemon's health, for the web page and `/api/health`.

Built on the reader's thread from plain attributes the frame loop keeps (a consistent-enough
view, like `Counters`); only the outbox depth and the free disk ask anything (one indexed
COUNT, one statvfs).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kiosk.thermal.sources import ThermalSource


@dataclass(frozen=True, slots=True)
class Health:
    version: str
    device_id: str
    uptime_s: float
    camera: str  # connecting | streaming | reconnecting | stalled | ended | closed
    fps: float
    thermal: str | None  # None without a thermal camera
    mqtt_enabled: bool
    mqtt_connected: bool
    outbox_depth: int | None  # None when MQTT is off
    clock_trusted: bool
    disk_free_bytes: int | None
    model: str
    records_not_stored: int  # held in memory because the database refused them


def health_payload(health: Health) -> dict[str, Any]:
    """The JSON object of `GET /api/health`."""
    payload = asdict(health)
    payload["uptime_s"] = round(health.uptime_s)
    payload["fps"] = round(health.fps, 2)
    return payload


def free_bytes(path: Path | None) -> int | None:
    """Free space for the database's folder (None when it is not a local file)."""
    if path is None:
        return None
    try:
        return shutil.disk_usage(path.parent if path.parent.is_dir() else ".").free
    except OSError:
        return None


def thermal_state(source: ThermalSource, stall_timeout_s: float) -> str:
    """streaming, waiting (no frame within its stall timeout) or ended."""
    if source.ended:
        return "ended"
    latest = source.latest()
    if latest is None:
        return "waiting for the first frame"
    age_s = time.monotonic() - latest.t_mono
    return "streaming" if age_s <= stall_timeout_s else f"no frame for {age_s:.0f} s"
