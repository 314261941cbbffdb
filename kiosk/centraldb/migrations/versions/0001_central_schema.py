"""The central schema: visits, checks, devices, dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "visits",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=False),
        sa.Column("age_group", sa.String(8), nullable=False),
        sa.Column("age_confidence", sa.Float, nullable=False),
        sa.Column("gender", sa.String(8), nullable=False),
        sa.Column("gender_confidence", sa.Float, nullable=False),
        sa.Column("temperature_c", sa.Float),
        sa.Column("temperature_status", sa.String(12), nullable=False),
        sa.Column("frames", sa.Integer, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("clock_synced", sa.Boolean, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("ingested_at", TZ, nullable=False, server_default=sa.func.clock_timestamp()),
    )
    op.create_index(
        "ix_visits_started_at",
        "visits",
        ["started_at"],
        postgresql_include=["device_id", "timezone", "age_group", "gender"],
    )
    op.create_table(
        "checks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("temperature_c", sa.Float),
        sa.Column("clock_synced", sa.Boolean, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("ingested_at", TZ, nullable=False, server_default=sa.func.clock_timestamp()),
    )
    op.create_index(
        "ix_checks_at", "checks", ["at"], postgresql_include=["device_id", "timezone", "status"]
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("first_seen", TZ, nullable=False),
        sa.Column("last_seen", TZ, nullable=False),
        sa.Column("last_event_at", TZ, nullable=False),
        sa.Column("model_version", sa.String(64)),
        sa.Column("software_version", sa.String(64), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("received_at", TZ, nullable=False, server_default=sa.func.clock_timestamp()),
        sa.Column("topic", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])


def downgrade() -> None:
    for table in ("dead_letters", "devices", "checks", "visits"):
        op.drop_table(table)
