"""Haar cascade face detection on a downscaled grey frame, optionally inside a region.

When the upright search finds nothing, the frame is searched again turned by +-`rotate_deg`:
a tilted head is the commonest miss of the frontal cascade (docs/detection.md: on bordered
portraits recall 83 % -> 90 %). A face found only when turned needs more neighbours and must
also be found by a second cascade around it; unchecked, the turned searches added false
detections on face-free frames; checked, they add none there.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.config import DetectorConfig


@dataclass(frozen=True, slots=True)
class Box:
    """A face box in full-frame pixel coordinates."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union else 0.0

    def expanded(self, factor: float, width: int, height: int) -> Box:
        """The box grown by `factor` about its centre, clipped to the frame."""
        cx, cy = self.center
        hw, hh = self.w * factor / 2, self.h * factor / 2
        x0, y0 = max(0, int(cx - hw)), max(0, int(cy - hh))
        x1, y1 = min(width, int(cx + hw)), min(height, int(cy + hh))
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))


#: A tracked face is searched for at sizes within this factor of its last width only.
TRACKED_SIZE_RANGE = 1.3
#: Confirms faces found only in a turned frame. On the face-free frames of tools/eval_detect.py
#: minNeighbors 1 let 4 false detections through, 2 to 4 one (mirrored skimage retina).
CONFIRM_CASCADE = "haarcascade_frontalface_alt2.xml"
CONFIRM_MIN_NEIGHBORS = 2
#: The turned search asks for this many more neighbours than the upright one: +2 removes that
#: last one, for recall 0.90 instead of 0.92 on the portraits.
TURNED_EXTRA_NEIGHBORS = 2


def cascade_path(name: str = "haarcascade_frontalface_default.xml") -> str:
    return str(cv2.data.haarcascades + name)  # type: ignore[attr-defined]


def load_cascade(path: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"{path}: not a loadable Haar cascade")
    return cascade


def turned(grey: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The grey image turned about its centre, and the affine map back to the original."""
    h, w = grey.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    image = cv2.warpAffine(grey, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return image, cv2.invertAffineTransform(m)


def unturned(box: tuple[int, int, int, int], back: np.ndarray) -> tuple[int, int, int, int]:
    """A box found in a turned image, upright about its mapped-back centre (kept in frame)."""
    x, y, w, h = box
    cx, cy = back @ np.array([x + w / 2, y + h / 2, 1.0])
    return (max(0, round(cx - w / 2)), max(0, round(cy - h / 2)), w, h)


class FaceDetector:
    """OpenCV's Haar cascade; detection runs on a grey frame scaled down by `downscale`."""

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 60,
        downscale: float = 1.0,
        cascade: str | None = None,
        rotate_deg: float = 0.0,
    ) -> None:
        self._cascade = load_cascade(cascade or cascade_path())
        self._confirm = load_cascade(cascade_path(CONFIRM_CASCADE)) if rotate_deg else None
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.downscale = downscale
        self.rotate_deg = rotate_deg

    @classmethod
    def from_config(cls, d: DetectorConfig) -> FaceDetector:
        """The detector kioskd runs for the `detector` config section."""
        return cls(d.scale_factor, d.min_neighbors, d.min_size_px, d.downscale, None, d.rotate_deg)

    def detect(
        self, image: np.ndarray, roi: Box | None = None, face_px: int | None = None
    ) -> list[Box]:
        """Faces in a BGR or grey image, in full-frame coordinates, largest first.

        `face_px` is the expected face width (a tracked face): then only the scales within
        `TRACKED_SIZE_RANGE` of it are searched. The region is shrunk by `downscale` as the
        full frame is, so its boxes lie on the same scale grid and crops are framed alike.
        """
        region = image if roi is None else image[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w]
        if region.size == 0:
            return []
        s, smallest, largest = self.downscale, self.min_size, 0
        if face_px:
            smallest = max(self.min_size, int(face_px / TRACKED_SIZE_RANGE))
            largest = int(face_px * TRACKED_SIZE_RANGE)
        if s > 1.0:  # shrink first: the colour conversion then touches fewer pixels
            size = (max(1, int(region.shape[1] / s)), max(1, int(region.shape[0] / s)))
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        grey = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        min_px = max(8, int(smallest / s))
        max_px = int(largest / s) if largest else 0
        if min(grey.shape[:2]) < min_px:
            return []
        found = self._search(grey, min_px, max_px, self.min_neighbors)
        if not found and self.rotate_deg:
            found = self._search_turned(grey, min_px, max_px)
        ox, oy = (0, 0) if roi is None else (roi.x, roi.y)
        boxes = [
            Box(int(x * s) + ox, int(y * s) + oy, int(w * s), int(h * s)) for (x, y, w, h) in found
        ]
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    def _search(
        self, grey: np.ndarray, min_px: int, max_px: int, min_neighbors: int
    ) -> list[tuple[int, int, int, int]]:
        found = self._cascade.detectMultiScale(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=min_neighbors,
            minSize=(min_px, min_px),
            maxSize=(max_px, max_px),
        )
        return [(int(f[0]), int(f[1]), int(f[2]), int(f[3])) for f in found]

    def _search_turned(
        self, grey: np.ndarray, min_px: int, max_px: int
    ) -> list[tuple[int, int, int, int]]:
        """Faces of heads tilted either way, each confirmed by the second cascade."""
        found: list[tuple[int, int, int, int]] = []
        for angle in (self.rotate_deg, -self.rotate_deg):
            image, back = turned(grey, angle)
            neighbors = self.min_neighbors + TURNED_EXTRA_NEIGHBORS
            for box in self._search(image, min_px, max_px, neighbors):
                upright = unturned(box, back)
                fresh = all(Box(*upright).iou(Box(*f)) < 0.3 for f in found)
                if fresh and self._confirmed(image, box):
                    found.append(upright)
        return found

    def _confirmed(self, grey: np.ndarray, box: tuple[int, int, int, int]) -> bool:
        """The second cascade finds a face of about the same size around the box."""
        x, y, w, h = box
        cx, cy, r = x + w / 2, y + h / 2, 0.8 * w
        x0, y0 = max(0, int(cx - r)), max(0, int(cy - r))
        patch = grey[y0 : int(cy + r), x0 : int(cx + r)]
        lo, hi = int(0.75 * w), int(1.35 * w) + 1
        if min(patch.shape[:2]) < lo or self._confirm is None:
            return False
        hits = self._confirm.detectMultiScale(
            patch,
            scaleFactor=1.05,
            minNeighbors=CONFIRM_MIN_NEIGHBORS,
            minSize=(lo, lo),
            maxSize=(hi, hi),
        )
        return len(hits) > 0
