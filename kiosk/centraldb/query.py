"""Report queries on the central database: counts per device, period, age group and gender,
checks per status, and the rows for an export.

A selection is one device, a site (a device-id prefix) or every device. Every count is
grouped by device, so a report can show the per-device breakdown or sum it; each row is
binned in a given time zone, normally its own kiosk's (the zone sent with the event).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, case, create_engine, func, inspect, literal, select
from sqlalchemy.engine import Engine

from kiosk.centraldb.schema import checks, devices, visits
from kiosk.visit import Visit


@dataclass(frozen=True, slots=True)
class Selection:
    """Which devices: `device_id` exactly, or those whose id starts with `site`, or all."""

    device_id: str | None = None
    site: str | None = None

    def where(self, col: ColumnElement) -> list[ColumnElement[bool]]:
        if self.device_id:
            return [col == self.device_id]
        if self.site:
            escaped = self.site.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return [col.like(f"{escaped}%", escape="\\")]
        return []

    def label(self) -> str | None:
        if self.device_id:
            return self.device_id
        return f"site {self.site}" if self.site else None


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    first_seen: datetime
    last_seen: datetime
    model_version: str | None
    software_version: str
    timezone: str


def _bin(col: ColumnElement, edges: Sequence[datetime]) -> ColumnElement:
    inner = edges[1:-1]
    if not inner:
        return literal(0)
    return case(*[(col < e, i) for i, e in enumerate(inner)], else_=len(inner))


def is_central(engine: Engine) -> bool:
    """True for a database kiosk-collect created (not a kiosk's own store)."""
    names = set(inspect(engine).get_table_names())
    return {"alembic_version", "devices", "visits"} <= names


class CentralDB:
    """Read side of the central database, for kiosk-report and the web page."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_pre_ping=True)

    def close(self) -> None:
        self.engine.dispose()

    def zones(self, start: datetime, end: datetime, sel: Selection) -> list[str]:
        """The time zones that the selection's visits and checks were sent with in
        [start, end): a report bins each zone's rows in that zone."""
        found: set[str] = set()
        for table, col in ((visits, visits.c.started_at), (checks, checks.c.at)):
            q = (
                select(table.c.timezone)
                .where(col >= start, col < end, *sel.where(table.c.device_id))
                .distinct()
            )
            with self.engine.connect() as conn:
                found.update(conn.scalars(q))
        return sorted(found)

    def visit_counts(
        self, edges: Sequence[datetime], sel: Selection, zone: str | None
    ) -> dict[tuple[str, int, str, str], int]:
        """Visits counted by (device, bin, age group, gender); bin i is [edges[i], edges[i+1]).
        `zone`: only rows sent with that time zone (None: every row)."""
        col, c = visits.c.started_at, visits.c
        b = _bin(col, edges)
        where = [col >= edges[0], col < edges[-1], *sel.where(c.device_id)]
        if zone is not None:
            where.append(c.timezone == zone)
        q = (
            select(c.device_id, b, c.age_group, c.gender, func.count())
            .where(*where)
            .group_by(c.device_id, b, c.age_group, c.gender)
        )
        with self.engine.connect() as conn:
            return {(d, i, a, g): n for d, i, a, g, n in conn.execute(q)}

    def check_counts(
        self, edges: Sequence[datetime], sel: Selection, zone: str | None
    ) -> dict[tuple[str, int, str], int]:
        """Checks counted by (device, bin, status), as visit_counts."""
        col, c = checks.c.at, checks.c
        b = _bin(col, edges)
        where = [col >= edges[0], col < edges[-1], *sel.where(c.device_id)]
        if zone is not None:
            where.append(c.timezone == zone)
        q = select(c.device_id, b, c.status, func.count()).where(*where)
        with self.engine.connect() as conn:
            rows = conn.execute(q.group_by(c.device_id, b, c.status))
            return {(d, i, s): n for d, i, s, n in rows}

    def unsynced_visit_count(self, start: datetime, end: datetime, sel: Selection) -> int:
        c = visits.c
        q = select(func.count()).where(
            c.started_at >= start,
            c.started_at < end,
            c.clock_synced.is_(False),
            *sel.where(c.device_id),
        )
        with self.engine.connect() as conn:
            return conn.scalar(q) or 0

    def iter_visits(
        self, start: datetime, end: datetime, sel: Selection, batch: int = 2000
    ) -> Generator[tuple[Visit, str], None, None]:
        """(visit, its time zone) that started in [start, end), oldest first, streamed."""
        c = visits.c
        q = (
            select(visits)
            .where(c.started_at >= start, c.started_at < end, *sel.where(c.device_id))
            .order_by(c.started_at, c.id)
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(q)
            for r in result:
                yield visit_of(r._mapping), r.timezone

    def devices(self, sel: Selection) -> list[Device]:
        c = devices.c
        q = select(
            c.device_id, c.first_seen, c.last_seen, c.model_version, c.software_version,
            c.timezone,
        ).where(*sel.where(c.device_id)).order_by(c.device_id)  # fmt: skip
        with self.engine.connect() as conn:
            return [Device(*row) for row in conn.execute(q)]


def visit_of(m) -> Visit:
    """A central row back as the kiosk's record."""
    return Visit(
        id=m["id"],
        device_id=m["device_id"],
        started_at=m["started_at"],
        ended_at=m["ended_at"],
        age_group=m["age_group"],
        age_confidence=m["age_confidence"],
        gender=m["gender"],
        gender_confidence=m["gender_confidence"],
        temperature_c=m["temperature_c"],
        temperature_status=m["temperature_status"],
        frames=m["frames"],
        model_version=m["model_version"],
        clock_synced=m["clock_synced"],
    )
