"""Decides where Haar runs on each frame: the fast path of the frame loop.

Full-frame detection costs tens of milliseconds, so it runs only when something moved outside
the people already tracked (a newcomer), or periodically as a safety net while tracks are
alive. A tracked face is searched for only in a window around its last box. An empty, still
scene costs one thumbnail difference per frame.
"""

from __future__ import annotations

import numpy as np

from kiosk.config import DetectorConfig
from kiosk.detect import Box, FaceDetector
from kiosk.motion import MotionDetector


def _intersect(a: Box, b: Box) -> Box:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def person_region(face: Box, width: int, height: int) -> Box:
    """Where a tracked person's own movement shows: around the head and the body below it.

    Motion there is not a newcomer; a person who does appear inside it is still found by the
    periodic full-frame pass.
    """
    x0, y0 = max(0, int(face.x - 1.5 * face.w)), max(0, int(face.y - 0.6 * face.h))
    x1 = min(width, int(face.x + 2.5 * face.w))
    return Box(x0, y0, max(0, x1 - x0), max(0, height - y0))


def suppress_duplicates(boxes: list[Box], iou: float = 0.4) -> list[Box]:
    """The same face found from two overlapping windows is kept once (the larger box)."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b.area, reverse=True):
        if all(box.iou(k) < iou for k in kept):
            kept.append(box)
    return kept


class FocusedDetector:
    def __init__(
        self,
        detector: FaceDetector,
        motion: MotionDetector | None = None,
        roi: Box | None = None,
        window_scale: float = 2.2,
        full_every: int = 15,
    ) -> None:
        self.detector = detector
        self.motion = motion
        self.roi = roi
        self.window_scale = window_scale
        self.full_every = full_every
        self._since_full = 0
        self.full_frames = 0
        self.window_frames = 0
        self.skipped_frames = 0
        # What the last frame got, for the live view: "full", "windows" or "none".
        self.last_pass = "none"
        self.last_windows: list[Box] = []
        self.last_moved = False

    @classmethod
    def from_config(cls, d: DetectorConfig) -> FocusedDetector:
        """The detector kioskd runs for the `detector` config section."""
        return cls(
            FaceDetector.from_config(d),
            MotionDetector() if d.focus else None,
            roi=Box(*d.roi) if d.roi else None,
        )

    def detect(self, image: np.ndarray, tracked: list[Box]) -> list[Box]:
        h, w = image.shape[:2]
        windows = [b.expanded(self.window_scale, w, h) for b in tracked]
        if self.roi is not None:
            windows = [_intersect(win, self.roi) for win in windows]
        self._since_full += 1
        newcomer = self.motion is None or self.motion.moved(
            image, [person_region(b, w, h) for b in tracked]
        )
        self.last_moved, self.last_windows = newcomer, windows
        if newcomer or (windows and self._since_full >= self.full_every):
            self._since_full = 0
            self.full_frames += 1
            self.last_pass = "full"
            return self.detector.detect(image, self.roi)
        if not windows:
            self.skipped_frames += 1
            self.last_pass = "none"
            return []
        self.window_frames += 1
        self.last_pass = "windows"
        found = [
            face
            for win, box in zip(windows, tracked, strict=True)
            if win.area
            for face in self.detector.detect(image, win, face_px=box.w)
        ]
        return suppress_duplicates(found)
