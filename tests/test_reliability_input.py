"""Bad input: broken frames, broken model files, broken config files.

Frames go through the real pipeline (Haar, tracker, shipped models); model and config files
through kioskd itself, checking its exit code and message.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from kiosk.classify import DEFAULT_MODEL_DIR
from kiosk.config import EX_CONFIG, GateConfig, ThermalConfig
from kiosk.counters import Counters
from kiosk.detect import Box
from kiosk.frames import Frame, demo_video_path
from kiosk.gate import build_gate
from kiosk.visit import Visit
from tests.kioskd import run_kioskd, write_config
from tests.reliability import real_pipeline

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

BAD_IMAGES = {
    "None": None,
    "empty": np.zeros((0, 0, 3), np.uint8),
    "1-D": np.zeros(640, np.uint8),
    "grey 2-D": np.full((480, 640), 128, np.uint8),
    "4 channels": np.full((480, 640, 4), 128, np.uint8),
    "float32": np.full((480, 640, 3), 0.5, np.float32),
    "float NaN": np.full((480, 640, 3), np.nan, np.float32),
    "uint16": np.full((480, 640, 3), 30000, np.uint16),
    "tiny": np.full((4, 4, 3), 128, np.uint8),
    "all black": np.zeros((480, 640, 3), np.uint8),
    "all white": np.full((480, 640, 3), 255, np.uint8),
    "a list": [[1, 2, 3]],
}


def demo_frames(first: int, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(demo_video_path()))
    cap.set(cv2.CAP_PROP_POS_FRAMES, first)
    frames = []
    for _ in range(count):
        ok, image = cap.read()
        assert ok
        frames.append(image)
    cap.release()
    return frames


def test_bad_frames_are_counted_and_skipped_and_time_still_passes():
    counters = Counters()
    visits: list[Visit] = []
    pipeline = real_pipeline(visits.append, counters)
    fps = 15.0
    t = 0.0
    index = 0

    def feed(image) -> None:
        nonlocal t, index
        pipeline.process(Frame(image, index, t, T0 + timedelta(seconds=t)))
        t += 1 / fps
        index += 1

    # The first demo visitor in view (clip 1.5 .. 5.5 s), with every kind of bad frame mixed in.
    good = demo_frames(int(1.5 * fps), int(4 * fps))
    bad = list(BAD_IMAGES.values())
    for i, image in enumerate(good):
        feed(image)
        if i % 5 == 0:
            feed(bad[(i // 5) % len(bad)])
    rejected_mixed = counters.frames_rejected
    assert rejected_mixed == len(range(0, len(good), 5))
    assert counters.frames == len(good)
    assert visits == []  # the visitor is still in view
    # Then the lens is covered: only black frames. The visit must still close and be stored.
    for _ in range(int(2 * fps)):
        feed(BAD_IMAGES["all black"])
    assert len(visits) == 1
    assert visits[0].frames >= 20
    assert counters.frames_rejected == rejected_mixed + int(2 * fps)


@pytest.fixture
def model_copy(tmp_path):
    """A copy of the shipped model folder that a test may break."""
    target = tmp_path / "models"
    shutil.copytree(DEFAULT_MODEL_DIR, target)
    return target


def _model_file(folder):
    files = sorted(p for p in folder.glob("*.tflite"))
    assert files, f"no .tflite in {folder}"
    return files[0]


def _break_missing(folder):
    path = _model_file(folder)
    path.unlink()
    return path


def _break_truncated(folder):
    path = _model_file(folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _break_garbage(folder):
    path = _model_file(folder)
    path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))
    return path


def _break_header_only(folder):
    path = _model_file(folder)
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"\0" * 64)  # the right identifier, nothing behind it
    return path


def _break_labels(folder):
    path = folder / "labels.json"
    path.write_text("{not json")
    return path


def _break_no_labels(folder):
    path = folder / "labels.json"
    path.unlink()
    return path


@pytest.mark.parametrize(
    "breaker",
    [
        _break_missing,
        _break_truncated,
        _break_garbage,
        _break_header_only,
        _break_labels,
        _break_no_labels,
    ],
)
def test_broken_model_files_stop_kioskd_naming_the_file(tmp_path, model_copy, breaker):
    path = breaker(model_copy)
    cfg = write_config(tmp_path, classifier={"model_dir": str(model_copy)})
    t0 = time.monotonic()
    r = run_kioskd(cfg, timeout=60)
    assert r.returncode == EX_CONFIG, r.stderr
    assert time.monotonic() - t0 < 30
    assert "cannot start" in r.stderr and str(path) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def _alias_bomb() -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


CONFIG_FILES = {
    "empty": (b"", "file is empty"),
    "whitespace": (b"  \n\n# only a comment\n", "file is empty"),
    "binary": (np.random.default_rng(2).bytes(4096), "not a UTF-8 text file"),
    "NUL bytes": (b"device_id: a\x00b\n", "NUL"),
    "huge": (b"# " + b"x" * 3_000_000 + b"\n", "too large"),
    "alias bomb": (_alias_bomb().encode(), "anchors and aliases are not allowed"),
    "deep nesting": (b"camera: " + b"[" * 40_000 + b"]" * 40_000, "nested deeper than"),
    "python tag": (b"device_id: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    "top-level list": (b"- a\n- b\n", "must be a mapping"),
}


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_broken_config_files_exit_78_quickly(tmp_path, name):
    content, reason = CONFIG_FILES[name]
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    t0 = time.monotonic()
    r = run_kioskd(path, timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == EX_CONFIG, r.stderr
    assert elapsed < 20
    assert f"kioskd: config error: {path}: " in r.stderr, r.stderr
    assert reason in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_nan_inf_blank_thermal_frames_are_counted_and_give_unmeasured(tmp_path):
    good = np.full((60, 80), 22.0, np.float32)
    nan, inf, hot = good.copy(), good.copy(), good.copy()
    nan[10:20, 10:20] = np.nan
    inf[30, 40] = np.inf
    hot[0, 0] = 5000.0  # out of any physical scene range
    blank = np.full((60, 80), 36.0, np.float32)
    path = tmp_path / "bad.npy"
    np.save(path, np.stack([nan, inf, blank, hot]))
    thermal = ThermalConfig(source="replay", device=str(path), fps=40.0)
    counters = Counters()
    gate = build_gate(GateConfig(mode="thermal"), thermal, counters).start()
    try:
        deadline = time.monotonic() + 10
        while gate.source.frames_read < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        image = demo_frames(int(2.0 * 15), 1)[0]
        box = Box(250, 120, 140, 140)
        for i in range(30):
            gate.observe(1, box, Frame(image, i, time.monotonic(), T0))
            time.sleep(0.03)
        result = gate.decide(1, 0.0, time.monotonic())
    finally:
        gate.close()
    assert counters.thermal_rejected >= 20
    assert result.status == "unmeasured" and result.record is False
    assert result.temperature_c is None
