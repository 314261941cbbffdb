"""The visits database: the source of truth that MQTT and reports read from.

SQLAlchemy 2 over SQLite by default (any SQLAlchemy URL works); everything SQLite-specific
(pragmas, the pre-migration file copy, read-only opening) lives in this module.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.engine import CursorResult, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql import Delete

from kiosk.config import ConfigError
from kiosk.dbfile import DatabaseInUse, FileIdentity, WriterLock, save_copy
from kiosk.labels import CheckStatus, VisitStatus
from kiosk.lifecycle import Part
from kiosk.logsetup import redact_url
from kiosk.visit import Check, Visit

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5


class StoreError(Exception):
    """This database cannot be used as a kiosk store (foreign, newer, unwritable, in use)."""


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class VisitRow(Base):
    __tablename__ = "visits"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime)  # naive UTC
    ended_at: Mapped[datetime] = mapped_column(DateTime)
    age_group: Mapped[str] = mapped_column(String(8))
    age_confidence: Mapped[float] = mapped_column(Float)
    gender: Mapped[str] = mapped_column(String(8))
    gender_confidence: Mapped[float] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    temperature_status: Mapped[str] = mapped_column(String(12))
    frames: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(64))
    # v2: false while the wall clock was not trusted yet (kiosk/clock.py).
    clock_synced: Mapped[bool] = mapped_column(Boolean, server_default=true())
    # v4: the skin reading the body estimate (temperature_c) came from; NULL before v4.
    skin_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_visits_started_at", "started_at", "device_id"),)


class CheckRow(Base):
    """Temperature checks that did not pass; no demographic or face data."""

    __tablename__ = "checks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(12))
    temperature_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    clock_synced: Mapped[bool] = mapped_column(Boolean, server_default=true())
    skin_c: Mapped[float | None] = mapped_column(Float, nullable=True)  # v4
    __table_args__ = (Index("ix_checks_at", "at", "device_id"),)


class OutboxRow(Base):
    """A visit waiting to be published; written in the visit's own transaction."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Indexed (v3): retention's cascade looks the outbox up per deleted visit.
    visit_id: Mapped[str] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)


class CheckOutboxRow(Base):
    """A check waiting to be published (v5), like OutboxRow for a visit."""

    __tablename__ = "check_outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    check_id: Mapped[str] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)


def to_utc_naive(t: datetime) -> datetime:
    if t.tzinfo is None:
        return t
    return t.astimezone(UTC).replace(tzinfo=None)


def from_utc_naive(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC)


def visit_from_row(row: VisitRow) -> Visit:
    return Visit(
        id=row.id,
        device_id=row.device_id,
        started_at=from_utc_naive(row.started_at),
        ended_at=from_utc_naive(row.ended_at),
        age_group=row.age_group,
        age_confidence=row.age_confidence,
        gender=row.gender,
        gender_confidence=row.gender_confidence,
        temperature_c=row.temperature_c,
        temperature_status=cast(VisitStatus, row.temperature_status),
        frames=row.frames,
        model_version=row.model_version,
        clock_synced=row.clock_synced,
        skin_c=row.skin_c,
    )


def check_from_row(row: CheckRow) -> Check:
    return Check(
        id=row.id,
        device_id=row.device_id,
        at=from_utc_naive(row.at),
        status=cast(CheckStatus, row.status),
        temperature_c=row.temperature_c,
        clock_synced=row.clock_synced,
    )


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    visit: Visit


@dataclass(frozen=True, slots=True)
class CheckOutboxEntry:
    id: int
    check: Check


def sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


# The drivers the install extras ship: `postgresql://` means psycopg 3 (kioskd[postgres]).
_DRIVERS = {"postgresql": "postgresql+psycopg"}
_EXTRAS = {"postgresql": "pip install 'kioskd[postgres]'"}


def normalize_url(url: str) -> str:
    """`url` with the shipped driver named where it names only the database kind."""
    u = make_url(url)
    if u.drivername in _DRIVERS:
        u = u.set(drivername=_DRIVERS[u.drivername])
    return u.render_as_string(hide_password=False)


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a kiosk database, or None; the password never appears in it."""
    try:
        u = make_url(normalize_url(url))
    except ArgumentError:
        return "not a database URL (e.g. sqlite:////var/lib/kiosk/kiosk.db)"
    try:
        dialect = u.get_dialect()
    except NoSuchModuleError:
        return f"unknown database kind {u.drivername!r} (sqlite or postgresql, say)"
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = _EXTRAS.get(u.get_backend_name())
        how = f"; install it: {hint}" if hint else ""
        return f"{u.drivername}: its Python driver is not installed ({exc.name or exc}){how}"
    if u.get_backend_name() == "sqlite" and u.database and Path(u.database).is_dir():
        return f"{u.database} is a directory, not a database file"
    return None


def check_url(url: str) -> None:
    """`store.url` as a config check (the config layer itself knows no SQLAlchemy)."""
    if url and (problem := url_problem(url)):
        raise ConfigError("store.url", problem)


def _configure_sqlite(engine: Engine, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=5000")
        if not read_only:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def make_engine(url: str, read_only: bool = False) -> Engine:
    """An engine with the SQLite pragmas; read-only opens the file with mode=ro."""
    path = sqlite_path(url)
    if path is None:
        return create_engine(normalize_url(url), pool_pre_ping=True)
    if read_only:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: database not found")
        engine = create_engine("sqlite://", creator=lambda: _sqlite_connect_ro(path))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    _configure_sqlite(engine, read_only)
    return engine


def _sqlite_connect_ro(path: Path):
    import sqlite3

    return sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False)


def _bin_of(col, bounds: Sequence[datetime]):
    """SQL for the index of the bin [bounds[i], bounds[i+1]) that `col` falls in."""
    if len(bounds) < 2:
        raise ValueError("need at least two bin edges")
    inner = bounds[1:-1]
    if not inner:
        return literal(0)
    return case(*[(col < edge, i) for i, edge in enumerate(inner)], else_=len(inner))


def _current_version(session: Session) -> int | None:
    try:
        row = session.get(Meta, "schema_version")
    except Exception:  # the meta table does not exist yet
        session.rollback()
        return None
    return int(row.value) if row else None


# Each entry upgrades the schema from version N to N+1.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # Records stamped before the wall clock was trusted; older rows cannot tell, so count as 1.
    1: (
        "ALTER TABLE visits ADD COLUMN clock_synced BOOLEAN NOT NULL DEFAULT 1",
        "ALTER TABLE checks ADD COLUMN clock_synced BOOLEAN NOT NULL DEFAULT 1",
    ),
    # Without it one day's purge scanned the whole outbox per visit: 37.6 s with 100k pending.
    2: ("CREATE INDEX IF NOT EXISTS ix_outbox_visit_id ON outbox (visit_id)",),
    # temperature_c became a body estimate; the skin reading it came from is kept beside it.
    # Earlier rows hold a skin reading in temperature_c and NULL here.
    3: (
        "ALTER TABLE visits ADD COLUMN skin_c FLOAT",
        "ALTER TABLE checks ADD COLUMN skin_c FLOAT",
    ),
    # Checks are published too (kiosk-collect counts them): create_all adds check_outbox.
    4: (),
}


def schema_version(engine: Engine) -> int | None:
    """The kiosk schema version stored in the database, None when it has none."""
    with Session(engine) as session:
        try:
            return _current_version(session)
        except ValueError:
            raise StoreError("not a kiosk database (its schema version is not a number)") from None


def migrate(engine: Engine, url: str) -> None:
    """Create or upgrade the schema; copy an SQLite file aside before changing it."""
    version = schema_version(engine)
    if version == SCHEMA_VERSION:
        return
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this kiosk ({SCHEMA_VERSION})"
        )
    if version is None and inspect(engine).get_table_names():
        raise StoreError("not a kiosk database (it has tables but no kiosk schema version)")
    path = sqlite_path(url)
    if version is not None and path is not None and path.exists():
        backup = path.with_name(f"{path.name}.v{version}.bak")
        shutil.copy2(path, backup)
        log.info("schema v%d -> v%d: copied the database to %s", version, SCHEMA_VERSION, backup)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        for v in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
            for sql in MIGRATIONS[v]:
                conn.exec_driver_sql(sql)
    with Session(engine) as session, session.begin():
        session.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))


def check_schema(engine: Engine) -> None:
    """StoreError unless this is a kiosk database at this kiosk's schema version."""
    version = schema_version(engine)
    if version is None:
        raise StoreError("not a kiosk database (no kiosk schema in it)")
    if version > SCHEMA_VERSION:
        why = f"newer than this kiosk's ({SCHEMA_VERSION}): upgrade kiosk"
        raise StoreError(f"database schema version {version} is {why}")
    if version < SCHEMA_VERSION:
        why = f"older than this kiosk's ({SCHEMA_VERSION}): start kioskd once to upgrade it"
        raise StoreError(f"database schema version {version} is {why}")


class Store(Part):
    """Writes visits and checks; serves the outbox and retention.

    `read_only` opens an existing database without changing it; `create=False` refuses one that
    is not a kiosk database at this schema version instead of creating or upgrading it (the
    report CLI). `writer=True` is the daemon: it holds the writer lock, proves at once that
    the file can be written, and notices when the file is deleted or replaced under it."""

    def __init__(
        self, url: str, read_only: bool = False, *, create: bool = True, writer: bool = False
    ) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._lock = WriterLock(self.path) if writer and self.path is not None else None
        self._identity: FileIdentity | None = None
        if self._lock is not None and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._lock.acquire()
            except DatabaseInUse as exc:
                raise StoreError(str(exc)) from None
            except OSError as exc:
                raise StoreError(f"{self._lock.path}: {exc.strerror}") from None
        if not create:
            # Read-only first: a foreign file is refused before any pragma could change it.
            probe = make_engine(url, read_only=self.path is not None)
            try:
                check_schema(probe)
            finally:
                probe.dispose()
        self.engine = make_engine(url, read_only=read_only)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._open(read_only, create, writer)
        except BaseException:
            self.close()
            raise

    def _open(self, read_only: bool, create: bool, writer: bool) -> None:
        if create and not read_only:
            try:
                migrate(self.engine, self.url)
            except StoreError as exc:
                raise StoreError(f"{self.path or redact_url(self.url)}: {exc}") from None
        if writer:
            self._prove_writable()
            if self.path is not None:
                self._identity = FileIdentity(self.path)

    def _prove_writable(self) -> None:
        """A real write at start, so an unwritable file or a full disk stops kioskd before
        READY instead of every record failing later."""
        # Microseconds: a restart within the same second must still write (an unchanged
        # value is no UPDATE at all, and an unwritable file would pass).
        stamp = datetime.now(UTC).isoformat(timespec="microseconds")
        try:
            with self._sessions.begin() as s:
                s.merge(Meta(key="last_start", value=stamp))
        except SQLAlchemyError as exc:
            where = self.path or "the database"
            raise StoreError(f"{where}: cannot write: {driver_message(exc)}") from None

    def follow_file(self) -> None:
        """Before a write: when the database file was deleted or replaced since it was opened,
        save the open copy beside it (nothing committed is lost), say so, and continue in the
        file that the path now names (created if missing). A StoreError if that fails."""
        what = self._identity.changed() if self._identity is not None else None
        if what is None:
            return
        assert self.path is not None and self._identity is not None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        saved = self.path.with_name(f"{self.path.name}.{stamp}.orphaned")
        try:
            with self.engine.connect() as conn:
                dbapi = conn.connection.driver_connection
                assert dbapi is not None
                save_copy(dbapi, saved)
        except (OSError, sqlite3.Error, SQLAlchemyError) as exc:
            raise StoreError(f"{self.path} was {what}; cannot save the open copy: {exc}") from None
        log.error(
            "database %s was %s while kioskd ran; what it had stored is saved in %s, new "
            "records go to the file now at %s",
            self.path, what, saved, self.path,
        )  # fmt: skip
        self.engine.dispose()
        self.engine = make_engine(self.url)
        self._sessions.configure(bind=self.engine)
        self._identity.renew()  # once: a foreign file there fails below, not on every write
        try:
            migrate(self.engine, self.url)
            self._identity.renew()
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.path}: {driver_message(exc)}") from None

    def session(self) -> Session:
        return self._sessions()

    def add_visit(self, visit: Visit, outbox: bool = False) -> None:
        """Commit a visit (and its outbox entry in the same transaction)."""
        self.follow_file()
        with self._sessions.begin() as s:
            s.add(
                VisitRow(
                    id=visit.id,
                    device_id=visit.device_id,
                    started_at=to_utc_naive(visit.started_at),
                    ended_at=to_utc_naive(visit.ended_at),
                    age_group=visit.age_group,
                    age_confidence=visit.age_confidence,
                    gender=visit.gender,
                    gender_confidence=visit.gender_confidence,
                    temperature_c=visit.temperature_c,
                    temperature_status=visit.temperature_status,
                    frames=visit.frames,
                    model_version=visit.model_version,
                    clock_synced=visit.clock_synced,
                    skin_c=visit.skin_c,
                )
            )
            if outbox:
                s.flush()
                s.add(OutboxRow(visit_id=visit.id, created_at=to_utc_naive(visit.ended_at)))

    def add_check(self, check: Check, outbox: bool = False) -> None:
        """Commit a check (and its outbox entry in the same transaction)."""
        self.follow_file()
        with self._sessions.begin() as s:
            s.add(
                CheckRow(
                    id=check.id,
                    device_id=check.device_id,
                    at=to_utc_naive(check.at),
                    status=check.status,
                    temperature_c=check.temperature_c,
                    clock_synced=check.clock_synced,
                    skin_c=check.skin_c,
                )
            )
            if outbox:
                s.flush()
                s.add(CheckOutboxRow(check_id=check.id, created_at=to_utc_naive(check.at)))

    def restamp(self, visits: Mapping[str, timedelta], checks: Mapping[str, timedelta]) -> int:
        """Shift records stamped before the clock was trusted and mark them synced.

        Undelivered outbox entries move with their visit, so age-based trimming stays right.
        Returns how many rows were restamped."""
        n = 0
        with self._sessions.begin() as s:
            rows = s.scalars(select(VisitRow).where(VisitRow.id.in_(list(visits)))).all()
            for row in rows:
                if row.clock_synced:
                    continue
                d = visits[row.id]
                row.started_at, row.ended_at = row.started_at + d, row.ended_at + d
                row.clock_synced = True
                n += 1
                for entry in s.scalars(select(OutboxRow).where(OutboxRow.visit_id == row.id)):
                    entry.created_at = entry.created_at + d
            check_rows = s.scalars(select(CheckRow).where(CheckRow.id.in_(list(checks)))).all()
            for check_row in check_rows:
                if not check_row.clock_synced:
                    check_row.at = check_row.at + checks[check_row.id]
                    check_row.clock_synced = True
                    n += 1
                    for c in s.scalars(
                        select(CheckOutboxRow).where(CheckOutboxRow.check_id == check_row.id)
                    ):
                        c.created_at = c.created_at + checks[check_row.id]
        return n

    def visits(self, start: datetime, end: datetime, device_id: str | None = None) -> list[Visit]:
        """Visits that started in [start, end), oldest first."""
        q = select(VisitRow).where(
            VisitRow.started_at >= to_utc_naive(start), VisitRow.started_at < to_utc_naive(end)
        )
        if device_id:
            q = q.where(VisitRow.device_id == device_id)
        with self.session() as s:
            return [visit_from_row(r) for r in s.scalars(q.order_by(VisitRow.started_at))]

    def visit_counts(
        self, start: datetime, end: datetime, device_id: str | None = None
    ) -> dict[tuple[str, str], int]:
        """Visits started in [start, end) counted by (age_group, gender)."""
        q = select(VisitRow.age_group, VisitRow.gender, func.count()).where(
            VisitRow.started_at >= to_utc_naive(start), VisitRow.started_at < to_utc_naive(end)
        )
        if device_id:
            q = q.where(VisitRow.device_id == device_id)
        q = q.group_by(VisitRow.age_group, VisitRow.gender)
        with self.session() as s:
            return {(age, gender): n for age, gender, n in s.execute(q)}

    def unsynced_visit_count(
        self, start: datetime, end: datetime, device_id: str | None = None
    ) -> int:
        """Visits started in [start, end) that were stamped before the clock was trusted and
        never restamped: their times, and so their day or hour, may be wrong."""
        q = select(func.count()).where(
            VisitRow.started_at >= to_utc_naive(start),
            VisitRow.started_at < to_utc_naive(end),
            VisitRow.clock_synced.is_(False),
        )
        if device_id:
            q = q.where(VisitRow.device_id == device_id)
        with self.session() as s:
            return s.scalar(q) or 0

    def check_counts(
        self, start: datetime, end: datetime, device_id: str | None = None
    ) -> dict[str, int]:
        """Non-passing temperature checks in [start, end) counted by status."""
        q = select(CheckRow.status, func.count()).where(
            CheckRow.at >= to_utc_naive(start), CheckRow.at < to_utc_naive(end)
        )
        if device_id:
            q = q.where(CheckRow.device_id == device_id)
        with self.session() as s:
            return dict(s.execute(q.group_by(CheckRow.status)).all())

    def visit_counts_binned(
        self, edges: Sequence[datetime], device_id: str | None = None
    ) -> dict[tuple[int, str, str], int]:
        """Visits counted by (bin, age_group, gender); bin i is [edges[i], edges[i+1]).

        One indexed range scan for the whole span, so a report's hours cost one query."""
        col = VisitRow.started_at
        bounds = [to_utc_naive(e) for e in edges]
        b = _bin_of(col, bounds)
        q = select(b, VisitRow.age_group, VisitRow.gender, func.count()).where(
            col >= bounds[0], col < bounds[-1]
        )
        if device_id:
            q = q.where(VisitRow.device_id == device_id)
        q = q.group_by(b, VisitRow.age_group, VisitRow.gender)
        with self.session() as s:
            return {(i, age, gender): n for i, age, gender, n in s.execute(q)}

    def check_counts_binned(
        self, edges: Sequence[datetime], device_id: str | None = None
    ) -> dict[tuple[int, str], int]:
        """Non-passing checks counted by (bin, status); bins as in visit_counts_binned."""
        col = CheckRow.at
        bounds = [to_utc_naive(e) for e in edges]
        b = _bin_of(col, bounds)
        q = select(b, CheckRow.status, func.count()).where(col >= bounds[0], col < bounds[-1])
        if device_id:
            q = q.where(CheckRow.device_id == device_id)
        with self.session() as s:
            return {(i, status): n for i, status, n in s.execute(q.group_by(b, CheckRow.status))}

    def iter_visits(
        self, start: datetime, end: datetime, device_id: str | None = None, batch: int = 2000
    ) -> Iterator[Visit]:
        """Visits that started in [start, end), oldest first, fetched in batches (exports)."""
        q = select(VisitRow).where(
            VisitRow.started_at >= to_utc_naive(start), VisitRow.started_at < to_utc_naive(end)
        )
        if device_id:
            q = q.where(VisitRow.device_id == device_id)
        q = q.order_by(VisitRow.started_at).execution_options(yield_per=batch)
        with self.session() as s:
            for row in s.scalars(q):
                yield visit_from_row(row)

    def oldest_record_at(self, device_id: str | None = None) -> datetime | None:
        """The earliest visit start or check time (UTC), or None for an empty database."""
        visits = select(func.min(VisitRow.started_at))
        checks = select(func.min(CheckRow.at))
        if device_id:
            visits = visits.where(VisitRow.device_id == device_id)
            checks = checks.where(CheckRow.device_id == device_id)
        with self.session() as s:
            found = [t for t in (s.scalar(visits), s.scalar(checks)) if t is not None]
        return from_utc_naive(min(found)) if found else None

    def last_visit(self, device_id: str | None = None) -> Visit | None:
        q = select(VisitRow).order_by(VisitRow.ended_at.desc()).limit(1)
        if device_id:
            q = q.where(VisitRow.device_id == device_id)
        with self.session() as s:
            row = s.scalars(q).first()
            return visit_from_row(row) if row else None

    def latest_visits(self, n: int, device_id: str | None = None) -> list[Visit]:
        """The `n` most recently started visits, newest first (the web page's list; by start,
        which is indexed)."""
        q = select(VisitRow).order_by(VisitRow.started_at.desc()).limit(n)
        if device_id:
            q = q.where(VisitRow.device_id == device_id)
        with self.session() as s:
            return [visit_from_row(r) for r in s.scalars(q)]

    def visit_count(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(VisitRow)) or 0

    def pending_outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered outbox entries in the order they were written."""
        rows = self._pending(OutboxRow, VisitRow, OutboxRow.visit_id, limit)
        return [OutboxEntry(oid, visit_from_row(row)) for oid, row in rows]

    def pending_check_outbox(self, limit: int = 100) -> list[CheckOutboxEntry]:
        """Undelivered check outbox entries in the order they were written."""
        rows = self._pending(CheckOutboxRow, CheckRow, CheckOutboxRow.check_id, limit)
        return [CheckOutboxEntry(oid, check_from_row(row)) for oid, row in rows]

    def _pending(self, outbox, records, key, limit: int) -> list:
        q = (
            select(outbox.id, records)
            .join(records, records.id == key)
            .where(outbox.delivered_at.is_(None))
            .order_by(outbox.id)
            .limit(limit)
        )
        with self.session() as s:
            return [tuple(row) for row in s.execute(q)]

    def outbox_depth(self) -> int:
        """Visits and checks waiting to be published."""
        with self.session() as s:
            visits = select(func.count()).where(OutboxRow.delivered_at.is_(None))
            checks = select(func.count()).where(CheckOutboxRow.delivered_at.is_(None))
            return (s.scalar(visits) or 0) + (s.scalar(checks) or 0)

    def mark_delivered(
        self, ids: Sequence[int], at: datetime | None = None, check_ids: Sequence[int] = ()
    ) -> None:
        """Mark visit outbox entries `ids` and check outbox entries `check_ids` delivered."""
        if not ids and not check_ids:
            return
        when = to_utc_naive(at or datetime.now(UTC))
        with self._sessions.begin() as s:
            for table, chosen in ((OutboxRow, ids), (CheckOutboxRow, check_ids)):
                if chosen:
                    s.execute(update(table).where(table.id.in_(chosen)).values(delivered_at=when))

    def trim_outbox(self, max_age_s: float, max_count: int, now: datetime | None = None) -> int:
        """Drop undelivered entries older than max_age_s or beyond max_count (oldest first),
        and delivered entries; returns how many undelivered entries were dropped. Visits
        stamped before the clock was trusted have no meaningful age: only the count bounds
        them."""
        cutoff = to_utc_naive(now or datetime.now(UTC)) - timedelta(seconds=max_age_s)
        with self._sessions.begin() as s:
            synced = select(VisitRow.id).where(VisitRow.clock_synced.is_(True))
            dropped = _trim(s, OutboxRow, OutboxRow.visit_id.in_(synced), cutoff, max_count)
            synced = select(CheckRow.id).where(CheckRow.clock_synced.is_(True))
            table = CheckOutboxRow
            dropped += _trim(s, table, table.check_id.in_(synced), cutoff, max_count)
        return dropped

    def _older(self, cutoff: datetime, device_id: str | None):
        """WHERE clauses for the visits and checks before `cutoff` (one device, or all)."""
        visits = [VisitRow.started_at < cutoff]
        checks = [CheckRow.at < cutoff]
        if device_id:
            visits.append(VisitRow.device_id == device_id)
            checks.append(CheckRow.device_id == device_id)
        return visits, checks

    def purge(self, older_than: datetime, device_id: str | None = None) -> tuple[int, int]:
        """Delete visits and checks before `older_than` (retention), of one device or all;
        returns both counts."""
        visits_where, checks_where = self._older(to_utc_naive(older_than), device_id)
        with self._sessions.begin() as s:
            old = select(VisitRow.id).where(*visits_where)
            s.execute(delete(OutboxRow).where(OutboxRow.visit_id.in_(old)))
            old = select(CheckRow.id).where(*checks_where)
            s.execute(delete(CheckOutboxRow).where(CheckOutboxRow.check_id.in_(old)))
            visits = _deleted(s, delete(VisitRow).where(*visits_where))
            checks = _deleted(s, delete(CheckRow).where(*checks_where))
        return visits, checks

    def count_older(self, older_than: datetime, device_id: str | None = None) -> tuple[int, int]:
        """How many visits and checks `purge` would delete (a dry run)."""
        visits_where, checks_where = self._older(to_utc_naive(older_than), device_id)
        with self.session() as s:
            visits = s.scalar(select(func.count()).select_from(VisitRow).where(*visits_where))
            checks = s.scalar(select(func.count()).select_from(CheckRow).where(*checks_where))
        return visits or 0, checks or 0

    def close(self) -> None:
        """Release the connections and the writer lock; idempotent."""
        self.engine.dispose()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


def _trim(
    s: Session, table: type[OutboxRow] | type[CheckOutboxRow], synced, cutoff: datetime, n: int
) -> int:
    """One outbox's trim: delivered entries, synced ones older than `cutoff`, then the oldest
    beyond `n`; returns how many undelivered entries were dropped."""
    s.execute(delete(table).where(table.delivered_at.is_not(None)))
    dropped = _deleted(s, delete(table).where(table.created_at < cutoff, synced))
    pending = s.scalar(select(func.count()).select_from(table)) or 0
    if pending > n:
        oldest = select(table.id).order_by(table.id).limit(pending - n)
        dropped += _deleted(s, delete(table).where(table.id.in_(oldest)))
    return dropped


def _deleted(session: Session, statement: Delete) -> int:
    """Rows a DELETE removed."""
    return cast(CursorResult, session.execute(statement)).rowcount or 0


def driver_message(exc: Exception) -> str:
    """The driver's own words (e.g. 'attempt to write a readonly database'), without SQL."""
    orig = getattr(exc, "orig", None)
    return str(orig) if orig is not None else str(exc).splitlines()[0]
