"""Haar cascade face detection on a downscaled grey frame, optionally inside a region."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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


def cascade_path(name: str = "haarcascade_frontalface_default.xml") -> str:
    return str(cv2.data.haarcascades + name)


class FaceDetector:
    """OpenCV's Haar cascade; detection runs on a grey frame scaled down by `downscale`."""

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 60,
        downscale: float = 1.0,
        cascade: str | None = None,
    ) -> None:
        path = cascade or cascade_path()
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise FileNotFoundError(f"{path}: not a loadable Haar cascade")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.downscale = downscale

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
        found = self._cascade.detectMultiScale(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_px, min_px),
            maxSize=(max_px, max_px),
        )
        ox, oy = (0, 0) if roi is None else (roi.x, roi.y)
        boxes = [
            Box(int(x * s) + ox, int(y * s) + oy, int(w * s), int(h * s)) for (x, y, w, h) in found
        ]
        return sorted(boxes, key=lambda b: b.area, reverse=True)
