"""Thermal sources: replay of real recordings, rotation, looping, stall -> reopen, MLX errors."""

from __future__ import annotations

import importlib.util
import threading
import time

import numpy as np
import pytest

from kiosk.config import ThermalConfig
from kiosk.thermal.sources import (
    LeptonSource,
    Mlx90640Source,
    P2ProSource,
    ReplaySource,
    ThermalSourceError,
    load_recording,
    source_from_config,
)
from tests.broker import wait_until

FEVER = "thermal/feverscreen_lepton35"


def test_replay_npz_rotated_and_in_celsius(shared_data):
    path = shared_data / FEVER / "testr.npz"
    with ReplaySource(path, fps=50, loop=False, rotate_quarters=1) as src:
        assert wait_until(lambda: src.ended, timeout=10)
        frame = src.latest()
    assert src.frames_read == 70 and src.reconnects == 0
    assert frame.celsius.shape == (160, 120) and frame.celsius.dtype == np.float32
    last = np.load(path)["frames_ck"][-1].astype(np.float32) / 100 - 273.15
    np.testing.assert_allclose(frame.celsius, np.rot90(last, -1), atol=1e-4)


def test_replay_npy_stack_folder_and_mlx_npz(shared_data, tmp_path):
    stack = load_recording(shared_data / FEVER / "testr.npz")[:3]
    for i, frame in enumerate(stack):
        np.save(tmp_path / f"{i:03d}.npy", frame)
    np.testing.assert_array_equal(load_recording(tmp_path), stack)
    np.save(tmp_path / "ck.npy", np.load(shared_data / FEVER / "testr.npz")["frames_ck"][:2])
    np.testing.assert_allclose(load_recording(tmp_path / "ck.npy"), stack[:2], atol=1e-4)
    mlx = next((shared_data / "thermal/mlx90641_thermaleye").glob("*.npz"))
    frames = load_recording(mlx)
    assert frames.shape[1:] == (12, 16) and 30 < float(np.median(frames)) < 38
    with pytest.raises(ThermalSourceError):
        load_recording(tmp_path / "missing.npz")


def test_replay_loops(shared_data):
    path = shared_data / FEVER / "testr.npz"
    with ReplaySource(path, fps=200, loop=True) as src:
        assert wait_until(lambda: src.frames_read > 150, timeout=10)
        assert not src.ended and src.reconnects == 0


def test_missing_replay_file_is_retried_with_backoff(tmp_path):
    cfg = ThermalConfig(
        source="replay", device=str(tmp_path / "late.npy"), reconnect_initial_s=0.05,
        reconnect_max_s=0.2,
    )  # fmt: skip
    src = source_from_config(cfg).start()
    try:
        assert wait_until(lambda: src.reconnects >= 3, timeout=5)
        assert src.latest() is None
        np.save(tmp_path / "late.npy", np.full((2, 24, 32), 30.0, np.float32))
        assert wait_until(lambda: src.latest() is not None, timeout=5)
    finally:
        src.close()


class HangsOnceSource(ReplaySource):
    """A replay whose first connection hangs in its read, as a wedged USB camera does."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.opens = 0
        self.release = threading.Event()

    def _open(self):
        self.opens += 1
        handle = super()._open()
        handle["hang"] = self.opens == 1
        return handle

    def _read(self, handle):
        if handle["hang"] and handle["i"] == 5:
            self.release.wait(30)
        return super()._read(handle)


def test_stalled_source_is_reopened(shared_data):
    src = HangsOnceSource(
        shared_data / FEVER / "testr.npz", fps=100, loop=True, stall_timeout_s=0.3,
        reconnect_initial_s=0.05,
    )  # fmt: skip
    with src:
        t0 = time.monotonic()
        assert wait_until(lambda: src.opens >= 2 and src.frames_read > 20, timeout=10)
        assert src.reconnects >= 1 and time.monotonic() - t0 >= 0.3
    src.release.set()


@pytest.mark.skipif(
    importlib.util.find_spec("adafruit_mlx90640") is not None,
    reason="the Adafruit MLX90640 driver is installed here",
)
def test_mlx90640_without_driver_says_how_to_install():
    src = Mlx90640Source("", fps=4)
    with pytest.raises(ThermalSourceError, match=r"pip install 'kioskd\[mlx90640\]'"):
        src._open()


def test_uvc_sources_convert_what_opencv_hands_them(shared_data):
    """OpenCV gives raw UVC frames as 16-bit words or as a flat byte row; both decode."""
    ck = np.load(shared_data / FEVER / "testr.npz")["frames_ck"][0]
    expected = ck.astype(np.float32) / 100 - 273.15
    lepton = LeptonSource("0")
    np.testing.assert_allclose(lepton.convert(ck), expected, atol=1e-3)
    flat = np.frombuffer(ck.astype("<u2").tobytes(), np.uint8).reshape(1, -1)
    np.testing.assert_allclose(lepton.convert(flat), expected, atol=1e-3)
    with pytest.raises(ValueError, match="120x160"):
        lepton.convert(np.zeros((1, 100), np.uint8))

    from tests.test_thermal import p2pro_uvc_frame

    folder = shared_data / "thermal/infiray_p2pro"
    frame = p2pro_uvc_frame((folder / "p2pro_test.jpg").read_bytes())
    p2pro = P2ProSource("0")
    for layout in (frame, frame.reshape(1, -1)):
        np.testing.assert_allclose(
            p2pro.convert(layout), np.load(folder / "p2pro_test_c.npy"), atol=1e-3
        )
