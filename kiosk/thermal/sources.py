"""Radiometric thermal sources: each reads on its own thread and hands out the latest frame.

A source is the device hooks (`_open`, `_read`, `_close`) that `kiosk.supervise.Supervisor`
drives, the same supervisor as the visible camera's: a read that fails or no frame for
`stall_timeout_s` closes the device and reopens it after a capped exponential backoff, and a
reader stuck in a blocking driver call is abandoned (its frames are dropped) rather than waited
for.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.config import ThermalConfig
from kiosk.lifecycle import Backoff, Part
from kiosk.supervise import EndOfStream, Outage, Supervisor
from kiosk.thermal.convert import (
    as_uint16_image,
    lepton_to_celsius,
    p2pro_to_celsius,
    rotate,
)
from kiosk.thermal.frame import ThermalFrame

log = logging.getLogger(__name__)

LEPTON_WIDTH, LEPTON_HEIGHT = 160, 120
MLX90640_WIDTH, MLX90640_HEIGHT = 32, 24


class ThermalSourceError(Exception):
    """A source cannot be opened (missing device, driver or file); retried with backoff."""


class ThermalSource(Part, ABC):
    """Base: the device hooks the supervisor drives, rotation, timestamps and the latest frame.
    A source that lacks a device hook fails at construction, not inside its thread."""

    name = "thermal"

    def __init__(
        self,
        rotate_quarters: int = 0,
        stall_timeout_s: float = 5.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.rotate_quarters = rotate_quarters
        self.frames_read = 0
        self._latest: ThermalFrame | None = None
        self._lock = threading.Lock()
        self._supervisor: Supervisor[Any, np.ndarray] = Supervisor(
            self.name,
            open=self._open,
            read=self._read,
            publish=self._publish,
            close=self._close,
            backoff=Backoff(reconnect_initial_s, reconnect_max_s),
            stall_timeout_s=stall_timeout_s,
            on_outage=self._outage,
        )

    # Device-specific parts -------------------------------------------------------------------

    @abstractmethod
    def _open(self) -> Any:
        """Open the device and return a handle; raise ThermalSourceError when it cannot."""

    @abstractmethod
    def _read(self, handle: Any) -> np.ndarray:
        """Block for the next frame in C (sensor orientation); raise on failure or the end."""

    def _close(self, handle: Any) -> None:
        """Release the device; called on the reader's thread once its last read has returned."""

    # Public ----------------------------------------------------------------------------------

    def start(self) -> ThermalSource:
        self._supervisor.start()
        return self

    @property
    def reconnects(self) -> int:
        return self._supervisor.reconnects

    @property
    def ended(self) -> bool:
        return self._supervisor.ended

    def latest(self) -> ThermalFrame | None:
        with self._lock:
            return self._latest

    def close(self, timeout_s: float = 2.0) -> None:
        self._supervisor.close(timeout_s)

    # Supervisor callbacks --------------------------------------------------------------------

    def _publish(self, celsius: np.ndarray) -> None:
        if isinstance(celsius, np.ndarray) and celsius.ndim == 2:
            celsius = rotate(celsius, self.rotate_quarters)
        frame = ThermalFrame(celsius, self.frames_read, time.monotonic(), datetime.now(UTC))
        with self._lock:
            self._latest = frame
            self.frames_read += 1

    def _outage(self, outage: Outage) -> None:
        if outage.cause == "cannot open":
            log.warning(
                "%s: cannot open (%s); retrying in %.1f s", self.name, outage.error, outage.delay_s
            )
            return
        if outage.cause == "read failed":
            log.warning("%s: read failed: %s", self.name, outage.error)
            why = "read failed"
        else:
            why = f"stalled (no frame for {self._supervisor.stall_timeout_s:.1f} s)"
        log.warning("%s: %s; reopening in %.1f s", self.name, why, outage.delay_s)


def _video_device(device: str) -> int | str:
    return int(device) if device.isdigit() else device


class _UvcSource(ThermalSource):
    """A UVC thermal camera read through OpenCV with RGB conversion off (raw 16-bit words)."""

    fourcc = "Y16 "
    width = LEPTON_WIDTH
    height = LEPTON_HEIGHT

    def __init__(self, device: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.device = device

    def _open(self) -> Any:
        import cv2

        cap = cv2.VideoCapture(_video_device(self.device), cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise ThermalSourceError(f"cannot open video device {self.device!r}")
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))  # type: ignore[attr-defined]
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.frame_rows())
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        return cap

    def frame_rows(self) -> int:
        return self.height

    def _read(self, handle: Any) -> np.ndarray:
        ok, data = handle.read()
        if not ok or data is None:
            raise ThermalSourceError("no frame from the device")
        return self.convert(data)

    def _close(self, handle: Any) -> None:
        handle.release()

    @abstractmethod
    def convert(self, data: np.ndarray) -> np.ndarray:
        """Raw device words to degrees C."""


class LeptonSource(_UvcSource):
    """FLIR Lepton 3.x on a PureThermal board: UVC Y16, radiometric TLinear."""

    name = "lepton"

    def __init__(self, device: str, resolution_k: float = 0.01, **kw: Any) -> None:
        super().__init__(device, **kw)
        self.resolution_k = resolution_k

    def convert(self, data: np.ndarray) -> np.ndarray:
        return lepton_to_celsius(as_uint16_image(data, self.height, self.width), self.resolution_k)


class P2ProSource(_UvcSource):
    """InfiRay P2 Pro / Topdon TC001: 256x384 YUYV frame, temperatures in the bottom half."""

    name = "p2pro"
    fourcc = "YUYV"
    width = 256
    height = 192

    def frame_rows(self) -> int:
        return 2 * self.height

    def convert(self, data: np.ndarray) -> np.ndarray:
        return p2pro_to_celsius(data)


class Mlx90640Source(ThermalSource):
    """Melexis MLX90640 (32x24) over I2C with the optional Adafruit CircuitPython driver."""

    name = "mlx90640"
    REFRESH_HZ = (0.5, 1, 2, 4, 8, 16, 32, 64)
    FRAME_RETRIES = 3

    def __init__(self, device: str = "", fps: float = 4.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.device = device
        self.fps = fps

    def _open(self) -> Any:
        try:
            import adafruit_mlx90640
            import board
            import busio
        except ImportError as exc:
            raise ThermalSourceError(
                "thermal.source mlx90640 needs the Adafruit driver: "
                "pip install 'kioskd[mlx90640]' (adafruit-circuitpython-mlx90640) "
                f"[{exc}]"
            ) from exc
        i2c = busio.I2C(board.SCL, board.SDA, frequency=800_000)
        sensor = adafruit_mlx90640.MLX90640(i2c)
        rate = min(self.REFRESH_HZ, key=lambda hz: abs(hz - self.fps))
        name = "REFRESH_" + (f"{rate:g}".replace(".", "_") + "_HZ")
        sensor.refresh_rate = getattr(adafruit_mlx90640.RefreshRate, name)
        return sensor

    def _read(self, handle: Any) -> np.ndarray:
        values = [0.0] * (MLX90640_WIDTH * MLX90640_HEIGHT)
        for attempt in range(self.FRAME_RETRIES):
            try:
                handle.getFrame(values)
                break
            except ValueError:
                # The driver's "too many retries" on a torn I2C frame: try the next one before
                # reopening the bus.
                if attempt == self.FRAME_RETRIES - 1:
                    raise
        return np.asarray(values, dtype=np.float32).reshape(MLX90640_HEIGHT, MLX90640_WIDTH)


def load_recording(path: Path, resolution_k: float = 0.01) -> np.ndarray:
    """A recorded sequence as an (N, H, W) float32 C stack.

    .npz: `frames_ck` (Lepton centi-kelvin, the feverscreen recordings) or `frames_c`/`celsius`
    (C); .npy: one frame or a stack, float = C, integer = Lepton TLinear counts; a folder: its
    .npy frames in name order.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npy")
        if not files:
            raise ThermalSourceError(f"{path}: no .npy frames in the folder")
        return np.concatenate([load_recording(p, resolution_k) for p in files])
    if not path.is_file():
        raise ThermalSourceError(f"{path}: no such recording")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "frames_ck" in z.files:
                return lepton_to_celsius(z["frames_ck"], 0.01)
            for key in ("frames_c", "celsius"):
                if key in z.files:
                    return _as_stack(z[key].astype(np.float32))
            raise ThermalSourceError(f"{path}: no frames_ck, frames_c or celsius array")
    if path.suffix == ".npy":
        data = np.load(path, allow_pickle=False)
        if np.issubdtype(data.dtype, np.integer):
            data = lepton_to_celsius(data, resolution_k)
        return _as_stack(data.astype(np.float32))
    raise ThermalSourceError(f"{path}: replay reads .npz, .npy or a folder of .npy frames")


def _as_stack(data: np.ndarray) -> np.ndarray:
    return data[None] if data.ndim == 2 else data


class ReplaySource(ThermalSource):
    """Replays a recording at `fps`, optionally looping; for tests, demos and field debugging."""

    name = "thermal-replay"

    def __init__(
        self,
        path: str | Path,
        fps: float = 9.0,
        loop: bool = True,
        resolution_k: float = 0.01,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.path = Path(path)
        self.fps = fps
        self.loop = loop
        self.resolution_k = resolution_k

    def _open(self) -> Any:
        frames = load_recording(self.path, self.resolution_k)
        return {"frames": frames, "i": 0, "next": time.monotonic()}

    def _read(self, handle: dict) -> np.ndarray:
        frames = handle["frames"]
        if handle["i"] >= len(frames):
            if not self.loop:
                raise EndOfStream
            handle["i"] = 0
        delay = handle["next"] - time.monotonic()
        if delay > 0 and self._supervisor.wait(delay):
            raise EndOfStream
        handle["next"] = max(handle["next"], time.monotonic() - 1.0) + 1.0 / self.fps
        frame = frames[handle["i"]]
        handle["i"] += 1
        return frame


def source_from_config(cfg: ThermalConfig) -> ThermalSource:
    """The source named by `thermal.source`, not yet started."""
    common = dict(
        rotate_quarters=cfg.rotate,
        stall_timeout_s=cfg.stall_timeout_s,
        reconnect_initial_s=cfg.reconnect_initial_s,
        reconnect_max_s=cfg.reconnect_max_s,
    )
    if cfg.source == "lepton":
        src: ThermalSource = LeptonSource(cfg.device or "0", cfg.lepton_resolution_k, **common)
    elif cfg.source == "p2pro":
        src = P2ProSource(cfg.device or "0", **common)
    elif cfg.source == "mlx90640":
        src = Mlx90640Source(cfg.device, cfg.fps, **common)
    else:
        src = ReplaySource(cfg.device, cfg.fps, cfg.loop, cfg.lepton_resolution_k, **common)
    return src
