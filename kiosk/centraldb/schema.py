"""The central tables. Times are ``timestamptz`` (UTC inside PostgreSQL); each visit and check
keeps the time zone its kiosk sent, so reports render every device's own local day.

Changing a table here needs a new revision under ``migrations/versions`` (docs/central.md).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
)

metadata = MetaData()

# The wire contract's bound on ids, device ids and versions (kiosk/wire.py).
TEXT = 64
TIMESTAMP = DateTime(timezone=True)

visits = Table(
    "visits",
    metadata,
    Column("id", String(TEXT), primary_key=True),  # the kiosk's id: inserts are idempotent
    Column("device_id", String(TEXT), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("age_group", String(8), nullable=False),
    Column("age_confidence", Float, nullable=False),
    Column("gender", String(8), nullable=False),
    Column("gender_confidence", Float, nullable=False),
    Column("temperature_c", Float),  # only when the kiosk publishes it (health data)
    Column("temperature_status", String(12), nullable=False),
    Column("frames", Integer, nullable=False),
    Column("model_version", String(TEXT), nullable=False),
    Column("clock_synced", Boolean, nullable=False),
    Column("timezone", String(TEXT), nullable=False),
    # When the collector wrote it (clock_timestamp: the insert itself, a few ms before the
    # commit, not the transaction's start): the end of the end-to-end latency.
    Column("ingested_at", TIMESTAMP, nullable=False, server_default=func.clock_timestamp()),
    # Reports read one period's rows by start time; the included columns make the daily
    # report an index-only scan (10 M rows: see tools/bench_collect.py).
    Index(
        "ix_visits_started_at",
        "started_at",
        postgresql_include=["device_id", "timezone", "age_group", "gender"],
    ),
)

checks = Table(
    "checks",
    metadata,
    Column("id", String(TEXT), primary_key=True),
    Column("device_id", String(TEXT), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status", String(12), nullable=False),
    Column("temperature_c", Float),
    Column("clock_synced", Boolean, nullable=False),
    Column("timezone", String(TEXT), nullable=False),
    Column("ingested_at", TIMESTAMP, nullable=False, server_default=func.clock_timestamp()),
    Index("ix_checks_at", "at", postgresql_include=["device_id", "timezone", "status"]),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(TEXT), primary_key=True),
    Column("first_seen", DateTime(timezone=True), nullable=False),  # the collector's clock
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("last_event_at", DateTime(timezone=True), nullable=False),  # the kiosk's clock
    Column("model_version", String(TEXT)),  # from its latest visit
    Column("software_version", String(TEXT), nullable=False),
    Column("timezone", String(TEXT), nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("received_at", TIMESTAMP, nullable=False, server_default=func.clock_timestamp()),
    Column("topic", String(256), nullable=False),
    Column("kind", String(TEXT), nullable=False),  # what was wrong, e.g. visit.age_group
    Column("error", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),  # bounded by the broker's packet limit
    Index("ix_dead_letters_received_at", "received_at"),
)

#: Each table's retention key: the column whose age decides when a row leaves.
RETENTION_COLUMNS = {
    "visits": visits.c.started_at,
    "checks": checks.c.at,
    "dead_letters": dead_letters.c.received_at,
}
