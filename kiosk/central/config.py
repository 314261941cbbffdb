"""kiosk-collect's config: its own YAML file, read by the kiosk's config walker (unknown keys
are errors, messages name the key, a bad file exits 78). Every key is in
``deploy/collect.example.yaml``."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from kiosk.config import (
    MAX_RETENTION_DAYS,
    MAX_WAIT_S,
    BrokerConfig,
    ConfigError,
    MetricsConfig,
    build_section,
    opt,
    read_secret,
    read_yaml,
)
from kiosk.logsetup import add_url_secret, redact_url
from kiosk.store import normalize_url
from kiosk.wire import MAX_PAYLOAD_BYTES

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "collect.example.yaml"


@dataclass
class CollectMqttConfig(BrokerConfig):
    # Fixed, so the broker keeps this collector's session (subscriptions and unacknowledged
    # messages) across restarts. Two collectors need two ids and a shared subscription.
    client_id: str = field(default_factory=lambda: f"kiosk-collect-{socket.gethostname()}")
    # How long the broker keeps the session (and queues messages) while the collector is away.
    session_expiry_s: int = opt(7 * 86400, ge=60, le=0xFFFFFFFE)
    # Unacknowledged messages the broker may have in flight to the collector (MQTT 5 Receive
    # Maximum): the bound on what waits in memory, and the pipeline depth.
    receive_max: int = opt(4000, ge=1, le=65535)
    # Subscribe with a shared subscription ($share/<group>/...) so several collectors split
    # the load; empty = a plain subscription.
    share_group: str = ""


@dataclass
class DatabaseConfig:
    # SQLAlchemy URL of the central PostgreSQL, without the password.
    url: str = "postgresql://kiosk@127.0.0.1/kiosk"
    # The password: this environment variable, this file, or the systemd credential
    # "db_password"; never in the YAML.
    password_env: str = "KIOSK_DB_PASSWORD"
    password_file: str = ""
    # Migrate the schema to the newest revision at start (Alembic).
    migrate: bool = True

    def __post_init__(self) -> None:
        try:
            u = make_url(self.url)
        except ArgumentError:
            raise ConfigError("database.url", "not a database URL") from None
        if u.get_backend_name() != "postgresql":
            why = f"must be a postgresql:// URL, got {redact_url(self.url)!r}"
            raise ConfigError("database.url", why)
        if u.password is not None:
            why = "must not hold the password (use database.password_env or password_file)"
            raise ConfigError("database.url", why)


@dataclass
class IngestConfig:
    # Rows per transaction; a batch closes at this size or batch_wait_s after its first row.
    batch_max: int = opt(1000, ge=1, le=50_000)
    batch_wait_s: float = opt(0.1, gt=0, le=60)
    # Database errors are retried with backoff doubling up to this; nothing is acknowledged
    # meanwhile, so the broker keeps every message.
    retry_max_s: float = opt(10.0, gt=0, le=MAX_WAIT_S)
    # The largest message accepted (MQTT 5 Maximum Packet Size; the broker drops larger ones).
    max_message_bytes: int = opt(MAX_PAYLOAD_BYTES, ge=1024, le=1_000_000)


@dataclass
class RetentionConfig:
    visits_days: int = opt(730, ge=1, le=MAX_RETENTION_DAYS)
    checks_days: int = opt(730, ge=1, le=MAX_RETENTION_DAYS)
    dead_letters_days: int = opt(30, ge=1, le=MAX_RETENTION_DAYS)
    interval_s: float = opt(3600.0, gt=0, le=86400)


@dataclass
class CollectorConfig:
    log_level: str = opt("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    mqtt: CollectMqttConfig = field(default_factory=CollectMqttConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    metrics: MetricsConfig = field(default_factory=lambda: MetricsConfig(port=9109))

    def __post_init__(self) -> None:
        group = self.mqtt.share_group
        if group and any(c in group for c in "/+#\0"):
            raise ConfigError("mqtt.share_group", f"must be one topic level, got {group!r}")


def load_collector_config(path: str | Path) -> CollectorConfig:
    return build_section(CollectorConfig, read_yaml(path), str(path))


def database_url(cfg: DatabaseConfig) -> URL:
    """The URL with the password from its secret (registered, so logs never show it)."""
    url = make_url(normalize_url(cfg.url))
    pw = read_secret(cfg.password_env, cfg.password_file, "db_password", "database.password_file")
    if pw is not None:
        url = url.set(password=pw)
    add_url_secret(url.render_as_string(hide_password=False))
    return url
