"""Helpers for the fault-injection tests: a kioskd whose log is read as it runs, database
checks, and a small mounted filesystem for disk-full runs."""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kiosk.classify import Classifier
from kiosk.counters import Counters
from kiosk.detect import FaceDetector
from kiosk.focus import FocusedDetector
from kiosk.gate import OffGate
from kiosk.motion import MotionDetector
from kiosk.pipeline import Pipeline
from kiosk.track import Tracker
from tests.kioskd import start_kioskd

COMMITTED = re.compile(r"visit ([0-9a-f-]{36}) committed")


class RunningKioskd:
    """kioskd as a subprocess; a thread collects its log lines as they come."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = start_kioskd(config, *args, env=env or {})
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text))

    def wait_for(self, pattern: str, n: int = 1, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(pattern) >= n:
                return True
            if self.proc.poll() is not None:
                self._reader.join(2)
                return self.count(pattern) >= n
            time.sleep(0.05)
        return False

    def committed(self) -> list[str]:
        return COMMITTED.findall(self.text)

    def finish(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit (it was signalled or runs to an end) and its log."""
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


def db_health(db: Path) -> dict:
    """integrity_check, foreign-key problems, visit ids and duplicated outbox entries."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        ids = [r[0] for r in conn.execute("SELECT id FROM visits")]
        dup_outbox = conn.execute(
            "SELECT visit_id FROM outbox GROUP BY visit_id HAVING count(*) > 1"
        ).fetchall()
    return {"integrity": integrity, "fk": fk, "ids": ids, "dup_outbox": dup_outbox}


@contextlib.contextmanager
def small_filesystem(folder: Path, size_mb: int = 8) -> Iterator[Path | None]:
    """A loop-mounted ext4 image of `size_mb`, or None where mounting is not permitted."""
    image, mnt = folder / "fs.img", folder / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    with image.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    made = subprocess.run(
        [mkfs, "-q", "-F", "-m", "0", "-O", "^has_journal", str(image)], capture_output=True
    )
    mounted = (
        made.returncode == 0
        and subprocess.run(
            ["mount", "-o", "loop", str(image), str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mnt if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem holding `folder` has no space left."""
    filler = folder / "filler"
    block = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    with filler.open("ab", buffering=0) as f:  # the last partial block
        for size in (4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                continue
    return filler


def real_pipeline(on_visit, counters: Counters | None = None) -> Pipeline:
    """The daemon's stages with their default settings and the shipped models."""
    return Pipeline(
        FocusedDetector(FaceDetector(1.15, 5, 60, 2.0), MotionDetector()),
        Tracker(),
        Classifier(),
        OffGate(),
        on_visit=on_visit,
        on_check=lambda c: None,
        counters=counters if counters is not None else Counters(),
        device_id="test",
    )
