"""Durability against a real mosquitto: broker outages, kill -9, restarts with a backlog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.exc import SQLAlchemyError

from kiosk.counters import Counters
from kiosk.mqtt import Publisher
from kiosk.store import Store
from tests.broker import Broker, Subscriber, free_port, needs_mosquitto, wait_until
from tests.kioskd import run_kioskd, start_kioskd, stored_visits, write_config
from tests.test_mqtt import DEV, fast_cfg, make_visit

pytestmark = needs_mosquitto
ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("mqtt_child.py")
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def db_ids(store: Store, device: str = DEV) -> set[str]:
    return {v.id for v in store.visits(*EVER, device_id=device)}


def received_ids(sub: Subscriber, device: str = DEV) -> set[str]:
    return {json.loads(m.payload)["id"] for m in sub.on(f"kiosk/{device}/visit")}


class Child:
    """tests/mqtt_child.py in its own process; its output lines collected by a thread."""

    def __init__(self, db: str, port: int, device: str, visits: int = 0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, str(CHILD), "--db", db, "--port", str(port), "--device", device]
        self.proc = subprocess.Popen(
            [*cmd, "--visits", str(visits)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, text: str, timeout: float = 15.0) -> bool:
        return wait_until(lambda: any(text in line for line in self.lines), timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def children():
    started: list[Child] = []
    yield started
    for c in started:
        if c.proc.poll() is None:
            c.kill9()


def test_broker_down_10s_while_visits_are_stored_every_visit_arrives(tmp_path, store):
    broker = Broker(tmp_path, persistence=True).start()
    # A persistent session, so that what is published while the watcher reconnects is kept.
    sub = Subscriber(broker.port, ["kiosk/#"], client_id="outage-watch", clean_session=False)
    sub.start()
    pub = Publisher(
        fast_cfg(broker.port, reconnect_min_s=0.2, reconnect_max_s=1.0),
        DEV,
        store,
        ZoneInfo("UTC"),
        Counters(),
    )
    pub.start()
    stop_storing = threading.Event()

    def store_visits() -> None:
        while not stop_storing.is_set():
            store.add_visit(make_visit(), outbox=True)
            pub.wake()
            time.sleep(0.1)

    storer = threading.Thread(target=store_visits, daemon=True)
    try:
        assert wait_until(lambda: pub.connected, 5)
        storer.start()
        assert sub.wait_for(lambda s: len(received_ids(s)) >= 5, 5)
        broker.stop()
        down_at = time.monotonic()
        assert wait_until(lambda: not pub.connected, 3)
        before = store.outbox_depth()
        time.sleep(max(0.0, 10.5 - (time.monotonic() - down_at)))
        assert store.outbox_depth() > before + 40  # visits kept being stored meanwhile
        assert not pub.connected
        broker.start()
        time.sleep(1.5)  # and while it reconnects
        stop_storing.set()
        storer.join(5)
        expected = db_ids(store)
        assert len(expected) > 80
        assert sub.wait_for(lambda s: received_ids(s) == expected, 10), (
            f"{len(expected - received_ids(sub))} of {len(expected)} visits never arrived"
        )
        assert wait_until(lambda: store.outbox_depth() == 0, 5)
        assert pub.connects >= 2
    finally:
        stop_storing.set()
        pub.close(timeout=2)
        sub.stop()
        broker.stop()
        store.close()


def test_daemon_killed_while_broker_down_backlog_sent_after_restart(tmp_path, children):
    db = f"sqlite:///{tmp_path / 'kiosk.db'}"
    port = free_port()  # no broker yet
    first = Child(db, port, DEV, visits=6)
    children.append(first)
    assert first.wait_line("idle"), first.output()
    assert first.wait_line("disconnected"), first.output()
    first.kill9()
    assert "cannot connect to broker" in first.output()
    store = Store(db)
    try:
        expected = db_ids(store)
        assert len(expected) == 6 and store.outbox_depth() == 6
        with Broker(tmp_path, port=port) as broker, Subscriber(broker.port, ["kiosk/#"]) as sub:
            second = Child(db, port, DEV)
            children.append(second)
            assert sub.wait_for(lambda s: received_ids(s) == expected, 10), second.output()
            assert wait_until(lambda: store.outbox_depth() == 0, 5)
            second.kill9()
    finally:
        store.close()


def test_lwt_offline_after_kill9(tmp_path, children):
    db = f"sqlite:///{tmp_path / 'kiosk.db'}"
    status = f"kiosk/{DEV}/status"
    with Broker(tmp_path) as broker, Subscriber(broker.port, [status]) as sub:
        child = Child(db, broker.port, DEV, visits=1)
        children.append(child)
        assert sub.wait_for(lambda s: s.payloads(status) == ["online"], 15), child.output()
        child.kill9()
        assert sub.wait_for(lambda s: s.payloads(status) == ["online", "offline"], 5), (
            broker.log_text()
        )
        with Subscriber(broker.port, [status]) as late:
            assert late.wait_for(lambda s: s.payloads(status) == ["offline"], 3)
            assert late.on(status)[0].retain


# -- the real daemon ----------------------------------------------------------------------


def kioskd_config(tmp_path: Path, port: int, **camera):
    mqtt = {"enabled": True, "port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}
    return write_config(
        tmp_path,
        mqtt=mqtt,
        camera={"source": "demo", "realtime": False, **camera},
        clock={"trust": "always"},  # else this container's clock holds visits back (docs/mqtt.md)
    )


def _stored_count(tmp_path: Path) -> int:
    try:
        return len(stored_visits(tmp_path))
    except SQLAlchemyError:  # the daemon is still creating the schema
        return 0


def test_kioskd_killed_while_broker_down_backlog_sent_after_restart(tmp_path):
    port = free_port()  # no broker yet
    cfg = kioskd_config(tmp_path, port)
    proc = start_kioskd(cfg)
    try:
        assert wait_until(lambda: _stored_count(tmp_path) >= 2, 40), "no visits stored"
    finally:
        proc.kill()  # SIGKILL: no clean shutdown
        out = proc.communicate(timeout=10)[0]
    assert "cannot connect to broker" in out, out
    first = {v.id for v in stored_visits(tmp_path)}
    with Broker(tmp_path, port=port) as broker, Subscriber(port, ["kiosk/#"]) as sub:
        r = run_kioskd(cfg, "--duration", "4")
        assert r.returncode == 0, r.stderr
        assert sub.wait_for(lambda s: first <= received_ids(s, "test-kiosk"), 5), r.stderr
        # Everything stored by either run was delivered, and the outbox is empty.
        assert sub.wait_for(
            lambda s: received_ids(s, "test-kiosk") == {v.id for v in stored_visits(tmp_path)}, 3
        )
        store = Store(f"sqlite:///{tmp_path / 'state' / 'kiosk.db'}", read_only=True)
        try:
            assert store.outbox_depth() == 0
        finally:
            store.close()
        assert sub.payloads("kiosk/test-kiosk/status")[-1] == "offline"  # clean stop
        assert "published" in r.stderr and broker.running


def test_lwt_offline_after_kill9_of_kioskd(tmp_path):
    status = "kiosk/test-kiosk/status"
    with Broker(tmp_path) as broker, Subscriber(broker.port, [status]) as sub:
        proc = start_kioskd(kioskd_config(tmp_path, broker.port, realtime=True, loop=True))
        try:
            assert sub.wait_for(lambda s: s.payloads(status) == ["online"], 30)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
        assert sub.wait_for(lambda s: s.payloads(status) == ["online", "offline"], 5), (
            broker.log_text()
        )
        with Subscriber(broker.port, [status]) as late:
            assert late.wait_for(lambda s: s.payloads(status) == ["offline"], 3)
            assert late.on(status)[0].retain


def test_delivered_only_after_the_broker_acknowledges(tmp_path, store):
    """A frozen broker (SIGSTOP) receives the bytes but sends no PUBACK: nothing is marked."""
    with Broker(tmp_path) as broker, Subscriber(broker.port, ["kiosk/+/visit"]) as sub:
        pub = Publisher(fast_cfg(broker.port, keepalive_s=60), DEV, store, ZoneInfo("UTC"))
        pub.start()
        try:
            assert wait_until(lambda: pub.connected, 5)
            time.sleep(0.3)  # online, discovery and stats acknowledged
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                store.add_visit(make_visit(), outbox=True)
                pub.wake()
                assert wait_until(lambda: pub._inflight, 2)  # handed to paho, sent
                time.sleep(1.0)
                assert store.outbox_depth() == 1 and pub.delivered == 0
            finally:
                broker.proc.send_signal(signal.SIGCONT)
            assert wait_until(lambda: store.outbox_depth() == 0, 5)
            assert pub.delivered == 1
            assert sub.wait_for(lambda s: len(received_ids(s)) == 1, 3)
        finally:
            pub.close(timeout=2)
            store.close()
