"""MQTT publisher against a real mosquitto: payloads, retained flags, stats, discovery, auth, TLS.

The outage, restart and kill -9 cases are in test_mqtt_outage.py.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kiosk import __version__
from kiosk.config import ConfigError, MqttConfig, parse_config
from kiosk.counters import Counters
from kiosk.days import today
from kiosk.daystats import day_stats
from kiosk.discovery import discovery_configs
from kiosk.labels import AGE_GROUPS
from kiosk.mqtt import Publisher
from kiosk.visit import Check, Visit
from kiosk.wire import stats_payload
from tests.broker import Broker, Subscriber, add_user, make_tls_files, needs_mosquitto, wait_until
from tests.conftest import new_visit

DEV = "kiosk-test_1"
VISIT_KEYS = {
    "id",
    "device_id",
    "started_at",
    "ended_at",
    "age_group",
    "age_confidence",
    "gender",
    "gender_confidence",
    "temperature_status",
    "frames",
    "model_version",
    "timezone",
    "software_version",
}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ISO_Z_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")  # a record's own times


def make_visit(
    age="25-32", gender="female", ended: datetime | None = None, temp=36.6, device=DEV
) -> Visit:
    """The shared factory with this file's values (a 3 s visit ending at `ended`)."""
    return new_visit(
        ended=ended,
        age=age,
        gender=gender,
        device=device,
        temperature_c=temp,
        duration_s=3,
        age_confidence=0.81234,
        frames=9,
        model_version="test",
    )


def fast_cfg(port: int, **kw) -> MqttConfig:
    base = dict(enabled=True, port=port, reconnect_min_s=0.1, reconnect_max_s=0.5)
    return MqttConfig(**(base | kw))


@pytest.fixture
def publishers():
    started: list[Publisher] = []
    yield started
    for p in started:
        p.close(timeout=2)


def run_publisher(publishers, cfg, store, tz="UTC", counters=None) -> Publisher:
    p = Publisher(cfg, DEV, store, ZoneInfo(tz), counters or Counters())
    publishers.append(p)
    p.start()
    return p


def is_discovery(m) -> bool:
    return m.topic.startswith("homeassistant/") and m.topic.endswith("/config") and bool(m.payload)


def last_json(sub: Subscriber, topic: str) -> dict:
    return json.loads(sub.payloads(topic)[-1])


# -- pure functions -----------------------------------------------------------------------


def test_stats_count_the_local_day(store):
    berlin = ZoneInfo("Europe/Berlin")
    # 23:30 UTC on the 27th is 00:30 on the 28th in Berlin: it belongs to the local 28th.
    late = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    store.add_visit(make_visit("25-32", "female", ended=late))
    store.add_visit(make_visit("60-100", "male", ended=late - timedelta(hours=1)))  # 27th local
    store.add_visit(make_visit("25-32", "male", ended=late + timedelta(hours=3)))
    store.add_check(Check(device_id=DEV, at=late, status="fail", temperature_c=38.4))
    store.add_check(Check(device_id=DEV, at=late, status="unmeasured", temperature_c=None))
    store.add_check(
        Check(device_id=DEV, at=late - timedelta(hours=2), status="fail", temperature_c=38.0)
    )
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    s = stats_payload(day_stats(store, DEV, berlin, Counters(), now=now))
    assert s["date"] == "2026-11-28"
    assert s["visitors"] == 2
    assert s["gender"] == {"female": 1, "male": 1}
    assert s["age_groups"]["25-32"] == 2 and sum(s["age_groups"].values()) == 2
    assert list(s["age_groups"]) == list(AGE_GROUPS)
    assert (s["failed_checks"], s["unmeasured_checks"]) == (1, 1)
    assert s["last_visit"]["gender"] == "male" and ISO_Z.match(s["last_visit"]["at"])
    # In UTC the same instant counts the 28th UTC only.
    assert stats_payload(day_stats(store, DEV, ZoneInfo("UTC"), None, now=now))["visitors"] == 1


def test_local_day_is_dst_safe():
    tz = ZoneInfo("Europe/Berlin")
    day = today(datetime(2026, 3, 29, 12, tzinfo=UTC), tz)
    start, end = day.start, day.end
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)


def test_discovery_ids_and_availability():
    cfg = MqttConfig(enabled=True, discovery_prefix="ha")
    configs = discovery_configs(cfg, "shop.door 1")
    names = {c["name"] for _, c in configs}
    assert {
        "Visitors today",
        "Female today",
        "Male today",
        "Failed checks today",
        "Unmeasured checks today",
        "Last visit",
        "Camera",
        "Clock",
        "MQTT",
    } <= names
    assert {f"Age {g} today" for g in AGE_GROUPS} <= names
    binary = {"Clock", "MQTT"}
    for topic, c in configs:
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", c["unique_id"])
        component = "binary_sensor" if c["name"] in binary else "sensor"
        assert topic == f"ha/{component}/{c['unique_id']}/config"
        assert c["device"]["identifiers"] == ["kiosk_shop_door_1"]
        assert c["origin"] == {"name": "kiosk", "sw_version": __version__}
        if c["name"] == "MQTT":  # reads status itself: "disconnected", not "unavailable"
            assert c["state_topic"] == "kiosk/shop.door 1/status" and "availability_topic" not in c
            assert (c["payload_on"], c["payload_off"], c["device_class"]) == (
                "online", "offline", "connectivity",
            )  # fmt: skip
        else:
            assert c["availability_topic"] == "kiosk/shop.door 1/status"
    assert len({c["unique_id"] for _, c in configs}) == len(configs)


def test_config_rejects_wildcard_prefix():
    with pytest.raises(ConfigError) as e:
        parse_config({"mqtt": {"prefix": "kiosk/#"}})
    assert e.value.key == "mqtt.prefix"
    with pytest.raises(ConfigError) as e:
        parse_config({"mqtt": {"reconnect_min_s": 5, "reconnect_max_s": 1}})
    assert e.value.key == "mqtt.reconnect_max_s"


def test_missing_password_file_is_a_config_error(store, tmp_path):
    cfg = MqttConfig(enabled=True, username="u", password_env="", password_file=str(tmp_path / "x"))
    with pytest.raises(ConfigError) as e:
        Publisher(cfg, DEV, store, ZoneInfo("UTC"))
    assert e.value.key == "mqtt.password_file"


def test_disabled_publisher_does_nothing(store):
    p = Publisher(MqttConfig(enabled=False), DEV, store, ZoneInfo("UTC"))
    p.start()
    p.wake()
    p.close()
    assert p.client is None


# -- against mosquitto --------------------------------------------------------------------


@needs_mosquitto
def test_payloads_topics_and_retained_flags(tmp_path, store, publishers):
    for i in range(3):
        store.add_visit(make_visit(AGE_GROUPS[i], "male" if i else "female"), outbox=True)
    store.add_check(Check(device_id=DEV, at=datetime.now(UTC), status="fail", temperature_c=38.2))
    base = f"kiosk/{DEV}"
    with Broker(tmp_path) as broker, Subscriber(broker.port, ["#"]) as sub:
        counters = Counters()
        counters.fps = 14.5
        p = run_publisher(publishers, fast_cfg(broker.port), store, counters=counters)
        assert sub.wait_for(lambda s: len(s.on(f"{base}/visit")) == 3, 5)
        assert sub.payloads(f"{base}/status") == ["online"]
        visits = [json.loads(m.payload) for m in sub.on(f"{base}/visit")]
        assert all(m.qos == 1 for m in sub.on(f"{base}/visit"))
        for v in visits:
            assert set(v) == VISIT_KEYS  # no temperature_c unless configured
            assert v["device_id"] == DEV
            assert ISO_Z_US.match(v["started_at"]) and ISO_Z_US.match(v["ended_at"])
        assert [v["age_group"] for v in visits] == list(AGE_GROUPS[:3])  # outbox order
        assert wait_until(lambda: store.outbox_depth() == 0, 3)

        assert sub.wait_for(lambda s: last_json(s, f"{base}/stats")["visitors"] == 3, 3)
        stats = last_json(sub, f"{base}/stats")
        assert stats["gender"] == {"female": 1, "male": 2}
        assert stats["failed_checks"] == 1 and stats["unmeasured_checks"] == 0
        assert stats["fps"] == 14.5 and stats["uptime_s"] >= 0
        assert stats["last_visit"]["age_group"] in AGE_GROUPS[:3]
        disc = [m for m in sub.messages if is_discovery(m)]
        assert len(disc) == len(discovery_configs(p.cfg, DEV))

        # A new visit: published, and stats follow at once.
        store.add_visit(make_visit("60-100", "male"), outbox=True)
        p.wake()
        assert sub.wait_for(lambda s: len(s.on(f"{base}/visit")) == 4, 3)
        assert sub.wait_for(lambda s: last_json(s, f"{base}/stats")["visitors"] == 4, 3)
        assert last_json(sub, f"{base}/stats")["age_groups"]["60-100"] == 1

        # A late subscriber sees status, stats and discovery as retained; visits are not.
        with Subscriber(broker.port, ["#"]) as late:
            assert late.wait_for(lambda s: len(s.messages) >= 2 + len(disc), 3)
            time.sleep(0.2)
            topics = {m.topic: m.retain for m in late.messages}
            assert topics[f"{base}/status"] and topics[f"{base}/stats"]
            assert all(topics[m.topic] for m in disc)
            assert not any(t.endswith("/visit") for t in topics)
            assert late.payloads(f"{base}/status") == ["online"]

        # Home Assistant restarting asks for discovery again.
        n = len(disc)
        sub.client.publish("homeassistant/status", "online")
        assert sub.wait_for(
            lambda s: sum(map(is_discovery, s.messages)) == 2 * n,
            3,
        )
        p.close()
        assert sub.wait_for(lambda s: s.payloads(f"{base}/status")[-1] == "offline", 3)
        with Subscriber(broker.port, [f"{base}/status"]) as late:
            assert late.wait_for(lambda s: s.payloads(f"{base}/status") == ["offline"], 3)
            assert late.messages[0].retain


@needs_mosquitto
def test_temperature_only_when_allowed_and_periodic_stats(tmp_path, store, publishers):
    store.add_visit(make_visit(temp=37.123), outbox=True)
    with Broker(tmp_path) as broker, Subscriber(broker.port, [f"kiosk/{DEV}/#"]) as sub:
        cfg = fast_cfg(
            broker.port, publish_temperature=True, stats_interval_s=0.25, discovery=False
        )
        run_publisher(publishers, cfg, store)
        assert sub.wait_for(lambda s: s.on(f"kiosk/{DEV}/visit"), 5)
        v = json.loads(sub.payloads(f"kiosk/{DEV}/visit")[0])
        assert set(v) == VISIT_KEYS | {"temperature_c"} and v["temperature_c"] == 37.123
        assert sub.wait_for(lambda s: len(s.on(f"kiosk/{DEV}/stats")) >= 4, 3)
    # discovery off: nothing under homeassistant/ (checked on a fresh broker below)
    with Broker(tmp_path / "b2") as broker, Subscriber(broker.port, ["#"]) as sub:
        run_publisher(publishers, fast_cfg(broker.port, discovery=False), store)
        assert sub.wait_for(lambda s: s.on(f"kiosk/{DEV}/stats"), 5)
        assert not [m for m in sub.messages if m.topic.startswith("homeassistant/")]


@needs_mosquitto
def test_password_auth(tmp_path, store, publishers, monkeypatch):
    pw = tmp_path / "passwd"
    add_user(pw, "kiosk", "s3cret pass")
    add_user(pw, "watcher", "w")
    secret = tmp_path / "mqtt_password"
    secret.write_text("s3cret pass\n")
    store.add_visit(make_visit(), outbox=True)
    with (
        Broker(tmp_path, password_file=pw) as broker,
        Subscriber(broker.port, ["#"], username="watcher", password="w") as sub,
    ):
        # from a credentials file
        cfg = fast_cfg(broker.port, username="kiosk", password_env="", password_file=str(secret))
        p = run_publisher(publishers, cfg, store)
        assert sub.wait_for(lambda s: s.on(f"kiosk/{DEV}/visit"), 5)
        p.close()
        # from the environment
        monkeypatch.setenv("KIOSK_MQTT_PASSWORD", "s3cret pass")
        store.add_visit(make_visit(), outbox=True)
        run_publisher(publishers, fast_cfg(broker.port, username="kiosk"), store)
        ids = {v.id for v in store.visits(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))}

        def got_all(s):
            return {json.loads(m.payload)["id"] for m in s.on(f"kiosk/{DEV}/visit")} == ids

        assert sub.wait_for(got_all, 5), broker.log_text()
        assert wait_until(lambda: store.outbox_depth() == 0, 3)


@needs_mosquitto
def test_wrong_password_logs_keeps_visits_and_retries(
    tmp_path, store, publishers, monkeypatch, caplog
):
    pw = tmp_path / "passwd"
    add_user(pw, "kiosk", "right")
    monkeypatch.setenv("KIOSK_MQTT_PASSWORD", "wrong")
    caplog.set_level(logging.DEBUG, logger="kiosk.mqtt")
    with Broker(tmp_path, password_file=pw) as broker:
        p = run_publisher(publishers, fast_cfg(broker.port, username="kiosk"), store)
        for _ in range(3):
            store.add_visit(make_visit(), outbox=True)
            p.wake()
        # retries continue: several refused attempts within a couple of seconds
        assert wait_until(lambda: p._fail_count >= 3, 5), broker.log_text()
        assert not p.connected
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        refused = [w for w in warnings if "refused the connection" in w]
        assert refused, warnings
        assert "mqtt.username" in refused[0] and "password" in refused[0]
        assert "KIOSK_MQTT_PASSWORD" in refused[0]
        assert len(refused) == 1  # said clearly once, not once per retry
        assert store.visit_count() == 3 and store.outbox_depth() == 3


@needs_mosquitto
def test_tls_with_ca_and_client_certificate(tmp_path, store, publishers):
    tls = make_tls_files(tmp_path / "tls")
    store.add_visit(make_visit(), outbox=True)
    with (
        Broker(tmp_path, tls=tls, require_client_cert=True) as broker,
        Subscriber(broker.port, ["#"], tls=tls) as sub,
    ):
        cfg = fast_cfg(
            broker.port,
            host="localhost",
            tls=True,
            ca_file=str(tls.ca),
            cert_file=str(tls.client_cert),
            key_file=str(tls.client_key),
        )
        run_publisher(publishers, cfg, store)
        assert sub.wait_for(lambda s: s.on(f"kiosk/{DEV}/visit"), 5), broker.log_text()
        assert wait_until(lambda: store.outbox_depth() == 0, 3)


@needs_mosquitto
def test_tls_checks_the_hostname_and_the_ca(tmp_path, store, publishers, caplog):
    tls = make_tls_files(tmp_path / "tls", hostname="broker.example")
    other = make_tls_files(tmp_path / "other")
    store.add_visit(make_visit(), outbox=True)
    caplog.set_level(logging.WARNING, logger="kiosk.mqtt")
    with Broker(tmp_path, tls=tls) as broker:
        # The certificate names broker.example and 127.0.0.1, not localhost: refused.
        cfg = fast_cfg(broker.port, host="localhost", tls=True, ca_file=str(tls.ca))
        bad_host = run_publisher(publishers, cfg, store)
        # A CA that did not sign the server certificate: refused.
        bad_ca = Publisher(
            fast_cfg(broker.port, tls=True, ca_file=str(other.ca)), "other", store, ZoneInfo("UTC")
        )
        publishers.append(bad_ca)
        bad_ca.start()
        assert wait_until(lambda: bad_host._fail_count >= 1 and bad_ca._fail_count >= 1, 5)
        assert not bad_host.connected and not bad_ca.connected
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "cannot connect to broker" in text and "certificate" in text.lower()
        assert store.outbox_depth() == 1
        bad_host.close()
        bad_ca.close()
        # tls_insecure turns only the hostname check off.
        cfg = fast_cfg(
            broker.port, host="localhost", tls=True, ca_file=str(tls.ca), tls_insecure=True
        )
        ok = run_publisher(publishers, cfg, store)
        assert wait_until(lambda: store.outbox_depth() == 0, 5)
        assert ok.connected


@needs_mosquitto
def test_outbox_trim_logs_clearly(tmp_path, store, publishers, caplog):
    old = datetime.now(UTC) - timedelta(days=3)
    for _ in range(2):
        store.add_visit(make_visit(ended=old), outbox=True)
    for _ in range(5):
        store.add_visit(make_visit(), outbox=True)
    caplog.set_level(logging.WARNING, logger="kiosk.mqtt")
    port = Broker(tmp_path).port  # nothing listens there: the publisher only trims
    cfg = fast_cfg(port, outbox_max_age_days=1, outbox_max_count=4)
    p = run_publisher(publishers, cfg, store)
    assert p.trimmed == 3
    assert store.outbox_depth() == 4 and store.visit_count() == 7
    msg = next(r.getMessage() for r in caplog.records if "outbox trimmed" in r.getMessage())
    assert "3 unpublished visits" in msg and "outbox_max_count=4" in msg


@needs_mosquitto
def test_kiosk_watch_shows_status_visits_and_stats(tmp_path, store, publishers):
    import subprocess
    import sys

    with Broker(tmp_path) as broker:
        run_publisher(publishers, fast_cfg(broker.port), store)
        assert wait_until(lambda: publishers[0].connected, 5)
        cmd = [sys.executable, "-m", "kiosk.watch", "--port", str(broker.port),
               "--device", DEV, "--count", "1", "--timeout", "20", "--timezone", "UTC"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[1])  # fmt: skip
        first = [proc.stdout.readline()]
        while first[-1] and not first[-1].startswith("# watching"):  # until subscribed
            first.append(proc.stdout.readline())
        store.add_visit(make_visit("48-53", "male"), outbox=True)
        publishers[0].wake()
        out, err = proc.communicate(timeout=30)
        out = "".join(first) + out
    assert proc.returncode == 0, err
    assert f"{DEV} online" in out
    assert f"{DEV} visit: male 48-53 (90% / 81%), temperature pass" in out
    assert re.search(rf"{DEV} today \(\d{{4}}-\d\d-\d\d\): \d+ visitors", out), out


@needs_mosquitto
def test_visits_from_an_untrusted_clock_wait_for_the_restamp(tmp_path, store, publishers,
                                                             monkeypatch):  # fmt: skip
    import dataclasses

    import kiosk.mqtt

    early = dataclasses.replace(make_visit(ended=datetime(2025, 1, 1, tzinfo=UTC)),
                                clock_synced=False)  # fmt: skip
    store.add_visit(early, outbox=True)
    topic = f"kiosk/{DEV}/visit"
    with Broker(tmp_path) as broker, Subscriber(broker.port, [topic]) as sub:
        p = run_publisher(publishers, fast_cfg(broker.port), store)
        assert wait_until(lambda: p.connected, 5)
        time.sleep(0.5)
        assert not sub.on(topic) and store.outbox_depth() == 1  # held
        store.restamp({early.id: timedelta(days=600)}, {})  # the clock became trusted
        p.wake()
        assert sub.wait_for(lambda s: s.on(topic), 5)
        sent = json.loads(sub.payloads(topic)[0])
        assert set(sent) == VISIT_KEYS and sent["ended_at"].startswith("2026-08-24")
        # When the clock never becomes trusted they go after the hold, flagged.
        monkeypatch.setattr(kiosk.mqtt, "UNSYNCED_HOLD_S", 0.5)
        late = dataclasses.replace(make_visit(), clock_synced=False)
        store.add_visit(late, outbox=True)
        p.wake()
        assert sub.wait_for(lambda s: len(s.on(topic)) == 2, 5)
        assert json.loads(sub.payloads(topic)[1])["clock_synced"] is False


@needs_mosquitto
def test_checks_are_published_from_their_outbox(tmp_path, store, publishers):
    """A failed and an unmeasured check go out on `check` (QoS 1, no face data), survive a
    restart of the publisher undelivered, and are marked delivered once acknowledged."""
    fail = Check(device_id=DEV, at=datetime.now(UTC), status="fail", temperature_c=38.4)
    store.add_check(fail, outbox=True)
    store.add_check(Check(DEV, datetime.now(UTC), "unmeasured", None), outbox=True)
    store.add_check(Check(DEV, datetime.now(UTC), "fail", 38.0))  # no outbox: not sent
    assert store.outbox_depth() == 2
    with Broker(tmp_path) as broker, Subscriber(broker.port, ["#"]) as sub:
        run_publisher(publishers, fast_cfg(broker.port), store, tz="Europe/Berlin")
        topic = f"kiosk/{DEV}/check"
        assert sub.wait_for(lambda s: len(s.on(topic)) == 2, 5)
        sent = [json.loads(m.payload) for m in sub.on(topic)]
        assert all(m.qos == 1 and not m.retain for m in sub.on(topic))
        assert [c["status"] for c in sent] == ["fail", "unmeasured"]
        assert sent[0]["id"] == fail.id and sent[0]["timezone"] == "Europe/Berlin"
        assert set(sent[0]) == {"id", "device_id", "at", "status", "timezone",
                                "software_version"}  # fmt: skip
        assert wait_until(lambda: store.outbox_depth() == 0, 3)
