"""The collector: MQTT in, PostgreSQL out, acknowledged only after the commit.

Threads: paho's network loop runs the callbacks, which only hand each message to a queue;
the ``kiosk-collect`` thread takes batches from it, writes each batch in one transaction and
then acknowledges its messages (paho manual acknowledgement, in the order they arrived).

Invariants:

- A message is acknowledged only after its row (or dead letter) is committed. A crash before
  that leaves it unacknowledged in the broker's persistent session (fixed client id, clean
  start off), which delivers it again; the insert is idempotent on the id.
- A message is acknowledged only on the connection it arrived on: after a reconnect the broker
  sends the unacknowledged ones again, and a stale packet id could acknowledge another message.
- The broker has at most ``mqtt.receive_max`` messages in flight to us, and what is queued
  from an earlier connection is dropped on a reconnect (it comes again): that bounds the queue.
- A database error never drops a message: the batch is retried with backoff while the broker
  keeps everything. A row the database refuses for good becomes a dead letter.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from kiosk.central.config import CollectMqttConfig, CollectorConfig, database_url
from kiosk.central.ingest import Message, classify
from kiosk.central.stats import IngestStats
from kiosk.centraldb import migrate
from kiosk.centraldb.retention import purge
from kiosk.centraldb.write import Batch, DeadLetter, Registry, event_time, write_batch
from kiosk.lifecycle import Part
from kiosk.limits import LogEvery
from kiosk.mqttclient import check_files, connect_bounded, make_client, read_password
from kiosk.store import driver_message
from kiosk.visit import Visit
from kiosk.wire import Event

log = logging.getLogger("kiosk.collect")

# Dead-letter kinds logged at WARNING once each; a flood of new kinds is bounded too.
MAX_KINDS_LOGGED = 1000
RETRY_MIN_S = 0.5


class Collector(Part):
    """Subscribes to every kiosk's visits and checks and commits them to PostgreSQL.

    ``start()`` migrates (when configured), connects in the background and starts the
    writer; ``close()`` is idempotent: it stops taking messages, leaves what is not committed
    unacknowledged for the broker to deliver again, and disconnects."""

    def __init__(
        self,
        mqtt_cfg: CollectMqttConfig,
        db_url: URL,
        *,
        batch_max: int,
        batch_wait_s: float,
        retry_max_s: float,
        max_message_bytes: int,
        migrate_schema: bool = True,
        retention_days: dict[str, int] | None = None,
        retention_interval_s: float = 3600.0,
    ) -> None:
        check_files(mqtt_cfg)
        self.cfg = mqtt_cfg
        self._password = read_password(mqtt_cfg)
        self.engine: Engine = create_engine(db_url, pool_pre_ping=True, pool_size=2)
        self.batch_max, self.batch_wait_s = batch_max, batch_wait_s
        self.retry_max_s = retry_max_s
        self.max_message_bytes = max_message_bytes
        self.migrate_schema = migrate_schema
        self.retention_days = retention_days or {}
        self.retention_interval_s = retention_interval_s
        self.stats = IngestStats()
        self._queue: queue.Queue[Message] = queue.Queue()
        self._generation = 0  # bumped on every connect (paho's thread), read by the writer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client: mqtt.Client | None = None
        self._kinds_logged: set[str] = set()
        self._db_problem = LogEvery(log, logging.ERROR, 60.0)
        self._next_retention = 0.0
        self._registry = Registry()
        self.where = f"{mqtt_cfg.host}:{mqtt_cfg.port}"

    @classmethod
    def from_config(cls, cfg: CollectorConfig) -> Collector:
        r = cfg.retention
        return cls(
            cfg.mqtt,
            database_url(cfg.database),
            batch_max=cfg.ingest.batch_max,
            batch_wait_s=cfg.ingest.batch_wait_s,
            retry_max_s=cfg.ingest.retry_max_s,
            max_message_bytes=cfg.ingest.max_message_bytes,
            migrate_schema=cfg.database.migrate,
            retention_days={
                "visits": r.visits_days,
                "checks": r.checks_days,
                "dead_letters": r.dead_letters_days,
            },
            retention_interval_s=r.interval_s,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Collector:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="kiosk-collect", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        self.engine.dispose()
        log.info("collector stopped (%d rows committed this run)", self.stats.total_stored())

    def pending(self) -> int:
        return self._queue.qsize()

    # -- MQTT (paho's network thread) ------------------------------------------------------

    def _connect(self) -> None:
        c = self.cfg
        client = make_client(c, c.client_id, self._password, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client
        log.info("mqtt: connecting to %s as client %s", self.where, c.client_id)
        connect_bounded(
            client,
            c,
            self.max_message_bytes,
            session_expiry_s=c.session_expiry_s,
            receive_max=c.receive_max,
        )
        client.loop_start()

    def _topics(self) -> list[str]:
        share = f"$share/{self.cfg.share_group}/" if self.cfg.share_group else ""
        return [f"{share}{self.cfg.prefix}/+/{kind}" for kind in ("visit", "check")]

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any):
        if rc.is_failure:
            log.warning("mqtt: broker %s refused the connection: %s", self.where, rc)
            return
        self._generation += 1
        self._drop_stale()
        resumed = bool(getattr(flags, "session_present", False))
        log.info("mqtt: connected to %s (session %s)", self.where,
                 "resumed" if resumed else "new")  # fmt: skip
        # Subscribing again is harmless on a resumed session and needed on a new one.
        client.subscribe([(t, 1) for t in self._topics()])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any):
        refused = [c for c in codes if c.is_failure]
        if refused:
            log.error("mqtt: broker %s refused the subscription: %s (check its ACL)",
                      self.where, refused[0])  # fmt: skip
            return
        with self.stats.lock:
            self.stats.connected = True

    def _drop_stale(self) -> None:
        """What waits from an earlier connection will come again on this one: drop it, so
        the queue never holds more than one connection's Receive Maximum."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any):
        with self.stats.lock:
            self.stats.connected = False
        if not self._stop.is_set():
            log.warning("mqtt: lost %s (%s); unacknowledged messages come again", self.where, rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(
            Message(self._generation, msg.mid, msg.qos, msg.topic, bytes(msg.payload),
                    time.monotonic())
        )  # fmt: skip

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        if self.migrate_schema:
            self._retry(lambda: migrate.upgrade(self.engine), "migrate the schema")
        if self._stop.is_set():
            return
        self._connect()
        while not self._stop.is_set():
            batch = self._take()
            if batch:
                self._commit(batch)
            self._maybe_purge()

    def _take(self) -> list[Message]:
        """Up to batch_max messages: the first one waited for, the rest for batch_wait_s."""
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _commit(self, messages: list[Message]) -> None:
        """Commit a batch (retried until it is, or its connection is gone), then ack it."""
        live = [m for m in messages if m.generation == self._generation]
        if not live:
            return  # came on a connection that is gone: the broker sends them again
        events: list[Event] = []
        sources: list[Message] = []
        dead: list[DeadLetter] = []
        for m in live:
            got = classify(m, self.cfg.prefix)
            if isinstance(got, Event):
                events.append(got)
                sources.append(m)
            else:
                dead.append(got)
        refused: list[DeadLetter] = []

        def write() -> None:
            batch = Batch(events, dead, [m.payload for m in sources])
            refused[:] = self._write(batch, sources)

        done = self._retry(
            write,
            "write a batch",
            give_up=lambda: all(m.generation != self._generation for m in live),
        )
        if not done:
            return
        kept = {d.payload for d in refused}
        self._count([e for e, m in zip(events, sources, strict=True) if m.payload not in kept],
                    dead + refused)  # fmt: skip
        assert self.client is not None
        acked = 0
        for m in live:
            if m.qos and m.generation == self._generation:
                self.client.ack(m.mid, m.qos)
                acked += 1
        with self.stats.lock:
            self.stats.acked += acked

    def _write(self, batch: Batch, sources: Sequence[Message]) -> list[DeadLetter]:
        """One transaction; a row the database refuses for good (not a lost connection)
        sends the batch through one event at a time, the refused ones as dead letters
        (returned)."""
        now = datetime.now(UTC)
        try:
            with self.engine.begin() as conn:
                write_batch(conn, batch, now, self._registry)
            self._registry.committed()
            return []
        except OperationalError:
            raise
        except DBAPIError as exc:
            if exc.connection_invalidated or not batch.events:
                raise
            log.warning("database refused a batch (%s); writing it row by row",
                        " ".join(driver_message(exc).split()))  # fmt: skip
            return self._write_singly(batch, sources, now)

    def _write_singly(
        self, batch: Batch, sources: Sequence[Message], now: datetime
    ) -> list[DeadLetter]:
        refused: list[DeadLetter] = []
        with self.engine.begin() as conn:
            write_batch(conn, Batch([], batch.dead), now, self._registry)
        for event, m in zip(batch.events, sources, strict=True):
            try:
                with self.engine.begin() as conn:
                    write_batch(conn, Batch([event], [], [m.payload]), now, self._registry)
                self._registry.committed()
            except OperationalError:
                raise
            except DBAPIError as exc:
                why = " ".join(driver_message(exc).replace("\0", "").split())[:500]
                refused.append(DeadLetter(m.topic[:256], "database", why, m.payload))
        if refused:
            with self.engine.begin() as conn:
                write_batch(conn, Batch([], refused), now, self._registry)
        return refused

    def _retry(
        self, work: Callable[[], object], what: str, give_up: Callable[[], bool] | None = None
    ) -> bool:
        """Run `work` until it succeeds (True), the collector stops or `give_up()` (False)."""
        delay = RETRY_MIN_S
        while not self._stop.is_set():
            try:
                work()
                return True
            except SQLAlchemyError as exc:
                with self.stats.lock:
                    self.stats.db_errors += 1
                self._db_problem(
                    "database: cannot %s (%s); nothing is acknowledged, retrying in %.1f s",
                    what,
                    " ".join(driver_message(exc).split()),  # one line: psycopg's span two
                    delay,
                )
            if give_up is not None and give_up():
                return False
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry_max_s)
        return False

    def _count(self, events: Sequence[Event], dead: Sequence[DeadLetter]) -> None:
        now = datetime.now(UTC)
        with self.stats.lock:
            for e in events:
                self.stats.stored["visit" if isinstance(e.record, Visit) else "check"] += 1
            for d in dead:
                self.stats.dead_letters[d.kind] += 1
            self.stats.batches += 1
            if events:
                self.stats.lag_s = (now - max(event_time(e) for e in events)).total_seconds()
        for d in dead:
            if d.kind not in self._kinds_logged and len(self._kinds_logged) < MAX_KINDS_LOGGED:
                self._kinds_logged.add(d.kind)
                log.warning("dead letter (%s) on %s: %s; further ones of this kind are only "
                            "counted", d.kind, d.topic, d.error)  # fmt: skip

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if not self.retention_days or now < self._next_retention:
            return
        self._next_retention = now + self.retention_interval_s
        for table, days in self.retention_days.items():
            cutoff = datetime.now(UTC) - timedelta(days=days)
            try:
                n = purge(self.engine, table, cutoff)
            except SQLAlchemyError as exc:
                self._db_problem("retention of %s failed: %s", table, driver_message(exc))
                continue
            if n:
                log.info("retention: %d %s rows older than %d days deleted", n, table, days)
