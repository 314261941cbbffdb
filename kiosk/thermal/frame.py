"""The thermal frame type and the checks every frame passes before it is measured."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

# A radiometric frame is at least a MLX90641-sized grid and at most a 640x512 core.
MIN_SIDE = 8
MAX_SIDE = 1024
# Plausible scene temperatures in C; anything outside is a decoding or sensor fault.
SCENE_MIN_C = -60.0
SCENE_MAX_C = 300.0


@dataclass(frozen=True, slots=True)
class ThermalFrame:
    """One radiometric frame in degrees Celsius (float32, upright) and its capture time."""

    celsius: np.ndarray
    index: int
    t_mono: float
    t_wall: datetime


def frame_problem(celsius: object) -> str | None:
    """Why a frame cannot be measured (None when it can): missing, wrong shape, NaN/inf, blank."""
    if celsius is None:
        return "missing"
    if not isinstance(celsius, np.ndarray):
        return f"not an array ({type(celsius).__name__})"
    if celsius.ndim != 2:
        return f"wrong shape {celsius.shape}"
    h, w = celsius.shape
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        return f"wrong shape {celsius.shape}"
    if not np.issubdtype(celsius.dtype, np.floating):
        return f"not floating point ({celsius.dtype})"
    if not np.isfinite(celsius).all():
        return "NaN or inf pixels"
    lo, hi = float(celsius.min()), float(celsius.max())
    if hi == lo:
        return "blank (all pixels equal)"
    if lo < SCENE_MIN_C or hi > SCENE_MAX_C:
        return f"values out of range ({lo:.1f}..{hi:.1f} C)"
    return None
