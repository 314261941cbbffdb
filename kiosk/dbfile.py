"""The SQLite file under a running kioskd: one writer, and the file it opened is the one it uses.

* `WriterLock`: an exclusive `flock` on `<db>.lock`, held for the daemon's life, so a second
  kioskd on the same file exits with a clear message instead of interleaving its visits and
  fighting the first over the broker. The kernel drops the lock when the process dies
  (SIGKILL, power loss), so a stale lock file never blocks a restart.
* `FileIdentity`: the device and inode the database was opened with. SQLite keeps writing into
  an open file after it is deleted or replaced on disk; comparing `stat()` before each write
  is how the store notices (a few microseconds).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path


class DatabaseInUse(Exception):
    """Another process holds the writer lock of this database."""


class WriterLock:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DatabaseInUse(
                f"{self.path.with_suffix('')}: in use by another kioskd (pid {holder}); "
                "one database takes one daemon"
            ) from None
        self._fd = fd
        try:  # who holds it, for the message above; the lock itself is the flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class FileIdentity:
    """Remembers which file a path named when the database was opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._id = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def changed(self) -> str | None:
        """None while the path still names the opened file, else what happened to it."""
        now = self._stat()
        if now == self._id:
            return None
        return "deleted" if now is None else "replaced by another file"

    def renew(self) -> None:
        self._id = self._stat()


def save_copy(conn: sqlite3.Connection, dest: Path) -> None:
    """Copy an open database (even one whose file was unlinked) to `dest` with SQLite's
    online backup, so the records in it survive the daemon moving on to a new file."""
    target = sqlite3.connect(dest)
    try:
        conn.backup(target)
    finally:
        target.close()
