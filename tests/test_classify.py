"""Runtime classifier: preprocessing, face crops, model loading errors, shipped model accuracy."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from kiosk.classify import (
    CROP_SIZE,
    DEFAULT_MODEL_DIR,
    HAAR_BOX_FRACTION,
    HAAR_CENTRE_OFFSET,
    MODELS_ROOT,
    SHIPPED_MODELS,
    Classifier,
    ModelFileError,
    Prediction,
    crop_face,
    preprocess,
    shipped_model_dir,
)
from kiosk.detect import Box
from kiosk.labels import AGE_GROUPS, GENDERS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier()


def copy_models(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    shutil.copytree(DEFAULT_MODEL_DIR, d)
    return d


# ------------------------------------------------------------------ preprocessing and crops
def test_preprocess_resizes_to_rgb_uint8():
    img = np.zeros((100, 80, 3), np.uint8)
    img[..., 0] = 200  # blue in BGR
    x = preprocess(img, 56)
    assert x.shape == (56, 56, 3) and x.dtype == np.uint8
    assert x[..., 2].min() == 200 and x[..., 0].max() == 0  # now RGB: blue is last


def test_preprocess_accepts_grey_and_bgra():
    assert preprocess(np.full((30, 30), 7, np.uint8), 56).shape == (56, 56, 3)
    assert preprocess(np.zeros((70, 70, 4), np.uint8), 56).shape == (56, 56, 3)
    with pytest.raises(ValueError):
        preprocess(np.zeros((0, 5, 3), np.uint8))


def test_training_uses_the_runtime_preprocessing():
    sys.path.insert(0, str(ROOT))
    from tools import train

    assert train.preprocess is preprocess
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    batch = train.make_batch(chips, np.arange(5), 56, seed=0, strength=0.0)
    expected = np.stack([preprocess(c, 56) for c in chips])
    assert np.array_equal(batch, expected)


def test_crop_face_frames_like_the_training_chips():
    frame = np.zeros((480, 640, 3), np.uint8)
    box = Box(300, 200, 104, 104)
    side = 104 / HAAR_BOX_FRACTION
    cy = 200 + 52 + HAAR_CENTRE_OFFSET * side
    y0 = int(round(cy - side / 2))
    frame[y0 : y0 + 4, :] = 255  # a bright line at the crop's top edge
    crop = crop_face(frame, box)
    assert crop.shape[0] == crop.shape[1] and crop.shape[0] <= CROP_SIZE
    assert crop[0].mean() > 100 and crop[crop.shape[0] // 2].mean() == 0


def test_crop_face_pads_at_frame_borders_and_shrinks_big_faces():
    frame = np.full((200, 300, 3), 50, np.uint8)
    crop = crop_face(frame, Box(-20, -30, 160, 160))
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert (crop == 50).all()  # edge pixels repeated, never garbage
    small = crop_face(frame, Box(100, 100, 30, 30))
    assert small.shape[0] == small.shape[1] and small.shape[0] <= 32
    with pytest.raises(ValueError):
        crop_face(frame, Box(1000, 1000, 20, 20))


# ------------------------------------------------------------------ shipped models
@pytest.fixture(scope="module", params=SHIPPED_MODELS)
def shipped(request) -> Classifier:
    return Classifier(shipped_model_dir(request.param))


def test_shipped_models_load_and_predict(shipped):
    name = shipped.model_dir.name
    trained = json.loads((shipped.model_dir / "metrics.json").read_text())
    assert shipped.model_version.startswith(trained["name"] + "-") and name in trained["name"]
    for p in shipped.model_dir.glob("*.tflite"):
        assert p.stat().st_size <= 4_000_000, p  # the budget: 4 MB on disk per model
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (40, 64, 150)]
    preds = shipped.predict(crops)
    assert len(preds) == 3
    for p in preds:
        assert isinstance(p, Prediction)
        assert p.age_probs.shape == (8,) and abs(float(p.age_probs.sum()) - 1) < 1e-4
        assert p.age_group in AGE_GROUPS and p.gender in GENDERS
        assert 0.5 <= p.gender_prob <= 1.0 and 0.0 <= p.female_prob <= 1.0
        assert 0.0 < p.age_years < 100.0
    assert shipped.predict([]) == []


def test_default_model_is_accurate_and_names_are_checked():
    assert DEFAULT_MODEL_DIR == MODELS_ROOT / "accurate" == shipped_model_dir("accurate")
    with pytest.raises(ValueError, match="accurate, commercial"):
        shipped_model_dir("../etc")


def test_batch_equals_single(clf):
    rng = np.random.default_rng(2)
    crops = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    batch = clf.predict(crops)
    single = [clf.predict([c])[0] for c in crops]
    for a, b in zip(batch, single, strict=True):
        assert np.allclose(a.age_probs, b.age_probs, atol=1e-6)
        assert a.gender == b.gender


def test_model_version_is_stable_and_short(clf):
    assert Classifier(num_threads=2).model_version == clf.model_version
    assert len(clf.model_version) <= 40


# ------------------------------------------------------------------ error cases
def test_missing_model_dir_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.json"):
        Classifier(tmp_path / "nowhere")


def test_missing_model_file_names_it(tmp_path):
    d = copy_models(tmp_path)
    (d / "model.tflite").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.tflite.*missing"):
        Classifier(d)


def test_garbage_model_file(tmp_path):
    d = copy_models(tmp_path)
    (d / "model.tflite").write_bytes(b"this is not a model" * 100)
    with pytest.raises(ModelFileError, match=r"model\.tflite.*TFLite"):
        Classifier(d)
    assert issubclass(ModelFileError, ValueError)


def test_truncated_model_file(tmp_path):
    d = copy_models(tmp_path)
    data = (d / "model.tflite").read_bytes()
    (d / "model.tflite").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match=r"model\.tflite"):
        Classifier(d)


def test_empty_model_file(tmp_path):
    d = copy_models(tmp_path)
    (d / "model.tflite").write_bytes(b"")
    with pytest.raises(ModelFileError, match="truncated"):
        Classifier(d)


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("wrong_input_grey.tflite", r"expected an input of shape \(1, S, S, 3\)"),
        ("wrong_output_5.tflite", r"expected an age output of shape \(N, 8\)"),
    ],
)
def test_wrong_shape_model(tmp_path, fixture, expected):
    d = copy_models(tmp_path)
    shutil.copy(DATA / fixture, d / "model.tflite")
    with pytest.raises(ModelFileError, match=expected):
        Classifier(d)


def test_bad_label_map(tmp_path):
    d = copy_models(tmp_path)
    meta = json.loads((d / "labels.json").read_text())
    meta["age_groups"] = meta["age_groups"][:5]
    (d / "labels.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="age_groups"):
        Classifier(d)
    (d / "labels.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="labels.json"):
        Classifier(d)


def test_two_file_layout(tmp_path):
    """The runtime also takes separate age and gender files (here: the same file twice)."""
    d = copy_models(tmp_path)
    (d / "model.tflite").rename(d / "age.tflite")
    shutil.copy(d / "age.tflite", d / "gender.tflite")
    meta = json.loads((d / "labels.json").read_text())
    meta["files"] = {"age": "age.tflite", "gender": "gender.tflite"}
    (d / "labels.json").write_text(json.dumps(meta))
    two = Classifier(d)
    one = Classifier()
    crop = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.allclose(two.predict([crop])[0].age_probs, one.predict([crop])[0].age_probs)


def test_shipped_figures_belong_to_the_shipped_model(shipped):
    """The evaluations, benchmark and card beside each model were made with this very model:
    a retrained model.tflite without re-running tools/evaluate.py and tools/bench_models.py
    (and updating MODEL_CARD.md) fails here instead of shipping stale numbers."""
    version = shipped.model_version
    for f in ("eval_fold9.json", "eval_portraits.json"):
        assert json.loads((shipped.model_dir / f).read_text())["model_version"] == version, f
    benched = json.loads((MODELS_ROOT / "bench.json").read_text())
    assert benched[shipped.model_dir.name]["model_version"] == version
    assert f"`{version}`" in (MODELS_ROOT / "MODEL_CARD.md").read_text()


# ------------------------------------------------------------------ accuracy on real faces
def test_shipped_model_on_fold9_sample(shared_data, shipped):
    """A fixed sample of 400 fold-9 faces (never trained on): an untrained model (50 % gender,
    ~30 % one-off) or one with its outputs swapped cannot pass."""
    sys.path.insert(0, str(ROOT))
    from tools.evaluate import compute_metrics
    from tools.facedata import decode, iter_image_bytes, read_labels

    faces = shared_data / "faces"
    rows = read_labels(faces / "labels.csv")
    idx = np.flatnonzero(rows.fold == 9)
    idx = np.sort(np.random.default_rng(2024).choice(idx, 400, replace=False))
    rows = rows.subset(idx)
    crops = [decode(b) for _, b in iter_image_bytes(faces / "utkface.tar", rows.files)]
    age, female = shipped.probabilities(crops)
    m = compute_metrics(rows, age, female, shipped.age_years)
    assert m["n"] == 400
    assert m["gender_accuracy"] >= 0.90, m
    assert min(m["gender_accuracy_female"], m["gender_accuracy_male"]) >= 0.86, m
    assert m["age_one_off_accuracy"] >= 0.90, m
    assert m["mae_years"] <= 7.0, m


def test_shipped_model_on_portraits(shared_data, shipped):
    """The held-out Pixabay folds 6-9 (never trained or calibrated on), through the daemon's
    Haar detector and crop: a second collection, women and men each above the floor."""
    sys.path.insert(0, str(ROOT))
    from tools.evaluate import run

    faces = shared_data / "faces"
    m = run(
        str(faces / "pixabay_labels.csv"),
        str(faces / "pixabay.tar"),
        detect=True,
        model_dir=str(shipped.model_dir),
        filter_expr="fold==6|7|8|9",
        border=0.25,
    )
    assert m["n"] >= 180, m
    assert m["gender_accuracy"] >= 0.94, m
    assert min(m["gender_accuracy_female"], m["gender_accuracy_male"]) >= 0.92, m
