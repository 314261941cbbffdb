"""tools/train.py: targets, weights, augmentation, and a one-epoch smoke run."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT))

from tools import train  # noqa: E402  (TensorFlow is imported only inside train.main)
from tools.facedata import FaceRows  # noqa: E402


def rows_of(ages, genders):
    n = len(ages)
    return FaceRows(files=[str(i) for i in range(n)], age=np.zeros(n),
                    age_group=np.array(ages), age_nearest=np.array(ages),
                    gender=np.array(genders), fold=np.zeros(n, int), res_px=np.zeros(n, int),
                    race=np.zeros(n, int), overlap=None)


def test_age_targets_are_soft_ordinal_probabilities():
    t = train.age_targets(np.array([0, 4, 7]), 0.5)
    assert t.shape == (3, 8) and np.allclose(t.sum(axis=1), 1)
    assert t[1].argmax() == 4 and t[1, 3] == pytest.approx(t[1, 5]) and t[1, 3] < t[1, 4]
    assert np.array_equal(train.age_targets(np.array([2]), 0.0)[0], np.eye(8)[2])


def test_sample_weights_balance_gender_within_age_group():
    # age group 4: 30 female, 10 male; age group 0: 5 female, 5 male
    r = rows_of([4] * 40 + [0] * 10, [0] * 30 + [1] * 10 + [0] * 5 + [1] * 5)
    w_age, w_gen = train.sample_weights(r, 0.5)
    assert w_age.mean() == pytest.approx(1) and w_gen.mean() == pytest.approx(1)
    assert w_age[45] > w_age[0]  # the rarer age group weighs more
    # gender head: equal total weight for female and male inside group 4
    assert w_gen[:30].sum() == pytest.approx(w_gen[30:40].sum())
    w_age0, w_gen0 = train.sample_weights(r, 0.0)
    assert np.allclose(w_age0, 1) and np.allclose(w_gen0, 1)


def test_augmentation_keeps_shape_and_is_seeded():
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    a = train.make_batch(chips, np.arange(4), 56, seed=5, strength=1.0)
    b = train.make_batch(chips, np.arange(4), 56, seed=5, strength=1.0)
    assert a.shape == (4, 56, 56, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, train.make_batch(chips, np.arange(4), 56, seed=5, strength=0))


@pytest.mark.slow
def test_one_epoch_smoke_run(shared_data, tmp_path):
    """One epoch on 200 images: ~25 s of CPU on this 2-core machine, so it runs in CI too."""
    pytest.importorskip("tensorflow", reason="training needs tools/requirements-train.txt")
    faces = shared_data / "faces"
    out, work = tmp_path / "out", tmp_path / "work"
    t0 = time.time()
    rc = train.main([
        "--labels", str(faces / "labels.csv"), "--images", str(faces / "utkface.tar"),
        "--epochs", "1", "--limit", "200", "--val-limit", "200", "--rep-samples", "50",
        "--cache-dir", str(tmp_path / "cache"), "--work-dir", str(work), "--out", str(out),
        "--threads", "2",
    ])
    assert rc == 0
    for f in ("model.tflite", "labels.json", "metrics.json", "reproduce.txt"):
        assert (out / f).is_file(), f
    report = json.loads((out / "metrics.json").read_text())
    assert report["train_rows"] == 200 and len(report["history"]) == 1
    assert set(report["metrics"]) == {"float32", "int8"}
    assert "--epochs 1" in (out / "reproduce.txt").read_text()
    from kiosk.classify import Classifier

    clf = Classifier(out)
    assert len(clf.predict([np.zeros((64, 64, 3), np.uint8)])) == 1
    if os.environ.get("CI"):
        print(f"train smoke run took {time.time() - t0:.0f} s")
