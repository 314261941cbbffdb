"""Frames and the visible-camera sources (device, file, RTSP/HTTP URL) with reconnection.

A live source (and a file replayed in real time) is read on its own thread, driven by
`kiosk.supervise.Supervisor` like the thermal camera, and only the newest frame is kept, so
processing never falls behind the camera. When it stops delivering (read error, end of a stream,
nothing for `stall_timeout_s`) it is released and reopened with capped exponential backoff. A
stalled reader stuck inside OpenCV is abandoned rather than released from another thread, which
OpenCV does not support; it releases its capture when its read returns.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from kiosk.config import CameraConfig
from kiosk.lifecycle import Backoff, Part
from kiosk.logsetup import redact_url
from kiosk.supervise import EndOfStream, Outage, Supervisor

log = logging.getLogger(__name__)

# FFmpeg's own messages go straight to stderr and may quote a stream URL, password and all;
# only its fatal ones are let through (read when OpenCV first opens a stream).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")

# States logged as warnings: the camera is not delivering.
TROUBLE = ("reconnecting", "stalled")


@dataclass(frozen=True, slots=True)
class Frame:
    """One visible frame: BGR pixels, its capture time (monotonic and UTC wall clock)."""

    image: np.ndarray
    index: int
    t_mono: float
    t_wall: datetime


@dataclass(slots=True)
class _Capture:
    """An open capture on the reader thread; a replayed file is paced by `next_due`."""

    cap: cv2.VideoCapture
    fps: float  # a replayed file's own rate; 0 for a live source, read as fast as it delivers
    next_due: float


def demo_video_path() -> Path:
    return Path(str(resources.files("kiosk") / "demo" / "demo.mp4"))


def resolve_source(spec: str) -> str | int:
    """A device index, a /dev/videoN path, a file path or a URL, as OpenCV wants it."""
    if spec == "demo":
        return str(demo_video_path())
    if spec.isdigit():
        return int(spec)
    return spec


def is_live(spec: str | int) -> bool:
    """Cameras and network streams are live; files are replayed."""
    return isinstance(spec, int) or str(spec).startswith(
        ("/dev/", "rtsp://", "http://", "https://")
    )


def valid_image(image: object) -> bool:
    """A usable BGR frame: a non-empty uint8 HxWx3 array."""
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] >= 16
        and image.shape[1] >= 16
    )


class CameraSource(Part):
    """Frames from OpenCV's VideoCapture; `read()` returns the newest frame or None."""

    def __init__(
        self,
        spec: str,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        loop: bool = False,
        realtime: bool = True,
        stall_timeout_s: float = 5.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.spec = spec
        self.name = redact_url(spec)  # for logs: an RTSP URL's password stays out
        self.target = resolve_source(spec)
        self.live = is_live(self.target)
        self.width, self.height, self.fps = width, height, fps
        self.loop = loop
        # A file replayed as fast as it is consumed is read synchronously: no frame is dropped.
        self.threaded = self.live or realtime
        self.state = "closed"
        self.ended = False
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._file_fps = fps
        self._t0_mono, self._t0_wall = 0.0, datetime.now(UTC)
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._returned = -1
        self._closed = False
        self._supervisor: Supervisor[_Capture, np.ndarray] = Supervisor(
            "camera",
            open=self._connect,
            read=self._read_frame,
            publish=self._publish,
            close=lambda c: c.cap.release(),
            backoff=Backoff(reconnect_initial_s, reconnect_max_s),
            stall_timeout_s=stall_timeout_s,
            on_outage=self._outage,
            on_end=self._end,
            on_slow_open=self._slow_open,
        )

    @classmethod
    def from_config(cls, c: CameraConfig) -> CameraSource:
        return cls(
            c.source,
            width=c.width,
            height=c.height,
            fps=c.fps,
            loop=c.loop,
            realtime=c.realtime,
            stall_timeout_s=c.stall_timeout_s,
            reconnect_initial_s=c.reconnect_initial_s,
            reconnect_max_s=c.reconnect_max_s,
        )

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            self.state = state
            level = logging.WARNING if state in TROUBLE else logging.INFO
            log.log(level, "camera %s: %s%s", self.name, state, f" ({detail})" if detail else "")

    def _open(self) -> cv2.VideoCapture | None:
        target = self.target
        device = isinstance(target, int) or target.startswith("/dev/")
        if isinstance(target, int):
            cap = cv2.VideoCapture(target)
        elif device:
            cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            return None
        if device:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def start(self) -> CameraSource:
        """Start reading. A file must open and give a frame now (it will not get better by
        retrying); a camera or stream is retried in the background."""
        if self.state != "closed" or self._closed:
            return self
        if not self.live:
            self._check_file()
        self._set_state("connecting")
        if self.threaded:
            self._supervisor.start()
        else:
            self._cap = self._open()
            if self._cap is None:
                raise OSError(f"camera.source: {self.name}: OpenCV cannot open it")
            self._file_fps = self._cap.get(cv2.CAP_PROP_FPS) or self.fps
            self._t0_mono, self._t0_wall = time.monotonic(), datetime.now(UTC)
            self._set_state("streaming")
        return self

    def _check_file(self) -> None:
        if not Path(str(self.target)).is_file():
            raise FileNotFoundError(f"camera.source: {self.name}: no such video file")
        cap = self._open()
        if cap is None:
            raise OSError(f"camera.source: {self.name}: OpenCV cannot open it as a video")
        try:
            ok, image = cap.read()
        finally:
            cap.release()
        if not ok or not valid_image(image):
            raise OSError(f"camera.source: {self.name}: no frame can be decoded from it")

    @property
    def reconnects(self) -> int:
        return self._supervisor.reconnects

    # Supervisor callbacks (the threaded path) ------------------------------------------------

    def _missing_device(self) -> str:
        """Why a camera device node is not there, said in kiosk's words (OpenCV would print
        raw warnings on every retry instead)."""
        target = self.target
        path = f"/dev/video{target}" if isinstance(target, int) else target
        if path.startswith("/dev/") and not os.path.exists(path):
            return f"{path}: no such device (`kioskd cameras` lists the cameras here)"
        return ""

    def _connect(self) -> _Capture:
        if missing := self._missing_device():
            raise OSError(missing)
        cap = self._open()
        if cap is None:
            raise OSError("OpenCV cannot open it")
        fps = 0.0 if self.live else cap.get(cv2.CAP_PROP_FPS) or self.fps
        return _Capture(cap, fps, time.monotonic())

    def _read_frame(self, c: _Capture) -> np.ndarray:
        """The next frame; a replayed file waits for it at its own rate, and starts over when
        it loops."""
        if c.fps:
            self._supervisor.wait(c.next_due - time.monotonic())
            c.next_due += 1.0 / c.fps
        ok, image = c.cap.read()
        if not ok and self.loop and not self.live:
            c.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = c.cap.read()
        if ok:
            return image
        if self.live:
            raise OSError("stream stopped")
        raise EndOfStream

    def _publish(self, image: np.ndarray) -> None:
        now = time.monotonic()
        frame = Frame(image, self._index, now, datetime.now(UTC))
        self._index += 1
        with self._cond:
            self._latest = frame
            self._cond.notify_all()
        self._set_state("streaming")

    def _outage(self, outage: Outage) -> None:
        if outage.cause == "stalled":
            self._set_state("stalled", f"no frame for {outage.silent_s:.1f} s; reopening")
        else:
            why = "stream stopped"
            if outage.cause == "cannot open":
                why = f"cannot open: {outage.error}" if outage.error else "cannot open"
            self._set_state("reconnecting", f"{why}; retry in {outage.delay_s:.1f} s")

    def _end(self) -> None:
        self.ended = True
        self._set_state("ended", "end of file")
        with self._cond:
            self._cond.notify_all()

    def _slow_open(self, waited_s: float) -> None:
        """Opening a stream may block in OpenCV: say so while no frame has come yet."""
        if self.state == "connecting":
            log.warning(
                "camera %s: still connecting after %.0f s, no frame yet", self.name, waited_s
            )

    # Consumer side ---------------------------------------------------------------------------

    def read(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not yet returned, or None after `timeout` (or at the end)."""
        if not self.threaded:
            return self._read_sync()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest.index == self._returned:
                if self.ended:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._latest
            self._returned = frame.index
            return frame

    def _read_sync(self) -> Frame | None:
        """Frames stamped on the file's own timeline, so replay speed does not change visits."""
        while self._cap is not None:
            ok, image = self._cap.read()
            if ok:
                offset = self._index / self._file_fps
                frame = Frame(
                    image,
                    self._index,
                    self._t0_mono + offset,
                    self._t0_wall + timedelta(seconds=offset),
                )
                self._index += 1
                return frame
            if self.loop and self._index > 0:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            self._cap.release()
            self._cap = None
            self.ended = True
            self._set_state("ended", "end of file")
        return None

    def close(self) -> None:
        self._closed = True
        self._supervisor.close()
        with self._cond:
            self._cond.notify_all()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._set_state("closed")
