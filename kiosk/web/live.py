"""The live setup view's hand-over from the frame loop: only while someone is looking.

Threads: `offer` runs on the frame thread, and kioskd calls it only while `wanted` is true (a
viewer asked for a frame within `VIEWER_TIMEOUT_S`). It keeps references, not copies (a frame's
image is never changed after it is read) and a few boxes: no drawing, no encoding, no I/O.
`next_snapshot` runs on a web thread and waits there for a newer frame; the drawing and the
JPEG are made on that thread too (kiosk/web/overlay.py). With no viewer the frame loop pays
one clock read per frame. Nothing here is ever written anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from kiosk.detect import Box
from kiosk.focus import FocusedDetector
from kiosk.frames import Frame
from kiosk.gate import Gate
from kiosk.gate.thermal import ThermalGate
from kiosk.thermal.measure import Disc
from kiosk.track import Track

log = logging.getLogger("kioskd")

# The page asks for the next frame as soon as one arrives; a tab closed (or put in the
# background, where browsers pause it) stops the hand-over within this time.
VIEWER_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Face:
    track_id: int
    box: Box
    temperature_c: float | None = None
    reading: str = ""  # "ok" or why there is no temperature; "" without a thermal camera


@dataclass(frozen=True, slots=True)
class ThermalView:
    celsius: np.ndarray
    homography: np.ndarray | None  # visible -> thermal; None in single-person mode
    reference: Disc | None
    reference_c: float | None  # what the reference emitter reads now


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    image: np.ndarray
    faces: list[Face]
    roi: Box | None
    min_size_px: int
    detection: str  # full | windows | none
    windows: list[Box]
    motion: str  # moving | still | off
    thermal: ThermalView | None


def faces_of(tracks: list[Track], frame: Frame, gate: Gate) -> list[Face]:
    """The tracks seen in this frame, with the thermal reading of each when there is one."""
    faces = []
    for track in tracks:
        if track.last_mono != frame.t_mono:
            continue
        reading = gate.latest_reading(track.id) if isinstance(gate, ThermalGate) else None
        if reading is None:
            faces.append(Face(track.id, track.box))
        else:
            faces.append(Face(track.id, track.box, reading.temperature_c, reading.reason))
    return faces


def thermal_of(gate: Gate) -> ThermalView | None:
    if not isinstance(gate, ThermalGate):
        return None
    latest = gate.source.latest()
    if latest is None:
        return None
    reference = gate.thermometer.reference
    return ThermalView(latest.celsius, gate.homography, reference.disc, reference.last_reading_c)


class LiveView:
    def __init__(self, viewer_timeout_s: float = VIEWER_TIMEOUT_S) -> None:
        self.viewer_timeout_s = viewer_timeout_s
        self._cond = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._seq = 0
        self._asked_mono = float("-inf")

    @property
    def wanted(self) -> bool:
        """Whether a viewer asked for a frame lately (read on the frame thread, every frame)."""
        return time.monotonic() - self._asked_mono < self.viewer_timeout_s

    def offer(
        self, frame: Frame, detector: FocusedDetector, tracks: list[Track], gate: Gate
    ) -> None:
        """On the frame thread, after the frame went through the pipeline."""
        motion = "off" if detector.motion is None else "moving" if detector.last_moved else "still"
        snapshot = Snapshot(
            seq=self._seq + 1,
            image=frame.image,
            faces=faces_of(tracks, frame, gate),
            roi=detector.roi,
            min_size_px=detector.detector.min_size,
            detection=detector.last_pass,
            windows=list(detector.last_windows),
            motion=motion,
            thermal=thermal_of(gate),
        )
        with self._cond:
            self._seq = snapshot.seq
            self._snapshot = snapshot
            self._cond.notify_all()

    def next_snapshot(self, after: int, timeout_s: float) -> Snapshot | None:
        """On a web thread: the newest snapshot later than `after`, waiting up to `timeout_s`
        (None if none came: no camera frame in that time)."""
        self._asked_mono = time.monotonic()
        deadline = self._asked_mono + timeout_s
        with self._cond:
            while self._snapshot is None or self._snapshot.seq <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._snapshot

    def opened(self, client: str) -> None:
        """The live page was opened: said in the log, every time."""
        log.info("web: live view opened from %s (frames stay in memory, nothing is written)",
                 client)  # fmt: skip
