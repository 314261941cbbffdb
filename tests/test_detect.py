"""The daemon's detector on real faces and on face-free frames, against upright-only Haar.

A fixed quarter of the shared Pixabay portraits (read from ../shared/data, never copied) and
the face-free set of tools/eval_detect.py built from that same quarter.
"""

import dataclasses

import numpy as np
import pytest

from kiosk.config import DetectorConfig
from kiosk.detect import FaceDetector, turned, unturned
from tests.conftest import SHARED_DATA
from tools.eval_detect import REFERENCE, evaluate, face_free, portraits, read_reference

FACES = SHARED_DATA / "faces"
EVERY = 4  # 149 of the 596 portraits
#: Measured on this sample: 118/135 = 0.874 upright only, 126/135 = 0.933 with the turned search.
RECALL_FLOOR = 0.89


@pytest.fixture(scope="module")
def figures() -> dict[str, dict]:
    if not (FACES / "pixabay.tar").is_file():
        pytest.skip(f"needs the portraits in {FACES} (shared data beside the repository)")
    labels, images = FACES / "pixabay_labels.csv", FACES / "pixabay.tar"
    reference = read_reference(REFERENCE)
    free = face_free(labels, images, reference, EVERY)
    out = {}
    for name, rotate_deg in (("upright", 0.0), ("daemon", DetectorConfig().rotate_deg)):
        d = dataclasses.replace(DetectorConfig(), rotate_deg=rotate_deg)
        found = evaluate(
            FaceDetector.from_config(d), portraits(labels, images, EVERY), reference, free
        )
        out[name] = found
    return out


def test_recall_above_a_floor_upright_haar_cannot_reach(figures):
    assert figures["daemon"]["portraits_with_reference"] > 100
    assert figures["daemon"]["recall"] >= RECALL_FLOOR
    assert figures["upright"]["recall"] < RECALL_FLOOR


def test_no_more_false_detections_on_face_free_frames(figures):
    assert figures["daemon"]["face_free_frames"] > 100
    assert figures["daemon"]["false_detections"] <= figures["upright"]["false_detections"]


def test_a_box_found_turned_maps_back_to_the_same_place():
    grey = np.zeros((240, 320), np.uint8)
    grey[40:80, 200:240] = 255  # a square centred at (220, 60)
    image, back = turned(grey, 15.0)
    ys, xs = np.nonzero(image > 127)
    cx, cy = xs.mean(), ys.mean()
    x, y, w, h = unturned((round(cx - 20), round(cy - 20), 40, 40), back)
    assert abs(x + w / 2 - 220) <= 1.5 and abs(y + h / 2 - 60) <= 1.5
