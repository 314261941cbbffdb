"""The shipped classifier made slower: a test double of timing only.

It stands in for the larger models (and slower boards) that take longer than a frame per
visit; its predictions are the real classifier's, on the real crops.
"""

from __future__ import annotations

import time

import numpy as np

from kiosk.classify import Classifier


class SlowClassifier(Classifier):
    """Sleeps `delay_s` before each call; fails the calls numbered in `fail_calls` (from 1)."""

    def __init__(self, *args, delay_s: float, fail_calls: tuple[int, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delay_s = delay_s
        self.fail_calls = fail_calls
        self.calls = 0

    def probabilities(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        time.sleep(self.delay_s)
        if self.calls in self.fail_calls:
            raise RuntimeError(f"classifier call {self.calls} failed (test)")
        return super().probabilities(crops)
