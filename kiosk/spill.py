"""Records the database would not take before exit, kept in a file until the next start.

The recorder holds unwritable records in memory (kiosk/recorder.py); at exit what is still
queued is written here as JSON lines (the same fields the database holds, no face data), and
the next start queues them again before anything else. The file is replaced atomically and
removed once everything in it is stored, so a record is never lost between the two; one
stored twice is recognised by its id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from kiosk.visit import Check, Visit

log = logging.getLogger("kioskd")

_KINDS: dict[str, type[Visit] | type[Check]] = {"visit": Visit, "check": Check}
_TIMES = ("started_at", "ended_at", "at")


def save(path: Path, records: Iterable[Visit | Check]) -> int:
    """Write `records` to `path` (replacing it); returns how many."""
    lines = []
    for record in records:
        data = dataclasses.asdict(record)
        for key in _TIMES:
            if key in data:
                data[key] = data[key].isoformat()
        lines.append(json.dumps({"kind": type(record).__name__.lower(), **data}))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(lines)


def load(path: Path) -> list[Visit | Check]:
    """The records saved in `path`; a line that cannot be read is logged and skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records: list[Visit | Check] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            cls = _KINDS[data.pop("kind")]
            for key in _TIMES:
                if key in data:
                    data[key] = datetime.fromisoformat(data[key])
            records.append(cls(**data))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s line %d: not a saved record (%s); skipped", path, n, exc)
    return records
