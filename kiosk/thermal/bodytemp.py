"""Body (oral) temperature from a face's canthus reading and the room temperature.

Skin is not body temperature: the inner canthus reads about 1.3 C below the mouth, and the
gap depends on the room. Screening thermographs map the canthus reading to a body estimate
with a validated adjustment; this one is fitted by tools/fit_core_model.py on the FDA's
face/oral study and shipped as core_model.json next to this module (coefficients, the data's
checksums and the held-out figures). The room temperature is configured, or read from the
thermal frame itself: the commonest temperature outside the person and the reference emitter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_PATH = Path(__file__).with_name("core_model.json")
# Background histogram bins: at -0.026 C of estimate per C of room, 0.25 C bins cost < 0.01 C.
BACKGROUND_BIN_C = 0.25


@dataclass(frozen=True, slots=True)
class CoreModel:
    """oral = intercept + canthus*c + knee*max(0, c - knot_c) + ambient*room (all in C).

    Below the knot the canthus follows the body weakly (a cool face, not a cool body); above
    it, nearly one to one. A colder room lowers the canthus for the same body temperature.
    """

    intercept: float
    canthus: float
    knee: float
    knot_c: float
    ambient: float
    ambient_range_c: tuple[float, float]  # the rooms the fit saw; outside, it extrapolates
    threshold_c: float  # the estimate at 90 % held-out specificity for oral >= 37.5

    def estimate(self, canthus_c: float, ambient_c: float) -> float:
        knee = max(0.0, canthus_c - self.knot_c)
        return float(
            self.intercept + self.canthus * canthus_c + self.knee * knee + self.ambient * ambient_c
        )


def load_core_model(path: Path = MODEL_PATH) -> CoreModel:
    data = json.loads(path.read_text())
    c = data["coefficients"]
    low, high = data["fitted_on"]["ambient_range_c"]
    return CoreModel(
        c["intercept"],
        c["canthus"],
        c["knee"],
        c["knot_c"],
        c["ambient"],
        (low, high),
        data["figures"]["threshold_c"],
    )


def background_c(corrected: np.ndarray, exclude: np.ndarray) -> float | None:
    """The room as the thermal camera sees it: the commonest temperature outside `exclude`
    (the person and the reference emitter). Walls dominate an entrance scene; the mode, unlike
    the median, does not move when a visitor fills half the frame."""
    values = corrected[~exclude]
    if values.size == 0:
        return None
    low = float(np.floor(values.min() / BACKGROUND_BIN_C) * BACKGROUND_BIN_C)
    bins = max(1, int(np.ceil((float(values.max()) - low) / BACKGROUND_BIN_C)) + 1)
    counts = np.bincount(((values - low) / BACKGROUND_BIN_C).astype(np.int64), minlength=bins)
    return low + (int(np.argmax(counts)) + 0.5) * BACKGROUND_BIN_C
