"""kiosk-collect against a real PostgreSQL and a real mosquitto: rows equal the kiosk's field
for field, redeliveries change nothing, hostile messages become dead letters without
stopping it, nothing is acknowledged before its commit, and its config is checked like
kioskd's."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml

pytest.importorskip("psycopg", reason="kioskd[central] is not installed")
pytest.importorskip("alembic", reason="kioskd[central] is not installed")

import paho.mqtt.client as mqtt  # noqa: E402  (the test's own raw publisher)
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from sqlalchemy import create_engine, func, select  # noqa: E402

from kiosk.central.collector import Collector  # noqa: E402
from kiosk.central.config import EXAMPLE, CollectMqttConfig, CollectorConfig  # noqa: E402
from kiosk.central.stats import StatsCollector  # noqa: E402
from kiosk.centraldb.query import visit_of  # noqa: E402
from kiosk.centraldb.schema import checks, dead_letters, devices, visits  # noqa: E402
from kiosk.config import EX_CONFIG, MqttConfig  # noqa: E402
from kiosk.counters import Counters  # noqa: E402
from kiosk.metrics import MetricsServer  # noqa: E402
from kiosk.mqtt import Publisher  # noqa: E402
from kiosk.store import Store, url_problem  # noqa: E402
from kiosk.wire import Sender, encode, visit_payload  # noqa: E402
from tests.broker import Broker, needs_mosquitto, wait_until  # noqa: E402
from tests.conftest import ROOT, config_key_paths, new_check, new_visit, yaml_key_paths  # noqa: E402
from tests.postgres import TcpProxy, fresh_database  # noqa: E402


def collector(port: int, db_url, client_id: str = "collect-test", **kw) -> Collector:
    cfg = CollectMqttConfig(port=port, client_id=client_id, reconnect_min_s=0.1,
                            reconnect_max_s=0.5)  # fmt: skip
    args = dict(batch_max=500, batch_wait_s=0.05, retry_max_s=0.5, max_message_bytes=16384)
    return Collector(cfg, db_url, **(args | kw))


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(table)) or 0


def raw_client(port: int) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


@pytest.fixture
def pg():
    with fresh_database() as url:
        engine = create_engine(url)
        yield url, engine
        engine.dispose()


@needs_mosquitto
def test_visits_and_checks_arrive_field_for_field_once(tmp_path, pg):
    url, engine = pg
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    stored_visits = [new_visit(device="door-1", age_confidence=0.123456789) for _ in range(30)]
    stored_checks = [new_check(device="door-1"), new_check(status="unmeasured", device="door-1",
                                                           temperature_c=None)]  # fmt: skip
    for v in stored_visits:
        store.add_visit(v, outbox=True)
    for c in stored_checks:
        store.add_check(c, outbox=True)
    with Broker(tmp_path) as broker, collector(broker.port, url) as col:
        assert wait_until(lambda: col.stats.connected, 20)  # its session exists from now on
        cfg = MqttConfig(enabled=True, port=broker.port, discovery=False, reconnect_min_s=0.1)
        pub = Publisher(cfg, "door-1", store, ZoneInfo("Europe/Berlin"), Counters())
        pub.start()
        try:
            assert wait_until(lambda: col.stats.total_stored() == 32, 20), col.stats
            # The same message again (a redelivery): nothing changes.
            sender = Sender("Europe/Berlin", "0.1.0")
            again = raw_client(broker.port)
            payload = encode(visit_payload(stored_visits[0], False, sender))
            again.publish("kiosk/door-1/visit", payload, qos=1).wait_for_publish(5)
            assert wait_until(lambda: col.stats.total_stored() == 33, 10)
            again.disconnect()
        finally:
            pub.close()
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(visits))}
        assert len(rows) == 30
        for v in stored_visits:
            expected = dataclasses.replace(
                v, temperature_c=None, skin_c=None
            )  # not published by default
            assert visit_of(rows[v.id]._mapping) == expected
            assert rows[v.id].timezone == "Europe/Berlin"
        got = {r.id: r for r in conn.execute(select(checks))}
        assert {c.id for c in stored_checks} == set(got)
        assert all(r.temperature_c is None for r in got.values())
        assert got[stored_checks[0].id].status == "fail"
        dev = conn.execute(select(devices)).one()
        assert (dev.device_id, dev.model_version, dev.timezone) == ("door-1", "test-1",
                                                                    "Europe/Berlin")  # fmt: skip
        assert dev.software_version == "0.1.0" and dev.first_seen <= dev.last_seen
    store.close()


@needs_mosquitto
def test_hostile_messages_are_dead_letters_and_the_service_goes_on(tmp_path, pg, caplog):
    url, engine = pg
    good = new_visit(device="door-2")
    sender = Sender("UTC", "0.1.0")
    hostile = [
        ("kiosk/door-2/visit", b"\xff\xfe not utf-8"),
        ("kiosk/door-2/visit", b"[1,2,3]"),
        ("kiosk/door-2/visit", b"{" * 5000),
        ("kiosk/door-2/visit", encode(visit_payload(good, False, sender) | {"age_group": "99"})),
        ("kiosk/door-2/visit", encode(visit_payload(good, False, sender) | {"age_group": "98"})),
        ("kiosk/door-3/visit", encode(visit_payload(good, False, sender))),  # spoofed device
        ("kiosk/door-2/check", encode({"id": "x", "status": "fail"})),
        ("kiosk/door-2/visit", b"x" * 20_000),  # over the packet bound: the broker drops it
        # Valid to the parser (it ignores unknown keys), refused by PostgreSQL's jsonb: the
        # batch goes row by row and only this one becomes a dead letter.
        (
            "kiosk/door-2/visit",
            encode(visit_payload(new_visit(device="door-2"), False, sender) | {"note": "\x00"}),
        ),  # sent as \u0000
    ]
    caplog.set_level(logging.WARNING, logger="kiosk.collect")
    with Broker(tmp_path) as broker, collector(broker.port, url) as col:
        scrape = MetricsServer("127.0.0.1", 0, lambda: StatsCollector(col.stats, col.pending))
        metrics = scrape.start()
        assert wait_until(lambda: col.stats.connected, 10)
        c = raw_client(broker.port)
        for topic, payload in hostile:
            c.publish(topic, payload, qos=1).wait_for_publish(5)
        c.publish("kiosk/door-2/visit", encode(visit_payload(good, False, sender)),
                  qos=1).wait_for_publish(5)  # fmt: skip
        assert wait_until(lambda: col.stats.total_stored() == 1, 10), col.stats
        assert wait_until(lambda: sum(col.stats.dead_letters.values()) == 8, 5), col.stats
        c.disconnect()
        text = urllib.request.urlopen(metrics.url, timeout=5).read().decode()
        metrics.close()
    assert 'kiosk_collect_rows_total{kind="visit"} 1.0' in text
    assert 'kiosk_collect_dead_letters_total{reason="visit.age_group"} 2.0' in text
    assert "kiosk_collect_db_errors_total 0.0" in text
    assert "kiosk_collect_lag_seconds" in text and "kiosk_collect_broker_connected 1.0" in text
    assert col.stats.dead_letters["visit.age_group"] == 2
    assert col.stats.dead_letters["visit.device_id"] == 1
    assert col.stats.dead_letters["database"] == 1
    assert count(engine, dead_letters) == 8 and count(engine, visits) == 1
    with engine.connect() as conn:
        kinds = sorted(conn.scalars(select(dead_letters.c.kind)))
        kept = conn.scalar(select(dead_letters.c.payload).where(dead_letters.c.kind == "visit"))
    assert kinds.count("visit.age_group") == 2 and "check.device_id" in kinds
    assert kept in (b"\xff\xfe not utf-8", b"[1,2,3]", b"{" * 5000)
    logged = [r.getMessage() for r in caplog.records if "dead letter" in r.getMessage()]
    assert sum("(visit.age_group)" in m for m in logged) == 1  # once per kind


@needs_mosquitto
def test_nothing_is_acknowledged_before_its_commit(tmp_path, pg):
    """With the database away, the collector receives but cannot commit: closed then, it has
    acknowledged nothing, and the next collector with the same id gets every message from
    the broker's persistent session."""
    url, engine = pg
    with engine.begin():
        pass
    proxy = TcpProxy((url.host, url.port or 5432)).start()
    via = url.set(host="127.0.0.1", port=proxy.port)
    sent = [new_visit(device="door-4") for _ in range(20)]
    sender = Sender("UTC", "0.1.0")
    with Broker(tmp_path, persistence=True) as broker:
        with collector(broker.port, via, client_id="collect-ack") as col:
            assert wait_until(lambda: col.stats.connected, 20)
            proxy.stop()
            c = raw_client(broker.port)
            for v in sent:
                c.publish("kiosk/door-4/visit", encode(visit_payload(v, False, sender)), qos=1)
            assert wait_until(lambda: col.stats.db_errors >= 2, 10)
            c.disconnect()
        assert col.stats.acked == 0 and col.stats.total_stored() == 0
        proxy.start()
        with collector(broker.port, via, client_id="collect-ack") as col2:
            assert wait_until(lambda: col2.stats.total_stored() == 20, 20), col2.stats
    proxy.stop()
    with engine.connect() as conn:
        assert set(conn.scalars(select(visits.c.id))) == {v.id for v in sent}


# ---- config ----------------------------------------------------------------------------------


def test_example_config_names_every_key_and_loads():
    data = yaml.safe_load(EXAMPLE.read_text())
    assert set(yaml_key_paths(data)) == set(config_key_paths(CollectorConfig))
    run = subprocess.run([sys.executable, "-m", "kiosk.central.cli", "--config", str(EXAMPLE),
                          "--check-config"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"ingest": {"batch_max": 0}}, "ingest.batch_max: must be >= 1"),
        ({"database": {"url": "postgresql://u:hunter2@db/kiosk"}}, "database.url: must not hold"),
        ({"database": {"url": "sqlite:///x.db"}}, "database.url: must be a postgresql"),
        ({"mqtt": {"share_group": "a/b"}}, "mqtt.share_group"),
        ({"mqtt": {"prefix": "kiosk/#"}}, "mqtt.prefix"),
        ({"retention": {"visits_days": 0}}, "retention.visits_days"),
        ({"nonsense": 1}, "nonsense: unknown key"),
    ],
)
def test_bad_config_exits_78_naming_the_key(tmp_path, config, message):
    path = tmp_path / "collect.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, "-m", "kiosk.central.cli", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == EX_CONFIG and message in run.stderr
    assert "hunter2" not in run.stderr + run.stdout


def test_without_the_driver_both_programs_say_how_to_install_it(monkeypatch):
    from kiosk.central import cli

    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert "pip install 'kioskd[postgres]'" in (url_problem("postgresql://kiosk@db/kiosk") or "")
    assert cli.main(["--config", str(EXAMPLE)]) == EX_CONFIG


def test_kioskd_without_the_driver_exits_78_with_the_hint(tmp_path):
    """kioskd with store.url postgresql:// and psycopg hidden (a child that blocks it)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"store": {"url": "postgresql://kiosk@db/kiosk"}}))
    code = ("import sys; sys.modules['psycopg'] = None; from kiosk.service import main; "
            f"sys.exit(main(['--config', {str(cfg)!r}, '--check-config']))")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)  # fmt: skip
    assert run.returncode == EX_CONFIG, run.stderr
    assert "store.url" in run.stderr and "pip install 'kioskd[postgres]'" in run.stderr


# ---- kiosk-report on the central database ----------------------------------------------------


def _central_with(url, events) -> None:
    from kiosk.centraldb import migrate
    from kiosk.centraldb.write import Batch, Registry, write_batch

    engine = create_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        write_batch(conn, Batch(events, []), datetime.now(UTC), Registry())
    engine.dispose()


def _report(capsys, *args: str) -> tuple[int, str, str]:
    from kiosk.report import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_on_the_central_database_by_device_site_and_all(pg, capsys, tmp_path):
    from kiosk.wire import Event

    url, _ = pg
    berlin, tokyo = Sender("Europe/Berlin", "0.1.0"), Sender("Asia/Tokyo", "0.1.0")
    # 23:30 UTC on 9 June is already 10 June in Berlin (CEST) and in Tokyo (JST).
    late = datetime(2026, 6, 9, 23, 30, tzinfo=UTC)
    noon = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)  # 19:00 in Tokyo, 12:00 in Berlin
    events = [
        Event(new_visit(late, device="berlin-door-1", age="25-32", gender="female"), berlin),
        Event(new_visit(noon, device="berlin-door-1", age="25-32", gender="female"), berlin),
        Event(new_visit(noon, device="berlin-door-2", age="60-100", gender="male"), berlin),
        Event(new_visit(late, device="tokyo-door-1", age="25-32", gender="female"), tokyo),
        Event(new_visit(noon + timedelta(hours=6), device="tokyo-door-1"), tokyo),  # 11 June
        Event(new_check(noon, device="berlin-door-2"), berlin),
    ]
    _central_with(url, events)
    db = url.render_as_string(hide_password=False)

    code, out, err = _report(capsys, "daily", "--db", db, "--all-devices", "--date",
                             "2026-06-10", "--format", "json")  # fmt: skip
    assert code == 0, err
    day, total = json.loads(out)
    assert day["date"] == "2026-06-10" and total["date"] == "total"
    assert day["utc_offset"] == "local"  # Berlin and Tokyo summed, each in its own day
    assert day["visitors"] == 4 and day["female_25-32"] == 3 and day["male_60-100"] == 1
    assert day["failed_checks"] == 1 and total["visitors"] == 4

    code, out, err = _report(capsys, "daily", "--db", db, "--site", "berlin-", "--per-device",
                             "--date", "2026-06-10", "--format", "json")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    per = {r["device_id"]: r for r in rows[:-1]}
    assert set(per) == {"berlin-door-1", "berlin-door-2"}
    assert per["berlin-door-1"]["female_25-32"] == 2 and per["berlin-door-1"]["visitors"] == 2
    assert per["berlin-door-2"]["male_60-100"] == 1 and per["berlin-door-2"]["failed_checks"] == 1
    assert per["berlin-door-1"]["utc_offset"] == "UTC+02:00"
    assert rows[-1]["date"] == "total" and rows[-1]["visitors"] == 3

    code, out, err = _report(capsys, "range", "--db", db, "--device", "tokyo-door-1", "--from",
                             "2026-06-10", "--to", "2026-06-11", "--format", "json")  # fmt: skip
    assert code == 0, err
    got = {r["date"]: r["visitors"] for r in json.loads(out)}
    assert got == {"2026-06-10": 1, "2026-06-11": 1, "total": 2}

    code, out, err = _report(capsys, "daily", "--db", db, "--device", "berlin-door-1", "--by",
                             "hour", "--date", "2026-06-10", "--format", "json")  # fmt: skip
    assert code == 0, err
    hours = {r["start"]: r["visitors"] for r in json.loads(out)[:-1]}
    assert len(hours) == 24 and hours["2026-06-10 01:00:00"] == 1
    assert hours["2026-06-10 12:00:00"] == 1 and sum(hours.values()) == 2

    code, out, err = _report(capsys, "export", "--db", db, "--all-devices",
                             "--from", "2026-06-10", "--to", "2026-06-10")  # fmt: skip
    assert code == 0, err
    exported = out.splitlines()[1:]
    assert len(exported) == 4  # the visits of 10 June, each in its own kiosk's day
    assert any("2026-06-10 01:30:00,UTC+02:00" in r for r in exported)  # Berlin's local time

    png = tmp_path / "chart.png"
    code, _, err = _report(capsys, "chart", "--db", db, "--site", "berlin-", "--date",
                           "2026-06-10", "--out", str(png))  # fmt: skip
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, _, err = _report(capsys, "purge", "--db", db, "--older-than", "30")
    assert code == 2 and "kiosk-collect" in err


def test_migrate_then_retention_per_table(pg, tmp_path):
    """--migrate brings a fresh database to Alembic's head and exits; retention deletes
    each table's rows older than its own days, in chunks, and keeps the rest."""
    from kiosk.centraldb import migrate
    from kiosk.centraldb.retention import purge
    from kiosk.centraldb.write import Batch, DeadLetter, Registry, write_batch
    from kiosk.wire import Event

    url, engine = pg
    cfg = tmp_path / "collect.yaml"
    cfg.write_text(yaml.safe_dump({"database": {"url": url.render_as_string(hide_password=False)}}))
    run = subprocess.run([sys.executable, "-m", "kiosk.central.cli", "--config", str(cfg),
                          "--migrate"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with engine.connect() as conn:
        assert migrate.current(conn) == migrate.head()
    now = datetime.now(UTC)
    sender = Sender("UTC", "0.1.0")
    old = [Event(new_visit(now - timedelta(days=40 + i)), sender) for i in range(25)]
    new = [Event(new_visit(now - timedelta(days=1)), sender), Event(new_check(now), sender)]
    dead = [DeadLetter("kiosk/x/visit", "visit", "bad", b"{}")]
    with engine.begin() as conn:
        write_batch(conn, Batch(old + new, dead), now, Registry())
    assert purge(engine, "visits", now - timedelta(days=30), chunk=10) == 25
    assert purge(engine, "checks", now - timedelta(days=30)) == 0
    assert purge(engine, "dead_letters", now + timedelta(seconds=1)) == 1
    assert count(engine, visits) == 1 and count(engine, checks) == 1


def test_the_database_password_never_reaches_the_log(tmp_path):
    """A password from $KIOSK_DB_PASSWORD, a database that refuses: the error is logged and
    retried, the password is not."""
    from tests.broker import free_port

    cfg = tmp_path / "collect.yaml"
    url = f"postgresql://kiosk@127.0.0.1:{free_port()}/kiosk"
    cfg.write_text(yaml.safe_dump({"database": {"url": url}, "mqtt": {"port": free_port()}}))
    env = {**os.environ, "KIOSK_DB_PASSWORD": "pw-Zq81xx", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kiosk.central.cli", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=6)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "cannot migrate the schema" in out and "Connection refused" in out
    assert "pw-Zq81xx" not in out
