"""Running totals that the pipeline keeps and that logs, sd_notify, MQTT and metrics read."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Counters:
    """Plain numbers, updated from the frame loop only (but `inference_ms`, which the classify
    thread appends to); readers take a consistent-enough view."""

    started_mono: float = field(default_factory=time.monotonic)
    frames: int = 0
    frames_rejected: int = 0  # None/empty/wrong-shape frames skipped
    faces: int = 0
    visits: int = 0
    visits_dropped: int = 0  # could not be stored (e.g. disk full) and were given up
    checks: Counter[str] = field(default_factory=Counter)  # gate status -> count
    source_reconnects: int = 0
    thermal_reconnects: int = 0
    thermal_rejected: int = 0  # NaN/inf/empty/wrong-shape thermal frames
    last_visit_at: datetime | None = None
    last_frame_mono: float = 0.0
    fps: float = 0.0  # exponentially smoothed
    camera_state: str = "closed"  # kiosk.frames.STATES, set by the frame loop
    clock_synced: bool = True  # whether the wall clock is trusted (kiosk/clock.py)
    # Per-face inference latencies; bounded so nothing grows when no exporter drains it.
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    def frame_done(self, now: float) -> None:
        if self.last_frame_mono:
            dt = now - self.last_frame_mono
            if dt > 0:
                self.fps = 1.0 / dt if self.fps == 0 else 0.9 * self.fps + 0.1 / dt
        self.last_frame_mono = now
        self.frames += 1

    def uptime_s(self, now: float | None = None) -> float:
        return (now or time.monotonic()) - self.started_mono

    def summary(self) -> str:
        up = self.uptime_s()
        avg = self.frames / up if up > 0 else 0.0
        return (
            f"frames={self.frames} fps={avg:.1f} face_detections={self.faces}"
            f" visits={self.visits} frames_rejected={self.frames_rejected}"
            f" camera_reconnects={self.source_reconnects}"
        )
