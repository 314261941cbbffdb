"""sd_notify over $NOTIFY_SOCKET, without libsystemd.

WATCHDOG=1 is sent only from the frame loop, so a pipeline that stops processing frames stops
the pings and systemd restarts the service.
"""

from __future__ import annotations

import os
import socket
import time

from kiosk.lifecycle import Part


class Notifier(Part):
    def __init__(
        self,
        socket_path: str | None = None,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        env = os.environ
        path = socket_path if socket_path is not None else env.get("NOTIFY_SOCKET", "")
        usec = watchdog_usec if watchdog_usec is not None else env.get("WATCHDOG_USEC", "")
        pid = watchdog_pid if watchdog_pid is not None else env.get("WATCHDOG_PID", "")
        if pid and pid != str(os.getpid()):
            usec = ""  # meant for another process (sd_watchdog_enabled(3))
        self._addr = "\0" + path[1:] if path.startswith("@") else path
        self._sock: socket.socket | None = None
        if self._addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # Ping at half the watchdog interval, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.0
        self._last_ping = float("-inf")  # the first processed frame pings at once

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, message: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(message.encode(), self._addr)
        except OSError:
            pass  # systemd not listening (e.g. restarted); nothing to do but try again later

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def frame_processed(self, now: float | None = None) -> None:
        if not self.watchdog_interval_s:
            return
        now = time.monotonic() if now is None else now
        if now - self._last_ping >= self.watchdog_interval_s:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def reloading(self) -> None:
        """Before SIGHUP's restart in place; the new process sends READY=1 (sd_notify(3))."""
        self.send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
