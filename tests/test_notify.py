"""Notifier against a real AF_UNIX datagram socket, as systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from kiosk.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    yield path, sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


def test_ready_status_stopping(listener) -> None:
    path, sock = listener
    n = Notifier(str(path), "")
    assert n.enabled
    n.ready("fps 0.0, visits 0")
    n.status("fps 14.9, visits 3")
    n.stopping()
    n.close()
    assert drain(sock) == [
        "READY=1\nSTATUS=fps 0.0, visits 0",
        "STATUS=fps 14.9, visits 3",
        "STOPPING=1",
    ]


def test_watchdog_pings_at_half_the_interval_and_only_from_frames(listener) -> None:
    path, sock = listener
    n = Notifier(str(path), "2000000")  # WATCHDOG_USEC=2 s: ping at most once a second
    assert n.watchdog_interval_s == 1.0
    for t in (10.0, 10.2, 10.9, 11.0, 11.5, 12.1, 12.2):
        n.frame_processed(t)
    assert drain(sock) == ["WATCHDOG=1"] * 3  # at 10.0, 11.0, 12.1
    # No frames, no pings: nothing else sends WATCHDOG=1.
    n.status("stalled")
    assert drain(sock) == ["STATUS=stalled"]


def test_no_watchdog_without_watchdog_usec(listener) -> None:
    path, sock = listener
    for usec in ("", "0", "abc"):
        n = Notifier(str(path), usec)
        n.frame_processed(1.0)
        n.frame_processed(100.0)
    assert drain(sock) == []


def test_abstract_socket_address() -> None:
    name = f"kiosk-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.5)
    try:
        Notifier("@" + name, "").ready()
        assert drain(sock) == ["READY=1"]
    finally:
        sock.close()


def test_environment_and_disabled(monkeypatch: pytest.MonkeyPatch, listener) -> None:
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    n = Notifier()
    assert n.enabled and n.watchdog_interval_s == 15.0
    n.frame_processed(5.0)
    assert drain(sock) == ["WATCHDOG=1"]

    monkeypatch.delenv("NOTIFY_SOCKET")
    off = Notifier()
    assert not off.enabled
    off.ready()
    off.frame_processed(5.0)  # outside systemd: silently nothing


def test_watchdog_for_another_process_is_ignored(listener) -> None:
    """sd_watchdog_enabled(3): WATCHDOG_USEC applies only if WATCHDOG_PID is unset or ours."""
    path, sock = listener
    assert Notifier(str(path), "2000000", watchdog_pid=str(os.getpid())).watchdog_interval_s
    other = Notifier(str(path), "2000000", watchdog_pid=str(os.getpid() + 100000))
    assert other.watchdog_interval_s == 0.0
    other.frame_processed(1.0)
    assert drain(sock) == []


def test_a_vanished_socket_is_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    n = Notifier(str(path), "1000000")
    sock.close()
    path.unlink()  # e.g. systemd re-executed
    n.ready()
    n.frame_processed(1.0)
    n.stopping()
    n.close()
