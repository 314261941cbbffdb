"""The real kioskd talking to a socket that stands in for systemd's $NOTIFY_SOCKET.

A live MJPEG camera feeds the demo frames; then it stalls (the connection stays open, nothing
arrives) and later recovers. WATCHDOG=1 must follow the frames, so that systemd's WatchdogSec=
restarts a daemon whose pipeline is stuck, and only that.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.kioskd import start_kioskd, write_config
from tests.mjpeg import MjpegServer, demo_frames, free_port

WATCHDOG_USEC = 1_000_000  # kioskd pings every 0.5 s while frames flow


class NotifyListener:
    """Records (monotonic time, message) for every datagram, as systemd would receive them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, line: str, after: float = 0.0, before: float = float("inf")) -> list[float]:
        return [t for t, m in list(self.messages) if line in m.splitlines() and after <= t < before]

    def wait_for(self, line: str, timeout: float, after: float = 0.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = self.times(line, after)
            if hits:
                return hits[0]
            time.sleep(0.05)
        raise AssertionError(f"no {line!r} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path):
    lst = NotifyListener(tmp_path / "notify.sock")
    yield lst
    lst.close()


def test_ready_watchdog_follows_frames_and_stopping(tmp_path: Path, listener) -> None:
    server = MjpegServer(demo_frames(0, 30), free_port()).start()
    cfg = write_config(
        tmp_path,
        camera={
            "source": server.url,
            "stall_timeout_s": 1.0,
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 1.0,
        },
    )
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    proc = start_kioskd(cfg, env=env)
    try:
        ready = listener.wait_for("READY=1", 90)
        ready_msg = next(m for t, m in listener.messages if "READY=1" in m.splitlines())
        assert "STATUS=" in ready_msg  # systemctl status shows it from the start

        # Frames flow: pings at about half of WATCHDOG_USEC.
        first = listener.wait_for("WATCHDOG=1", 30, after=ready)
        time.sleep(3.0)
        flowing = listener.times("WATCHDOG=1", after=first, before=first + 3.0)
        assert len(flowing) >= 4, listener.messages
        gaps = [b - a for a, b in zip(flowing, flowing[1:], strict=False)]
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps  # systemd would never fire

        # The camera stalls: the connection stays open but no frame arrives.
        server.paused.set()
        stalled = time.monotonic()
        time.sleep(4.0)
        late = listener.times("WATCHDOG=1", after=stalled + 1.0)
        assert late == [], f"WATCHDOG=1 while no frames arrived: {late}"
        assert proc.poll() is None, "kioskd exited instead of waiting for the camera"

        # It recovers (kioskd reopens the stream): the pings come back.
        server.paused.clear()
        listener.wait_for("WATCHDOG=1", 30, after=time.monotonic())

        sigterm = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
        listener.wait_for("STOPPING=1", 5, after=sigterm)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.stop()
    assert proc.returncode == 0, out
    assert listener.times("READY=1") == [ready]  # exactly once
    # The reopen is counted (the summary, like kiosk_source_reconnects, reads the camera's).
    assert re.search(r"summary: .* camera_reconnects=[1-9]", out), out[-2000:]


def test_status_counts_todays_visits_across_restarts(tmp_path: Path, listener) -> None:
    """STATUS= shows today's visits from the database, not just this process's count."""
    from tests.kioskd import run_kioskd, stored_visits

    cfg = write_config(tmp_path, camera={"source": "demo", "realtime": False})
    first = run_kioskd(cfg)
    assert first.returncode == 0, first.stderr[-2000:]
    stored = len(stored_visits(tmp_path))
    assert stored >= 2

    env = {"NOTIFY_SOCKET": str(listener.path)}
    proc = start_kioskd(cfg, "--max-frames", "1", env=env)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    listener.wait_for("READY=1", 5)
    ready = next(m for _, m in listener.messages if "READY=1" in m.splitlines())
    assert f"visits today {stored}," in ready, ready
