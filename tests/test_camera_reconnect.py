"""A camera that disappears and comes back is reopened, and visits resume."""

from __future__ import annotations

import time

from kiosk.frames import CameraSource
from tests.kioskd import start_kioskd, stored_visits, write_config
from tests.mjpeg import MjpegServer, demo_frames, free_port


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_source_reconnects_after_the_stream_stops():
    frames = demo_frames(0, 10)
    port = free_port()
    server = MjpegServer(frames, port).start()
    src = CameraSource(server.url, reconnect_initial_s=0.2, reconnect_max_s=1.0).start()
    try:
        assert wait_for(lambda: src.read(0.2) is not None and src.state == "streaming", 15)
        server.stop()
        assert wait_for(lambda: src.read(0.2) is None and src.state == "reconnecting", 10)
        time.sleep(2.0)
        server = MjpegServer(frames, port).start()
        assert wait_for(lambda: src.read(0.2) is not None and src.state == "streaming", 15)
        assert src.reconnects >= 1
    finally:
        src.close()
        server.stop()


def test_stalled_stream_is_reopened():
    """A server that keeps the connection open but sends nothing is a stall, not an end."""
    frames = demo_frames(0, 5)
    port = free_port()
    server = MjpegServer(frames, port, fps=15).start()
    src = CameraSource(server.url, stall_timeout_s=1.0, reconnect_initial_s=0.2).start()
    try:
        assert wait_for(lambda: src.read(0.2) is not None, 15)
        server.fps = 0.2  # one frame every 5 s: the reader sits in a blocking read
        assert wait_for(lambda: src.read(0.2) is None and src.state != "streaming", 10)
        server.fps = 15
        assert wait_for(lambda: src.read(0.2) is not None and src.state == "streaming", 20)
        assert src.reconnects >= 1
    finally:
        src.close()
        server.stop()


def test_visits_resume_after_the_camera_comes_back(tmp_path):
    # The first visitor of the demo (frames 0..110), served as a live MJPEG camera.
    frames = demo_frames(0, 110)
    port = free_port()
    server = MjpegServer(frames, port).start()
    cfg = write_config(
        tmp_path,
        camera={"source": server.url, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
    )
    proc = start_kioskd(cfg)
    try:
        assert wait_for(lambda: len(stored_visits(tmp_path)) >= 1, 60), "no visit before outage"
        server.stop()
        time.sleep(4.0)
        before = len(stored_visits(tmp_path))
        server = MjpegServer(frames, port).start()
        assert wait_for(lambda: len(stored_visits(tmp_path)) > before, 60), "no visit after"
        assert proc.poll() is None, "kioskd exited instead of reconnecting"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
        server.stop()
    assert proc.returncode == 0, out
    assert "reconnecting" in out
