"""Frames and the visible-camera sources (device, file, RTSP/HTTP URL) with reconnection.

A live source runs a reader thread that keeps only the newest frame, so processing never falls
behind the camera. When it stops delivering (read error, end of a stream, nothing for
`stall_timeout_s`) it is released and reopened with capped exponential backoff. A stalled
reader stuck inside OpenCV is abandoned rather than released from another thread, which OpenCV
does not support; it exits by itself when its read returns.
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
        self.stall_timeout_s = stall_timeout_s
        self.backoff = Backoff(reconnect_initial_s, reconnect_max_s)
        self.reconnects = 0
        self.state = "closed"
        self.ended = False
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._file_fps = fps
        self._t0_mono, self._t0_wall = 0.0, datetime.now(UTC)
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._returned = -1
        self._last_frame_mono = time.monotonic()
        self._next_connect_warn_s = stall_timeout_s
        self._generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        if self.state != "closed" or self._stop.is_set():
            return self
        if not self.live:
            self._check_file()
        self._set_state("connecting")
        if self.threaded:
            self._spawn_reader()
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

    def _spawn_reader(self) -> None:
        self._generation += 1
        self._last_frame_mono = time.monotonic()
        self._thread = threading.Thread(
            target=self._reader, args=(self._generation,), name="camera-reader", daemon=True
        )
        self._thread.start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _reader(self, generation: int) -> None:
        cap: cv2.VideoCapture | None = None
        file_fps = 0.0
        next_due = time.monotonic()
        try:
            while self._current(generation):
                if cap is None:
                    cap = self._open()
                    if cap is None:
                        delay = self.backoff.delay()
                        self._set_state("reconnecting", f"cannot open; retry in {delay:.1f} s")
                        self._stop.wait(delay)
                        continue
                    file_fps = 0.0 if self.live else cap.get(cv2.CAP_PROP_FPS) or self.fps
                    next_due = time.monotonic()
                ok, image = cap.read()
                if not self._current(generation):
                    break
                if not ok:
                    cap.release()
                    cap = None
                    if not self.live and not self.loop:
                        self.ended = True
                        self._set_state("ended", "end of file")
                        with self._cond:
                            self._cond.notify_all()
                        return
                    if self.live:
                        self.reconnects += 1
                        delay = self.backoff.delay()
                        self._set_state("reconnecting", f"stream stopped; retry in {delay:.1f} s")
                        self._stop.wait(delay)
                    continue
                self.backoff.reset()
                self._publish(image)
                self._set_state("streaming")
                if file_fps:
                    next_due += 1.0 / file_fps
                    self._stop.wait(max(0.0, next_due - time.monotonic()))
        finally:
            if cap is not None:
                cap.release()

    def _publish(self, image: np.ndarray) -> None:
        now = time.monotonic()
        frame = Frame(image, self._index, now, datetime.now(UTC))
        self._index += 1
        with self._cond:
            self._latest = frame
            self._last_frame_mono = now
            self._cond.notify_all()

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
                    self._check_stall()
                    return None
                self._cond.wait(remaining)
            frame = self._latest
            self._returned = frame.index
            return frame

    def _check_stall(self) -> None:
        """Called with the lock held: restart a reader that has delivered nothing for too long,
        and say so when opening a camera or stream takes that long (OpenCV may block in it)."""
        silent = time.monotonic() - self._last_frame_mono
        if self.state == "streaming" and silent > self.stall_timeout_s:
            self.reconnects += 1
            self._set_state("stalled", f"no frame for {silent:.1f} s; reopening")
            self._spawn_reader()
        elif self.state == "connecting" and silent > self._next_connect_warn_s:
            self._next_connect_warn_s = 2 * silent
            log.warning("camera %s: still connecting after %.0f s, no frame yet", self.name, silent)

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
        self._stop.set()
        self._generation += 1
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._set_state("closed")
