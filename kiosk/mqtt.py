"""MQTT publishing: visits from the store's outbox, live statistics, Home Assistant discovery.

The store is the source of truth. :meth:`Store.add_visit` writes a visit and its outbox entry
in one transaction; the :class:`Publisher` drains the outbox in order on a background thread
and marks an entry delivered only when the broker acknowledges it (QoS 1 PUBACK). A broker
outage or a daemon restart therefore loses nothing: undelivered entries are sent after the
next (re)connect. Delivery is at least once; consumers de-duplicate by the visit ``id``.

Topics and payloads are built in :mod:`kiosk.wire` (the contract, no paho), discovery configs
in :mod:`kiosk.discovery`, the client in :mod:`kiosk.mqttclient`. Topics, under
``<prefix>/<device_id>/``:

``status``  retained ``online`` on every connect, ``offline`` as the last will and on a clean
            stop (QoS 1).
``visit``   one JSON message per stored visit (QoS 1, not retained).
``check``   one JSON message per failed or unmeasured check, from its own outbox (QoS 1).
``stats``   retained JSON with today's counts (local day in the configured time zone), sent
            every ``stats_interval_s``, after each visit and on every connect.

Home Assistant discovery configs (retained) go to
``<discovery_prefix>/<sensor|binary_sensor>/<unique_id>/config`` on every connect and whenever
Home Assistant announces ``online`` on ``<discovery_prefix>/status``. This device's retained
configs that it no longer publishes are emptied (Home Assistant then deletes the entity).

Threads: paho's network loop (``loop_start``) runs the callbacks, which only set flags and
publish tiny messages; the ``kiosk-mqtt`` thread does every database read and write. The
frame loop only ever calls :meth:`Publisher.wake`, which sets an event.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt

from kiosk import __version__
from kiosk.config import MqttConfig
from kiosk.counters import Counters
from kiosk.daystats import day_stats
from kiosk.discovery import device_identifier, discovery_configs, owner
from kiosk.lifecycle import Part
from kiosk.limits import LogEvery
from kiosk.mqttclient import WINDOW, check_files, connect_bounded, make_client, read_password
from kiosk.store import CheckOutboxEntry, OutboxEntry, Store
from kiosk.wire import (
    STATUS_OFFLINE,
    STATUS_ONLINE,
    Sender,
    check_payload,
    encode,
    stats_payload,
    topics,
    visit_payload,
)

log = logging.getLogger(__name__)

# Stats after visits are coalesced to at most one message per this many seconds.
STATS_MIN_GAP_S = 0.5
# Home Assistant announces `online` once per start; a flood of them (a loop, a hostile client)
# re-sends discovery (19 retained configs) at most this often.
DISCOVERY_MIN_GAP_S = 10.0
TRIM_INTERVAL_S = 600.0
MAX_INCOMING_BYTES = 16_384
# While the broker cannot be reached, repeat the warning at most this often (else DEBUG).
WARN_EVERY_S = 300.0
STOP_FLUSH_S = 2.0
# Visits stamped before the wall clock was trusted are held back this long (the clock is
# usually trusted within a minute of boot, and then they are restamped in the database and
# sent with the right times); after that they are sent as they are, flagged clock_synced false.
UNSYNCED_HOLD_S = 180.0


Key = tuple[str, int]


class Publisher(Part):
    """Drains the visit outbox to MQTT and keeps ``status``, ``stats`` and discovery current.

    ``start()`` returns at once (the connection is made in the background and retried with
    backoff); ``wake()`` is cheap and safe to call from the frame loop right after a visit is
    committed; ``close()`` publishes ``offline`` and disconnects cleanly. When
    ``cfg.enabled`` is false all three do nothing.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        store: Store,
        tz: ZoneInfo,
        counters: Counters | None = None,
    ) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.store = store
        self.tz = tz
        self.counters = counters
        self.topics = topics(cfg.prefix, device_id)
        self.sender = Sender(timezone=tz.key, software_version=__version__)
        self.ha_status_topic = f"{cfg.discovery_prefix}/status"
        # Every retained discovery config on the broker is read once per connect; those of
        # this device that it no longer publishes (a sensor an upgrade dropped) are removed.
        self.ha_configs_filter = f"{cfg.discovery_prefix}/+/+/config"
        self._own_configs = {topic for topic, _ in discovery_configs(cfg, device_id)}
        self._identifier = device_identifier(device_id)
        self._stale: deque[str] = deque()  # from paho's thread, emptied by the drain thread
        self.where = f"{cfg.host}:{cfg.port}"
        self._password = read_password(cfg) if cfg.enabled else None
        if cfg.enabled:
            check_files(cfg)
        self.client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the flags below (set from paho's thread)
        self._connected = False
        self._connect_gen = 0
        self._discovery_due = False
        self._stats_due = False
        self._acked: deque[int] = deque()  # mids from on_publish, read by the drain thread
        # drain-thread state; an outbox entry is ("visit" | "check", its outbox id)
        self._inflight: dict[int, tuple[Key, mqtt.MQTTMessageInfo]] = {}  # mid -> (entry, info)
        self._inflight_ids: set[Key] = set()
        self._unmarked_mid = 0  # acked entries not yet marked: negative mids, never paho's
        self._seen_gen = 0
        self._last_stats = 0.0
        self._last_ha_discovery = float("-inf")
        self._ha_discovery_due = False
        self._last_trim = 0.0
        self._ha_online = LogEvery(log, logging.INFO)
        self._unsynced_since: dict[str, float] = {}  # kind -> when its hold began
        # connection-problem logging (paho's thread)
        self._fail_count = 0
        self._last_warn = 0.0
        self._last_problem = ""
        self._refused = False
        # numbers for tests, benchmarks and metrics
        self.delivered = 0
        self.connects = 0
        self.trimmed = 0

    # -- public API ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> Publisher:
        if not self.cfg.enabled or self._thread is not None:
            return self
        try:
            self._trim()
            waiting = self.store.outbox_depth()
        except Exception:  # the drain thread retries; never keep the daemon from starting
            log.exception("mqtt: could not read the outbox at start")
            waiting = -1
        client = make_client(
            self.cfg,
            f"kiosk-{self.device_id}",
            self._password,
            will_topic=self.topics["status"],
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client
        auth = f" as {self.cfg.username!r}" if self.cfg.username else ""
        tls = " over TLS" if self.cfg.tls else ""
        log.info(
            "mqtt: connecting to %s%s%s as client %s (%d visits waiting in the outbox)",
            self.where,
            tls,
            auth,
            f"kiosk-{self.device_id}",
            waiting,
        )
        # What it subscribes to (Home Assistant's status, gate decisions) is a few bytes.
        connect_bounded(client, self.cfg, MAX_INCOMING_BYTES)
        client.loop_start()
        self._thread = threading.Thread(target=self._run, name="kiosk-mqtt", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """A visit was just committed: publish it (and fresh stats) soon. Never blocks."""
        self._stats_due = True
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Publish ``offline``, disconnect cleanly and stop both threads; idempotent."""
        if self._thread is None or self.client is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        client = self.client
        if self._connected:
            try:
                info = client.publish(self.topics["status"], STATUS_OFFLINE, qos=1, retain=True)
                info.wait_for_publish(STOP_FLUSH_S)
            except (RuntimeError, ValueError) as exc:
                log.debug("mqtt: offline not confirmed: %s", exc)
        client.disconnect()
        client.loop_stop()
        self._thread = None
        log.info("mqtt: stopped (%d visits published this run)", self.delivered)

    def drained(self) -> bool:
        """True when nothing is waiting in the outbox or in flight."""
        return not self._inflight and self.store.outbox_depth() == 0

    # -- paho callbacks (network thread): flags and tiny publishes only ---------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True  # the disconnect that follows is this refusal, said here
            self._problem(
                f"broker {self.where} refused the connection: {reason_code}"
                + (
                    " (check mqtt.username and the password from "
                    f"${self.cfg.password_env or '-'} / mqtt.password_file)"
                    if reason_code.value in (4, 5, 134, 135)
                    else ""
                )
            )
            return
        if self._fail_count:
            log.info("mqtt: connected to %s after %d failed attempts", self.where, self._fail_count)
        else:
            log.info("mqtt: connected to %s", self.where)
        self._fail_count = 0
        self._last_problem = ""
        client.publish(self.topics["status"], STATUS_ONLINE, qos=1, retain=True)
        if self.cfg.discovery:
            client.subscribe([(self.ha_status_topic, 0), (self.ha_configs_filter, 0)])
        with self._lock:
            self._connected = True
            self._connect_gen += 1
            self.connects += 1
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        exc = sys.exc_info()[1]  # paho calls this from inside its `except OSError:` block
        why = f": {exc}" if exc else ""
        self._problem(f"cannot connect to broker {self.where}{why}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        with self._lock:
            self._connected = False
        if self._stop.is_set():
            return
        if not was and self._refused:
            self._refused = False
        elif not was:
            # TCP accepted, then closed before CONNACK: a proxy, a full broker, a wrong port.
            self._problem(f"broker {self.where} closed the connection before accepting it "
                          f"({reason_code})")  # fmt: skip
        else:
            log.warning(
                "mqtt: lost the connection to %s (%s); visits wait in the outbox and are sent "
                "after reconnecting",
                self.where,
                reason_code,
            )
            self._last_warn = time.monotonic()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acked.append(mid)
        self._wake.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        if msg.payload and mqtt.topic_matches_sub(self.ha_configs_filter, msg.topic):
            if msg.topic not in self._own_configs and self._owned(msg.payload):
                self._stale.append(msg.topic)
                self._wake.set()
            return
        if msg.topic == self.ha_status_topic and msg.payload.strip().lower() == b"online":
            self._ha_online("mqtt: Home Assistant is online; re-sending discovery")
            self._ha_discovery_due = True
            self._stats_due = True
            self._wake.set()

    def _owned(self, payload: bytes | bytearray) -> bool:
        try:
            return owner(json.loads(payload)) == self._identifier
        except (ValueError, RecursionError):
            return False  # not JSON: someone else's

    def _remove_stale(self) -> None:
        """Empty retained payloads: Home Assistant deletes the entity, the broker the config."""
        assert self.client is not None
        while self._stale:
            topic = self._stale.popleft()
            self.client.publish(topic, b"", qos=1, retain=True)
            log.info("mqtt: removed the stale Home Assistant entity %s", topic)

    def _problem(self, what: str) -> None:
        """Log a connection problem clearly once, then at most every WARN_EVERY_S."""
        self._fail_count += 1
        now = time.monotonic()
        if what != self._last_problem or now - self._last_warn >= WARN_EVERY_S:
            log.warning(
                "mqtt: %s; retrying with backoff up to %g s (attempt %d); visits are kept in "
                "the local outbox",
                what,
                self.cfg.reconnect_max_s,
                self._fail_count,
            )
            self._last_warn = now
            self._last_problem = what
        else:
            log.debug("mqtt: %s (attempt %d)", what, self._fail_count)

    # -- drain thread: all database work ------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while True:
            timeout = self._next_timeout() if backoff == 0 else backoff
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                self._flush_acks()
                return
            try:
                self._step()
                backoff = 0.0
            except Exception:
                backoff = min(max(backoff * 2, 0.5), 10.0)
                log.exception("mqtt: publisher step failed; retrying in %.1f s", backoff)

    def _flush_acks(self) -> None:
        """On stop, while still connected: send what is waiting (visits the pipeline flushed
        on shutdown, too) and wait briefly for the PUBACKs, so that they are marked delivered
        now rather than sent again after the restart. Bounded by STOP_FLUSH_S."""
        deadline = time.monotonic() + STOP_FLUSH_S
        while True:
            try:
                self._collect_acks()
                sent = self._fill_window() if self._connected else 0
                if not self._inflight and sent == 0:
                    return  # nothing in flight and nothing (more) that may be sent now
            except Exception:
                log.exception("mqtt: could not publish the last visits before stopping")
                return
            if not self._connected or time.monotonic() >= deadline:
                return
            self._wake.wait(0.05)
            self._wake.clear()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        due = self._last_stats + self.cfg.stats_interval_s
        if self._stats_due:
            due = min(due, self._last_stats + STATS_MIN_GAP_S)
        if self._ha_discovery_due:
            due = min(due, self._last_ha_discovery + DISCOVERY_MIN_GAP_S)
        for since in self._unsynced_since.values():
            if since + UNSYNCED_HOLD_S > now:
                due = min(due, since + UNSYNCED_HOLD_S)  # a hold ends
        return max(0.05, min(due - now, self._last_trim + TRIM_INTERVAL_S - now, 5.0))

    def _step(self) -> None:
        self._collect_acks()
        now = time.monotonic()
        if now - self._last_trim >= TRIM_INTERVAL_S:
            self._trim()
        if not self._connected:
            return
        gen = self._connect_gen
        if gen != self._seen_gen:
            # A (re)connect: discovery and stats first, then the backlog.
            self._seen_gen = gen
            self._discovery_due = self.cfg.discovery
            self._stats_due = True
            self._last_stats = 0.0
        ha_due = self._ha_discovery_due and now - self._last_ha_discovery >= DISCOVERY_MIN_GAP_S
        if self._discovery_due or ha_due:
            if self._ha_discovery_due:
                self._last_ha_discovery = now
            self._discovery_due = self._ha_discovery_due = False
            self._publish_discovery()
        self._remove_stale()
        if (self._stats_due and now - self._last_stats >= STATS_MIN_GAP_S) or (
            now - self._last_stats >= self.cfg.stats_interval_s
        ):
            self._stats_due = False
            self._publish_stats()
        self._fill_window()

    def _collect_acks(self) -> None:
        done: list[Key] = []
        while self._acked:
            mid = self._acked.popleft()
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                done.append(entry[0])
        # An ack can arrive before publish() has returned its mid to us; paho marks the
        # message info as published on PUBACK, so those are caught here.
        for mid, (key, info) in list(self._inflight.items()):
            if info.is_published():
                del self._inflight[mid]
                done.append(key)
        if done:
            visits = [oid for kind, oid in done if kind == "visit"]
            checks = [oid for kind, oid in done if kind == "check"]
            try:
                self.store.mark_delivered(visits, check_ids=checks)
            except Exception:
                # Still published: keep them out of the window until they can be marked.
                for key in done:
                    self._acked_unmarked(key)
                raise
            self._inflight_ids.difference_update(done)
            self.delivered += len(done)

    def _acked_unmarked(self, key: Key) -> None:
        self._unmarked_mid -= 1
        info = mqtt.MQTTMessageInfo(self._unmarked_mid)
        info._set_as_published()
        self._inflight[self._unmarked_mid] = (key, info)

    def _fill_window(self) -> int:
        """Publish waiting visits, then waiting checks, while the window has room."""
        sent = 0
        limit = WINDOW + len(self._inflight)
        for pending in (self.store.pending_outbox, self.store.pending_check_outbox):
            room = WINDOW - len(self._inflight)
            if room <= 0:
                break
            sent += self._send(pending(limit=limit), room)
        return sent

    def _send(self, entries: list[OutboxEntry] | list[CheckOutboxEntry], room: int) -> int:
        client = self.client
        assert client is not None
        sent = 0
        for entry in entries:
            record = entry.visit if isinstance(entry, OutboxEntry) else entry.check
            kind = "visit" if isinstance(entry, OutboxEntry) else "check"
            if (kind, entry.id) in self._inflight_ids:
                continue
            if not self._connected or sent >= room:
                break
            if not record.clock_synced:
                now = time.monotonic()
                if kind not in self._unsynced_since:
                    self._unsynced_since[kind] = now
                    log.info(
                        "mqtt: holding %ss stamped before the wall clock was trusted "
                        "(up to %.0f s) so that they are sent with corrected times",
                        kind,
                        UNSYNCED_HOLD_S,
                    )
                if now - self._unsynced_since[kind] < UNSYNCED_HOLD_S:
                    break  # in order: later ones wait behind it
            else:
                self._unsynced_since.pop(kind, None)
            temperature = self.cfg.publish_temperature
            if isinstance(entry, OutboxEntry):
                payload = encode(visit_payload(entry.visit, temperature, self.sender))
            else:
                payload = encode(check_payload(entry.check, temperature, self.sender))
            info = client.publish(self.topics[kind], payload, qos=1, retain=False)
            # Queued by paho even if the connection dropped just now (rc NO_CONN): it is
            # re-sent after the reconnect, so it stays in flight either way.
            self._inflight[info.mid] = ((kind, entry.id), info)
            self._inflight_ids.add((kind, entry.id))
            sent += 1
        return sent

    def _publish_stats(self) -> None:
        assert self.client is not None
        stats = day_stats(
            self.store,
            self.device_id,
            self.tz,
            self.counters,
            outbox_pending=self.store.outbox_depth(),
        )
        self.client.publish(self.topics["stats"], encode(stats_payload(stats)), qos=1, retain=True)
        self._last_stats = time.monotonic()

    def _publish_discovery(self) -> None:
        assert self.client is not None
        for topic, config in discovery_configs(self.cfg, self.device_id):
            self.client.publish(topic, json.dumps(config), qos=1, retain=True)

    def _trim(self) -> None:
        self._last_trim = time.monotonic()
        max_age_s = self.cfg.outbox_max_age_days * 86400.0
        dropped = self.store.trim_outbox(max_age_s, self.cfg.outbox_max_count)
        if dropped:
            self.trimmed += dropped
            log.warning(
                "mqtt: outbox trimmed: %d unpublished visits dropped from the outbox (older than "
                "mqtt.outbox_max_age_days=%g or beyond mqtt.outbox_max_count=%d); they stay in "
                "the database and reports but will not be sent to MQTT",
                dropped,
                self.cfg.outbox_max_age_days,
                self.cfg.outbox_max_count,
            )
