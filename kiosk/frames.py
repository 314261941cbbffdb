"""Frames and the visible-camera sources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One visible frame: BGR pixels, its capture time (monotonic and UTC wall clock)."""

    image: np.ndarray
    index: int
    t_mono: float
    t_wall: datetime
