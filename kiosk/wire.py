"""The MQTT payload contract: topics, and the JSON of visits, checks and statistics, built and
parsed back. No paho here, so the publisher, ``kiosk-watch`` and a central collector share one
definition and ``docs/mqtt.md`` is tested against it.

Parsing is strict about every key it knows (type, range, label set) and ignores keys it does
not know, so a newer kiosk's additions do not stop an older consumer. Any problem is a
:class:`PayloadError` that names the key.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from kiosk.config import DEVICE_ID
from kiosk.labels import (
    AGE_GROUPS,
    CHECK_STATUSES,
    GENDERS,
    VISIT_STATUSES,
    CheckStatus,
    VisitStatus,
)
from kiosk.visit import Check, Visit

# Topic levels under <prefix>/<device_id>/.
KINDS: tuple[str, ...] = ("status", "visit", "check", "stats")
STATUS_ONLINE, STATUS_OFFLINE = "online", "offline"
# The states a camera source reports (kiosk/frames.py), in the stats and in Home Assistant.
CAMERA_STATES: tuple[str, ...] = (
    "closed", "connecting", "streaming", "reconnecting", "stalled", "ended",
)  # fmt: skip
# A visit or check is a few hundred bytes and stats under 1 kB; anything far larger is hostile.
MAX_PAYLOAD_BYTES = 16_384
_MAX_TEXT = 64  # ids, device ids, model versions: the store's column width
_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")
# The one time format sent: extended ISO 8601 in UTC, so that every reader (Python here,
# PostgreSQL reading the same JSON in kiosk-collect) takes it for the same instant.
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", re.ASCII)


class PayloadError(ValueError):
    """A payload that does not follow the contract, named by its key."""


def topics(prefix: str, device_id: str) -> dict[str, str]:
    """The topic of each kind for one device."""
    return {kind: f"{prefix}/{device_id}/{kind}" for kind in KINDS}


def split_topic(topic: str, prefix: str) -> tuple[str, str] | None:
    """(device_id, kind) of a kiosk topic under `prefix`, or None for any other topic."""
    if not topic.startswith(f"{prefix}/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) != 2 or parts[1] not in KINDS or not DEVICE_ID.fullmatch(parts[0]):
        return None
    return parts[0], parts[1]


def safe_id(text: str) -> str:
    """An id for Home Assistant: only ``[a-zA-Z0-9_-]``."""
    return _ID_BAD.sub("_", text)


def iso_utc(t: datetime | None, timespec: str = "milliseconds") -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix, in milliseconds unless told otherwise."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _exact(t: datetime) -> str | None:
    """A stored record's time as stored (microseconds): a central copy equals the kiosk's."""
    return iso_utc(t, "microseconds")


def encode(payload: dict[str, Any]) -> str:
    """Compact JSON, as sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def _temperature(t: float | None) -> float | None:
    return None if t is None else float(t)


@dataclass(frozen=True, slots=True)
class Sender:
    """What every visit and check carries about the kiosk that sent it: its time zone (so a
    central report renders each device's local day) and its software version."""

    timezone: str
    software_version: str


@dataclass(frozen=True, slots=True)
class Event:
    """A visit or check message parsed back: the stored record and who sent it."""

    record: Visit | Check
    sender: Sender


def _sender_fields(sender: Sender) -> dict[str, str]:
    return {"timezone": sender.timezone, "software_version": sender.software_version}


def visit_payload(visit: Visit, publish_temperature: bool, sender: Sender) -> dict[str, Any]:
    """The JSON object sent on ``<prefix>/<device_id>/visit``: the stored record, field for
    field (temperature only when configured), and its sender."""
    p: dict[str, Any] = {
        "id": visit.id,
        "device_id": visit.device_id,
        "started_at": _exact(visit.started_at),
        "ended_at": _exact(visit.ended_at),
        "age_group": visit.age_group,
        "age_confidence": float(visit.age_confidence),
        "gender": visit.gender,
        "gender_confidence": float(visit.gender_confidence),
        "temperature_status": visit.temperature_status,
        "frames": visit.frames,
        "model_version": visit.model_version,
        **_sender_fields(sender),
    }
    if not visit.clock_synced:
        # Stamped before the wall clock was trusted (kiosk/clock.py): the times may be off.
        p["clock_synced"] = False
    if publish_temperature:
        p["temperature_c"] = _temperature(visit.temperature_c)
    return p


def check_payload(check: Check, publish_temperature: bool, sender: Sender) -> dict[str, Any]:
    """The JSON object sent on ``<prefix>/<device_id>/check``: no face data, ever."""
    p: dict[str, Any] = {
        "id": check.id,
        "device_id": check.device_id,
        "at": _exact(check.at),
        "status": check.status,
        **_sender_fields(sender),
    }
    if not check.clock_synced:
        p["clock_synced"] = False
    if publish_temperature:
        p["temperature_c"] = _temperature(check.temperature_c)
    return p


@dataclass(frozen=True, slots=True)
class LastVisit:
    at: datetime
    age_group: str
    gender: str


@dataclass(frozen=True, slots=True)
class Stats:
    """Today's counts of one device (its local day) and its liveness numbers."""

    device_id: str
    date: date
    timezone: str
    visitors: int
    gender: dict[str, int]
    age_groups: dict[str, int]
    failed_checks: int
    unmeasured_checks: int
    last_visit: LastVisit | None
    fps: float | None
    uptime_s: int | None
    updated_at: datetime
    outbox_pending: int | None = None
    camera: str | None = None  # the camera source's state: streaming, reconnecting, ...
    clock_synced: bool | None = None  # whether the wall clock is trusted yet


def stats_payload(stats: Stats) -> dict[str, Any]:
    """The retained JSON object sent on ``<prefix>/<device_id>/stats``."""
    last = stats.last_visit
    p: dict[str, Any] = {
        "device_id": stats.device_id,
        "date": stats.date.isoformat(),
        "timezone": stats.timezone,
        "visitors": stats.visitors,
        "gender": dict(stats.gender),
        "age_groups": dict(stats.age_groups),
        "failed_checks": stats.failed_checks,
        "unmeasured_checks": stats.unmeasured_checks,
        "last_visit": (
            {"at": iso_utc(last.at), "age_group": last.age_group, "gender": last.gender}
            if last
            else None
        ),
        "fps": None if stats.fps is None else round(float(stats.fps), 2),
        "uptime_s": stats.uptime_s,
        "updated_at": iso_utc(stats.updated_at),
    }
    if stats.outbox_pending is not None:
        p["outbox_pending"] = stats.outbox_pending
    if stats.camera is not None:
        p["camera"] = stats.camera
    if stats.clock_synced is not None:
        p["clock_synced"] = stats.clock_synced
    return p


# ---- parsing ------------------------------------------------------------------------------


class _Fields:
    """Typed access to one decoded JSON object; every failure names the key."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def fail(self, key: str, why: str) -> PayloadError:
        return PayloadError(f"{self.where}.{key}: {why}")

    def get(self, key: str, required: bool = True) -> Any:
        if key not in self.data:
            if required:
                raise self.fail(key, "missing")
            return None
        return self.data[key]

    def text(
        self, key: str, choices: tuple[str, ...] | None = None, pattern: re.Pattern | None = None
    ) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
            raise self.fail(key, f"must be a string of 1 to {_MAX_TEXT} characters")
        if not value.isprintable():
            raise self.fail(key, "has control characters")
        if choices is not None and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value[:40]!r}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, f"has characters outside {pattern.pattern}")
        return value

    def number(self, key: str, lo: float, hi: float) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {type(value).__name__}")
        if not (math.isfinite(value) and lo <= value <= hi):
            raise self.fail(key, f"must be a number in {lo:g}..{hi:g}")
        return float(value)

    def count(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(key, "must be a whole number >= 0")
        return value

    def optional(self, read, key: str, *args: Any) -> Any:
        """`read(key, ...)` when the key is there and not null, else None."""
        return None if self.data.get(key) is None else read(key, *args)

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def time(self, key: str) -> datetime:
        value = self.get(key)
        if not isinstance(value, str) or not _UTC_TIME.fullmatch(value):
            raise self.fail(key, "must be an ISO 8601 UTC time YYYY-MM-DDTHH:MM:SS[.ffffff]Z")
        try:
            t = datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            raise self.fail(key, f"is not an ISO 8601 time: {value!r}") from None
        return t.astimezone(UTC)

    def zone(self, key: str) -> str:
        value = self.text(key)
        try:
            ZoneInfo(value)
        except (ValueError, OSError, KeyError):
            raise self.fail(key, f"unknown time zone {value!r}") from None
        return value

    def temperature(self) -> float | None:
        return self.optional(self.number, "temperature_c", -50.0, 150.0)

    def tally(self, key: str, names: tuple[str, ...]) -> dict[str, int]:
        value = self.get(key)
        if not isinstance(value, dict) or set(value) != set(names):
            raise self.fail(key, f"must be an object with exactly the keys {', '.join(names)}")
        sub = _Fields(value, f"{self.where}.{key}")
        return {name: sub.count(name) for name in names}


def decode(payload: bytes | str, where: str) -> _Fields:
    """The JSON object of a payload, bounded in size and depth."""
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{where}: longer than {MAX_PAYLOAD_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PayloadError(f"{where}: not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"{where}: not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"{where}: must be a JSON object, got {type(data).__name__}")
    return _Fields(data, where)


def _sender(f: _Fields) -> Sender:
    return Sender(timezone=f.zone("timezone"), software_version=f.text("software_version"))


def _visit(f: _Fields) -> Visit:
    started, ended = f.time("started_at"), f.time("ended_at")
    if ended < started:
        raise f.fail("ended_at", "is before started_at")
    return Visit(
        id=f.text("id"),
        device_id=f.text("device_id", pattern=DEVICE_ID),
        started_at=started,
        ended_at=ended,
        age_group=f.text("age_group", AGE_GROUPS),
        age_confidence=f.number("age_confidence", 0.0, 1.0),
        gender=f.text("gender", GENDERS),
        gender_confidence=f.number("gender_confidence", 0.0, 1.0),
        temperature_c=f.temperature(),
        temperature_status=cast(VisitStatus, f.text("temperature_status", VISIT_STATUSES)),
        frames=f.count("frames"),
        model_version=f.text("model_version"),
        clock_synced=f.flag("clock_synced", True),
    )


def _check(f: _Fields) -> Check:
    return Check(
        id=f.text("id"),
        device_id=f.text("device_id", pattern=DEVICE_ID),
        at=f.time("at"),
        status=cast(CheckStatus, f.text("status", CHECK_STATUSES)),
        temperature_c=f.temperature(),
        clock_synced=f.flag("clock_synced", True),
    )


def parse_event(kind: str, payload: bytes | str) -> Event:
    """A ``visit`` or ``check`` message back as its record and sender; a PayloadError names
    the first key that breaks the contract."""
    f = decode(payload, kind)
    record: Visit | Check = _visit(f) if kind == "visit" else _check(f)
    return Event(record, _sender(f))


def parse_visit(payload: bytes | str) -> Visit:
    """A visit payload back as the stored record."""
    record = parse_event("visit", payload).record
    assert isinstance(record, Visit)
    return record


def parse_check(payload: bytes | str) -> Check:
    """A check payload back as the stored record."""
    record = parse_event("check", payload).record
    assert isinstance(record, Check)
    return record


def parse_stats(payload: bytes | str) -> Stats:
    f = decode(payload, "stats")
    day = f.get("date")
    try:
        parsed_day = date.fromisoformat(day) if isinstance(day, str) and len(day) == 10 else None
    except ValueError:
        parsed_day = None
    if parsed_day is None:
        raise f.fail("date", "must be a YYYY-MM-DD date")
    last_raw = f.get("last_visit")
    last = None
    if last_raw is not None:
        if not isinstance(last_raw, dict):
            raise f.fail("last_visit", "must be an object or null")
        lf = _Fields(last_raw, "stats.last_visit")
        last = LastVisit(
            lf.time("at"), lf.text("age_group", AGE_GROUPS), lf.text("gender", GENDERS)
        )
    return Stats(
        device_id=f.text("device_id", pattern=DEVICE_ID),
        date=parsed_day,
        timezone=f.zone("timezone"),
        visitors=f.count("visitors"),
        gender=f.tally("gender", GENDERS),
        age_groups=f.tally("age_groups", AGE_GROUPS),
        failed_checks=f.count("failed_checks"),
        unmeasured_checks=f.count("unmeasured_checks"),
        last_visit=last,
        fps=f.optional(f.number, "fps", 0.0, 1e6),
        uptime_s=f.optional(f.count, "uptime_s"),
        updated_at=f.time("updated_at"),
        outbox_pending=f.optional(f.count, "outbox_pending"),
        camera=f.optional(f.text, "camera", CAMERA_STATES),
        clock_synced=f.optional(f.flag, "clock_synced", True),
    )
