"""The fast frame path finds the same visitors as the naive one (full-frame Haar every frame).

Both run through the real Pipeline, Tracker, FaceDetector, OpenCV decoding and LiteRT
classifier (tools/bench.py builds them); only the detection strategy differs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.classify import DEFAULT_MODEL_DIR, Classifier
from kiosk.counters import Counters
from kiosk.detect import FaceDetector
from kiosk.frames import CameraSource, demo_video_path
from kiosk.labels import AGE_GROUPS, GENDERS
from kiosk.motion import shrink
from kiosk.visit import Visit
from tools.bench import build_pipeline
from tools.make_demo import ENTER_S, Appearance, render, write_video

# Visits are stamped on the clip's timeline; the paths may see a face a frame or so apart.
SPAN_TOLERANCE_S = 0.5


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    """The shipped models, or (before they exist) a tiny random float model built here."""
    if (DEFAULT_MODEL_DIR / "labels.json").is_file():
        return Classifier()
    tf = pytest.importorskip("tensorflow", reason="no shipped model and no TensorFlow")
    inp = tf.keras.Input((32, 32, 3))
    x = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.Conv2D(8, 3)(inp))
    age = tf.keras.layers.Dense(8, activation="softmax")(x)
    gender = tf.keras.layers.Dense(2, activation="softmax")(x)
    model = tf.keras.Model(inp, [age, gender])
    out = tmp_path_factory.mktemp("model")
    (out / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    labels = {"files": {"model": "m.tflite"}, "age_groups": AGE_GROUPS, "genders": GENDERS}
    (out / "labels.json").write_text(json.dumps(labels))
    return Classifier(out)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled demo and the benchmark's scenes, shorter: one face all along, empty."""
    out = tmp_path_factory.mktemp("clips")
    scenes = {
        "one_face": ((Appearance("hopper", -ENTER_S, 60.0, 320, 130),), 8.0),
        "empty": ((), 4.0),
    }
    paths = {"demo": demo_video_path()}
    for name, (script, seconds) in scenes.items():
        paths[name] = out / f"{name}.mp4"
        write_video(paths[name], render(script, seconds))
    return paths


def run(kind: str, clip: Path, classifier: Classifier) -> tuple[list[tuple[float, float]], dict]:
    """Visits as (start, end) seconds on the clip's timeline, and the detector's frame counts."""
    cv2.setNumThreads(1)
    visits: list[Visit] = []
    pipeline = build_pipeline(kind, classifier, visits.append, Counters())
    source = CameraSource(str(clip), realtime=False).start()
    t0: datetime | None = None
    while (frame := source.read()) is not None:
        t0 = t0 or frame.t_wall
        pipeline.process(frame)
    pipeline.flush()
    source.close()
    t0 = t0 or datetime.now(UTC)
    spans = sorted(
        ((v.started_at - t0).total_seconds(), (v.ended_at - t0).total_seconds()) for v in visits
    )
    d = pipeline.detector
    counts = {"full": d.full_frames, "window": d.window_frames, "skipped": d.skipped_frames}
    return spans, counts


@pytest.fixture(scope="module")
def results(clips: dict[str, Path], classifier: Classifier) -> dict[str, dict]:
    return {
        name: {kind: run(kind, path, classifier) for kind in ("naive", "fast")}
        for name, path in clips.items()
    }


@pytest.mark.parametrize("clip", ["demo", "one_face", "empty"])
def test_fast_and_naive_find_the_same_visits(results: dict, clip: str) -> None:
    (naive, _), (fast, _) = results[clip]["naive"], results[clip]["fast"]
    assert len(fast) == len(naive), f"{clip}: fast {fast} vs naive {naive}"
    for (ns, ne), (fs, fe) in zip(naive, fast, strict=True):
        assert abs(fs - ns) <= SPAN_TOLERANCE_S, f"{clip}: starts {fs:.2f} vs {ns:.2f}"
        assert abs(fe - ne) <= SPAN_TOLERANCE_S, f"{clip}: ends {fe:.2f} vs {ne:.2f}"


def test_visits_are_the_scripted_visitors(results: dict) -> None:
    """Both paths agreeing is only worth something if they are right."""
    meta = json.loads(demo_video_path().with_suffix(".json").read_text())
    assert len(results["demo"]["fast"][0]) == len(meta["visitors"])
    ((start, end),) = results["one_face"]["fast"][0]
    assert start < 0.5 and end > 7.5
    assert results["empty"]["fast"][0] == []


def test_fast_path_skips_full_frame_haar(results: dict) -> None:
    _, naive = results["one_face"]["naive"]
    _, fast = results["one_face"]["fast"]
    frames = sum(naive.values())
    assert naive["full"] == frames
    assert fast["full"] <= frames / 10 and fast["window"] >= frames * 0.8
    _, empty = results["empty"]["fast"]
    assert empty["full"] <= 1 and empty["skipped"] >= sum(empty.values()) - 1


def test_tracked_face_search_finds_the_full_frame_face(clips: dict[str, Path]) -> None:
    cap = cv2.VideoCapture(str(clips["one_face"]))
    ok, image = cap.read()
    cap.release()
    assert ok
    detector = FaceDetector(1.15, 5, 60, 2.0)
    (face,) = detector.detect(image)
    window = face.expanded(2.2, image.shape[1], image.shape[0])
    (again,) = detector.detect(image, window, face_px=face.w)
    assert again.iou(face) > 0.7
    assert detector.detect(image, window, face_px=face.w // 3) == []


def test_shrink_matches_one_area_resize() -> None:
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    direct = cv2.resize(image, (80, 60), interpolation=cv2.INTER_AREA)
    stepped = shrink(image, (80, 60))
    assert stepped.shape == direct.shape
    assert np.abs(stepped.astype(int) - direct).max() <= 1
    odd = shrink(image[:475, :633], (80, 60))
    assert odd.shape == (60, 80, 3)
