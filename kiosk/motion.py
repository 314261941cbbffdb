"""A cheap "did anything move?" test, so Haar runs only where a face can have appeared."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from kiosk.detect import Box


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """INTER_AREA down to `size` by halving first: OpenCV's 2x area path is much faster than
    its general one, so 640x480 -> 80x60 costs a third (and gives the same thumbnail)."""
    w, h = size
    while image.shape[1] >= 2 * w and image.shape[0] >= 2 * h:
        half = (image.shape[1] // 2, image.shape[0] // 2)
        image = cv2.resize(image, half, interpolation=cv2.INTER_AREA)
    if (image.shape[1], image.shape[0]) != (w, h):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return image


class MotionDetector:
    """Frame differencing on a tiny grey thumbnail (80x60 by default)."""

    def __init__(
        self, threshold: int = 16, min_fraction: float = 0.002, size: tuple[int, int] = (80, 60)
    ) -> None:
        self.threshold = threshold
        self.min_pixels = max(1, int(min_fraction * size[0] * size[1]))
        self.size = size
        self._previous: np.ndarray | None = None

    def moved(self, image: np.ndarray, ignore: Sequence[Box] = ()) -> bool:
        """Whether enough pixels changed since the last frame, outside the `ignore` boxes."""
        small = shrink(image, self.size)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return True
        changed = cv2.absdiff(grey, previous) > self.threshold
        sx, sy = self.size[0] / image.shape[1], self.size[1] / image.shape[0]
        for b in ignore:
            x0, y0 = max(0, int(b.x * sx)), max(0, int(b.y * sy))
            changed[y0 : int((b.y + b.h) * sy) + 1, x0 : int((b.x + b.w) * sx) + 1] = False
        return int(np.count_nonzero(changed)) >= self.min_pixels
