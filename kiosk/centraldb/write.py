"""One batch of received messages into the central tables, in one transaction.

Visits and checks are inserted with ``ON CONFLICT (id) DO NOTHING``: a message the broker
delivers again (the collector crashed after the commit, before its acknowledgement) changes
nothing. The device registry is upserted at most once per device per batch, and only when
something changed or a minute passed (Registry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from kiosk.centraldb.schema import checks, dead_letters, devices, visits
from kiosk.visit import Check, Visit
from kiosk.wire import Event, check_payload, encode, visit_payload


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that broke the contract, kept as it came."""

    topic: str
    kind: str
    error: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """Parsed events and dead letters; `payloads[i]` is the JSON that `events[i]` was parsed
    from, when it came off the wire (else it is encoded again from the record)."""

    events: Sequence[Event]
    dead: Sequence[DeadLetter]
    payloads: Sequence[bytes] = ()


def _from_json(table: Table, tail: str) -> str:
    """INSERT of a JSON array of contract payloads (kiosk/wire.py) into `table`: PostgreSQL
    reads each column from the key of the same name. jsonb keeps the last of a repeated key,
    as Python's json does, so the row is the payload the collector validated."""
    pg = postgresql.dialect()
    cols = [c for c in table.columns if c.server_default is None]
    fields = ", ".join(f"{c.name} {c.type.compile(dialect=pg)}" for c in cols)
    values = ", ".join(
        "coalesce(x.clock_synced, true)" if c.name == "clock_synced" else f"x.{c.name}"
        for c in cols
    )
    return (
        f"INSERT INTO {table.name} ({', '.join(c.name for c in cols)}) SELECT {values} "
        f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({fields}) {tail}"
    )


_IDEMPOTENT = "ON CONFLICT (id) DO NOTHING"
_INSERT_JSON = {Visit: text(_from_json(visits, _IDEMPOTENT)),
                Check: text(_from_json(checks, _IDEMPOTENT))}  # fmt: skip


def _json_rows(batch: Batch, kind: type) -> str | None:
    """The batch's payloads of one kind as one JSON array, or None when it has none."""
    raw = batch.payloads or [_encoded(e) for e in batch.events]
    picked = [p for e, p in zip(batch.events, raw, strict=True) if isinstance(e.record, kind)]
    return (b"[" + b",".join(picked) + b"]").decode() if picked else None


def _encoded(e: Event) -> bytes:
    r = e.record
    if isinstance(r, Visit):
        return encode(visit_payload(r, True, e.sender)).encode()
    return encode(check_payload(r, True, e.sender)).encode()


def event_time(e: Event) -> datetime:
    """When it happened on the kiosk: a visit's end, a check's time."""
    r = e.record
    return r.ended_at if isinstance(r, Visit) else r.at


def device_rows(events: Sequence[Event], now: datetime) -> list[dict[str, Any]]:
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


def write_batch(conn: Connection, batch: Batch, now: datetime, registry: Registry) -> None:
    """Insert a batch's visits, checks and dead letters, and the devices `registry` says are
    due (no commit here: the caller commits, then tells the registry). Visits and checks go
    as one JSON array each: a single statement per batch and table, with no per-row work in
    Python (about half the time of array parameters, tools/bench_collect.py)."""
    for kind, insert in _INSERT_JSON.items():
        rows = _json_rows(batch, kind)
        if rows is not None:
            conn.execute(insert, {"rows": rows})
    if batch.dead:
        dead = [{"topic": d.topic, "kind": d.kind, "error": d.error, "payload": d.payload}
                for d in batch.dead]  # fmt: skip
        conn.execute(dead_letters.insert(), dead)
    insert_rows(conn, devices, registry.due(device_rows(batch.events, now)), _DEVICE_UPSERT)


_DEVICE_UPSERT = """ON CONFLICT (device_id) DO UPDATE SET
    last_seen = excluded.last_seen,
    last_event_at = greatest(devices.last_event_at, excluded.last_event_at),
    model_version = coalesce(excluded.model_version, devices.model_version),
    software_version = excluded.software_version,
    timezone = excluded.timezone"""


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], tail: str) -> None:
    """One INSERT ... SELECT FROM unnest(one array per column) for all rows: one statement,
    not one per row."""
    if not rows:
        return
    cols = list(rows[0])
    types = {c.name: c.type.compile(dialect=conn.dialect) for c in table.columns}
    arrays = ", ".join(f"CAST(:{c} AS {types[c]}[])" for c in cols)
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT * FROM unnest({arrays}) {tail}"
    conn.execute(text(sql), {c: [r[c] for r in rows] for c in cols})


class Registry:
    """Which device rows a batch must write: a new device, a changed version or zone, or one
    not written for REFRESH_S (so ``last_seen`` is at most that old). Without it, 1,000
    devices in every batch would rewrite 1,000 registry rows per transaction."""

    REFRESH_S = 60.0

    def __init__(self) -> None:
        self._written: dict[str, tuple[datetime, tuple[object, ...]]] = {}
        self._pending: list[dict[str, Any]] = []

    @staticmethod
    def _what(row: dict[str, Any]) -> tuple[object, ...]:
        return (row["model_version"], row["software_version"], row["timezone"])

    def due(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            seen = self._written.get(row["device_id"])
            stale = seen is None or (row["last_seen"] - seen[0]).total_seconds() >= self.REFRESH_S
            changed = seen is not None and self._what(row)[1:] != seen[1][1:]
            new_model = seen is not None and row["model_version"] not in (None, seen[1][0])
            if stale or changed or new_model:
                out.append(row)
        self._pending = out
        return out

    def committed(self) -> None:
        """The rows of the last due() are in the database."""
        for row in self._pending:
            self._written[row["device_id"]] = (row["last_seen"], self._what(row))
        self._pending = []
