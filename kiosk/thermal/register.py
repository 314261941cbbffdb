"""Visible -> thermal registration with one 3x3 homography.

Two non-coaxial cameras only agree exactly at one depth, so the homography is fitted from
point pairs taken at the kiosk's working distance (tools/calibrate.py) and reported with its
reprojection error.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.detect import Box


def fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares homography mapping src (N,2) points onto dst (N,2); N >= 4."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) < 4 or len(src) != len(dst):
        raise ValueError(f"need at least 4 matching point pairs, got {len(src)} and {len(dst)}")
    h, _ = cv2.findHomography(src, dst, 0)
    if h is None or not np.isfinite(h).all():
        raise ValueError("the points do not determine a homography (collinear or repeated?)")
    return h / h[2, 2]


def project(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(pts, np.asarray(h, np.float64)).reshape(-1, 2)


def reprojection_errors(h: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Distance in dst pixels between each mapped src point and its partner."""
    return np.linalg.norm(project(h, src) - np.asarray(dst, np.float64).reshape(-1, 2), axis=1)


def map_box(h: np.ndarray, box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A visible face box as the bounding box of its mapped corners, clipped to the thermal
    frame; None when nothing of it lands inside."""
    corners = np.array(
        [
            [box.x, box.y],
            [box.x + box.w, box.y],
            [box.x, box.y + box.h],
            [box.x + box.w, box.y + box.h],
        ]
    )
    mapped = project(h, corners)
    x0, y0 = np.floor(mapped.min(axis=0) + 1e-6).astype(int)
    x1, y1 = np.ceil(mapped.max(axis=0) - 1e-6).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)
