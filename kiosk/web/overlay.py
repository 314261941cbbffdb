"""Draws a live snapshot for the setup page: what the pipeline saw, on the frame it saw.

Runs on a web thread (OpenCV releases the GIL while it draws and encodes). Face boxes with
their track ids (and thermal readings), the region of interest, the windows detection ran in,
the smallest face the detector looks for, and the thermal frame: blended onto the visible one
through the homography, or beside it (single-person mode), with the reference emitter.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.detect import Box
from kiosk.web.live import Face, Snapshot, ThermalView

JPEG_QUALITY = 80
# Colour scale of the thermal frame: room to fever, so skin always looks the same.
THERMAL_RANGE_C = (20.0, 40.0)
THERMAL_ALPHA = 0.45
# Overlay colours (BGR): the live page's legend shows the same.
FACE, ROI, WINDOW = (80, 220, 60), (0, 200, 255), (255, 160, 60)
GUIDE, REFERENCE = (255, 255, 255), (255, 255, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    (w, h), _ = cv2.getTextSize(text, FONT, 0.5, 1)
    y = max(h + 4, y)
    cv2.rectangle(image, (x, y - h - 4), (x + w + 4, y + 2), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x + 2, y - 2), FONT, 0.5, colour, 1, cv2.LINE_AA)


def _rect(image: np.ndarray, box: Box, colour: tuple[int, int, int], width: int = 2) -> None:
    cv2.rectangle(image, (box.x, box.y), (box.x + box.w, box.y + box.h), colour, width)


def colourise(celsius: np.ndarray) -> np.ndarray:
    lo, hi = THERMAL_RANGE_C
    scaled = np.clip((celsius - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)


def _reference_label(view: ThermalView) -> str:
    return "reference" if view.reference_c is None else f"reference {view.reference_c:.1f} C"


def _registered(image: np.ndarray, view: ThermalView, h: np.ndarray) -> None:
    """The thermal frame mapped onto the visible one, and the reference where it lands."""
    height, width = image.shape[:2]
    back = np.linalg.inv(h)
    warped = cv2.warpPerspective(colourise(view.celsius), back, (width, height))
    covered = cv2.warpPerspective(
        np.full(view.celsius.shape, 255, np.uint8), back, (width, height)
    ).astype(bool)
    image[covered] = cv2.addWeighted(image, 1 - THERMAL_ALPHA, warped, THERMAL_ALPHA, 0)[covered]
    disc = view.reference
    if disc is None:
        return
    points = np.array([[[disc.col, disc.row]], [[disc.col + max(disc.radius, 2), disc.row]]])
    (cx, cy), (ex, ey) = cv2.perspectiveTransform(points, back).reshape(2, 2)
    radius = max(4, int(np.hypot(ex - cx, ey - cy)))
    cv2.circle(image, (int(cx), int(cy)), radius, REFERENCE, 2)
    _label(image, _reference_label(view), int(cx + radius + 4), int(cy), REFERENCE)


def _beside(image: np.ndarray, view: ThermalView) -> None:
    """No homography (single-person mode): the thermal frame in the top-right corner."""
    height, width = image.shape[:2]
    th, tw = view.celsius.shape
    scale = (width // 3) / tw
    small = cv2.resize(colourise(view.celsius), (int(tw * scale), int(th * scale)))
    sh, sw = small.shape[:2]
    sh = min(sh, height)
    image[:sh, width - sw :] = small[:sh]
    cv2.rectangle(image, (width - sw, 0), (width - 1, sh), GUIDE, 1)
    _label(image, "thermal (not registered)", width - sw + 2, 18, GUIDE)
    disc = view.reference
    if disc is not None:
        centre = (width - sw + int(disc.col * scale), int(disc.row * scale))
        radius = max(4, int(max(disc.radius, 2) * scale))
        cv2.circle(image, centre, radius, REFERENCE, 2)
        _label(image, _reference_label(view), centre[0] + radius + 4, centre[1] + 5, REFERENCE)


def _face(image: np.ndarray, face: Face) -> None:
    _rect(image, face.box, FACE)
    text = f"#{face.track_id}"
    if face.temperature_c is not None:
        text += f"  {face.temperature_c:.1f} C"
    elif face.reading:
        text += f"  ({face.reading})"
    _label(image, text, face.box.x, face.box.y - 4, FACE)


def draw(snapshot: Snapshot) -> np.ndarray:
    """A copy of the snapshot's frame with everything the setup page shows drawn on it."""
    image = snapshot.image.copy()
    view = snapshot.thermal
    if view is not None:
        if view.homography is not None:
            _registered(image, view, view.homography)
        else:
            _beside(image, view)
    if snapshot.roi is not None:
        _rect(image, snapshot.roi, ROI, 1)
        _label(image, "ROI", snapshot.roi.x, snapshot.roi.y + 18, ROI)
    if snapshot.detection == "windows":
        for window in snapshot.windows:
            _rect(image, window, WINDOW, 1)
    height, width = image.shape[:2]
    side = snapshot.min_size_px  # bottom right: the reference emitter usually sits bottom left
    x0 = width - 8 - side
    cv2.rectangle(image, (x0, height - 8 - side), (width - 8, height - 8), GUIDE, 1)
    _label(image, f"smallest face {side} px", max(0, x0 - 180), height - 10, GUIDE)
    for face in snapshot.faces:
        _face(image, face)
    return image


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("cannot encode the live frame")
    return data.tobytes()
