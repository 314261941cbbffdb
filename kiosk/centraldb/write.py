"""One batch of received messages into the central tables, in one transaction.

Visits and checks are inserted with ``ON CONFLICT (id) DO NOTHING``: a message the broker
delivers again (the collector crashed after the commit, before its acknowledgement) changes
nothing. The device registry is upserted once per device per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from kiosk.centraldb.schema import checks, dead_letters, devices, visits
from kiosk.visit import Check, Visit
from kiosk.wire import Event


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that broke the contract, kept as it came."""

    topic: str
    kind: str
    error: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    events: Sequence[Event]
    dead: Sequence[DeadLetter]


def visit_row(v: Visit, timezone: str) -> dict[str, object]:
    return {
        "id": v.id,
        "device_id": v.device_id,
        "started_at": v.started_at,
        "ended_at": v.ended_at,
        "age_group": v.age_group,
        "age_confidence": v.age_confidence,
        "gender": v.gender,
        "gender_confidence": v.gender_confidence,
        "temperature_c": v.temperature_c,
        "temperature_status": v.temperature_status,
        "frames": v.frames,
        "model_version": v.model_version,
        "clock_synced": v.clock_synced,
        "timezone": timezone,
    }


def check_row(c: Check, timezone: str) -> dict[str, object]:
    return {
        "id": c.id,
        "device_id": c.device_id,
        "at": c.at,
        "status": c.status,
        "temperature_c": c.temperature_c,
        "clock_synced": c.clock_synced,
        "timezone": timezone,
    }


def event_time(e: Event) -> datetime:
    """When it happened on the kiosk: a visit's end, a check's time."""
    r = e.record
    return r.ended_at if isinstance(r, Visit) else r.at


def device_rows(events: Sequence[Event], now: datetime) -> list[dict[str, object]]:
    """One registry row per device in the batch: its newest event's versions and zone."""
    newest: dict[str, Event] = {}
    model: dict[str, str] = {}
    for e in events:
        dev = e.record.device_id
        if dev not in newest or event_time(e) >= event_time(newest[dev]):
            newest[dev] = e
        if isinstance(e.record, Visit):
            model[dev] = e.record.model_version
    return [
        {
            "device_id": dev,
            "first_seen": now,
            "last_seen": now,
            "last_event_at": event_time(e),
            "model_version": model.get(dev),
            "software_version": e.sender.software_version,
            "timezone": e.sender.timezone,
        }
        for dev, e in sorted(newest.items())  # one lock order, so two writers never deadlock
    ]


def write_batch(conn: Connection, batch: Batch, now: datetime) -> None:
    """Insert a batch's visits, checks, dead letters and devices (no commit here)."""
    vs = [
        visit_row(e.record, e.sender.timezone) for e in batch.events if isinstance(e.record, Visit)
    ]
    cs = [
        check_row(e.record, e.sender.timezone) for e in batch.events if isinstance(e.record, Check)
    ]
    if vs:
        conn.execute(insert(visits).on_conflict_do_nothing(index_elements=["id"]), vs)
    if cs:
        conn.execute(insert(checks).on_conflict_do_nothing(index_elements=["id"]), cs)
    if batch.dead:
        rows = [{"topic": d.topic, "kind": d.kind, "error": d.error, "payload": d.payload}
                for d in batch.dead]  # fmt: skip
        conn.execute(dead_letters.insert(), rows)
    if batch.events:
        up = insert(devices)
        x = up.excluded
        conn.execute(
            up.on_conflict_do_update(
                index_elements=["device_id"],
                set_={
                    "last_seen": x.last_seen,
                    "last_event_at": func.greatest(devices.c.last_event_at, x.last_event_at),
                    "model_version": func.coalesce(x.model_version, devices.c.model_version),
                    "software_version": x.software_version,
                    "timezone": x.timezone,
                },
            ),
            device_rows(batch.events, now),
        )
