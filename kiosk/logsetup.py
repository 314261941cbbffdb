"""kioskd's log lines: levels that journald understands, and no secret in any of them.

Under systemd (`$JOURNAL_STREAM` names stderr) every line starts with its syslog priority,
`<3>` for an error ... `<7>` for debug (sd-daemon(3)), so `journalctl -p warning` finds them;
journald adds the time, so the line leaves it out. Elsewhere a line carries its time.

Secrets: a URL's password (`rtsp://user:pw@cam`, `postgresql://kiosk:pw@db`) is shown as `***`
wherever a URL appears in a message, and every secret the daemon holds (the MQTT password,
the passwords of configured URLs) is replaced in the final text of every line, tracebacks
included, whatever logger wrote it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from urllib.parse import unquote

# scheme://user:password@host -> scheme://user:***@host (the password may hold anything but @/).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)(?P<pw>[^@/\s]+)@")
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def redact_url(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(lambda m: m["head"] + "***@", text)


def add_secret(secret: str | None) -> None:
    """Never let `secret` reach a log line from now on (empty and 1-2 character values are
    not secrets worth the false matches)."""
    if secret and len(secret) >= 3:
        with _secrets_lock:
            _secrets.update({secret, unquote(secret)})


def add_url_secret(url: str) -> None:
    """Register the password inside a URL, if it has one."""
    for m in _URL_PASSWORD.finditer(url):
        add_secret(m["pw"])


def scrub(text: str) -> str:
    text = redact_url(text)
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def under_journald(stream=None) -> bool:
    """True when `stream` (stderr) is the journal stream systemd gave this process."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class KioskFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(fmt if journal else "%(asctime)s " + fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = scrub(super().format(record))
        if not self.journal:
            return text
        prefix = f"<{_PRIORITY.get(record.levelno, 2 if record.levelno > 40 else 6)}>"
        # journald reads each line apart: a traceback's lines keep the record's priority.
        return "\n".join(prefix + line for line in text.split("\n"))


def setup_logging(level: str) -> None:
    """One line per event on stderr (journald under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KioskFormatter(under_journald(sys.stderr)))
    logging.basicConfig(level=level, handlers=[handler], force=True)
