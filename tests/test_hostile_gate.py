"""The external gate's listeners under hostile input (issue 13): the real HTTP server on a free
port and a real mosquitto, fed malformed, oversized, slow and flooding clients. After each, a
valid decision must still be taken: nothing crashes, hangs or stops listening."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.config import GateConfig, MqttConfig, ThermalConfig
from kiosk.counters import Counters
from kiosk.gate import build_gate
from kiosk.gate.external import ExternalGate
from kiosk.httplisten import MAX_CONNECTIONS, MAX_REQUEST_S
from tests.broker import Broker, needs_mosquitto, wait_until


def post(port: int, body: bytes) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/decision", body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def raw(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes, return whatever comes back before the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
        except OSError:
            return b""
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def test_content_length_that_is_not_a_plain_number_is_refused_unread():
    gate = ExternalGate(Counters())
    port = gate.serve_http("127.0.0.1", 0)
    try:
        for length in (b"-1", b"+5", b"1e3", b"", b"99999999999999999999"):
            head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n"
            assert status_of(raw(port, head + b"pass")) == 411, length
        chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npass\r\n0\r\n\r\n"
        assert status_of(raw(port, chunked)) == 411
        assert status_of(raw(port, b"POST / HTTP/1.0\r\nContent-Length: 5000\r\n\r\n")) == 413
        assert len(gate._decisions) == 0 and gate.rejected == 0
        assert post(port, b"pass") == 202
    finally:
        gate.close()


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def test_slow_and_surplus_connections_are_cut_off_and_the_listener_keeps_serving():
    gate = ExternalGate(Counters())
    port = gate.serve_http("127.0.0.1", 0)
    slow = []
    try:
        for _ in range(MAX_CONNECTIONS + 4):  # idle clients that never finish a request
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST / HTTP/1.1\r\nX-Slow: ")
            slow.append(s)
        t0 = time.monotonic()
        # Each is closed by the deadline (or at once when over the limit): recv returns b"".
        for s in slow:
            assert closed_by_server(s)
        assert time.monotonic() - t0 < MAX_REQUEST_S + 3
        assert post(port, b"pass") == 202
    finally:
        for s in slow:
            s.close()
        gate.close()


def test_port_in_use_is_a_config_error_naming_the_key():
    from kiosk.config import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        cfg = GateConfig(mode="external", http_port=taken.getsockname()[1])
        with pytest.raises(ConfigError) as err:
            build_gate(cfg, ThermalConfig(), Counters()).start()
    assert err.value.key == "gate.http_port" and "cannot listen" in str(err.value)


def test_flood_is_rate_limited_and_bounded():
    gate = ExternalGate(Counters())
    port = gate.serve_http("127.0.0.1", 0)
    try:
        codes = [post(port, b"pass") for _ in range(ExternalGate.BURST + 20)]
        assert codes.count(429) >= 10 and codes[0] == 202
        for _ in range(ExternalGate.MAX_DECISIONS * 3):
            gate._rate._tokens = 10.0  # as if spread over time: the count bound, not the rate
            gate.submit(b"pass")
        assert len(gate._decisions) == ExternalGate.MAX_DECISIONS
        time.sleep(1.0 / ExternalGate.RATE_PER_S * 2)
        assert post(port, b"fail") == 202
    finally:
        gate.close()


requests = st.one_of(
    st.binary(max_size=3000),
    st.builds(
        lambda method, path, headers, body: (
            f"{method} {path} HTTP/1.1\r\n".encode()
            + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            + b"\r\n"
            + body
        ),
        st.sampled_from(["POST", "GET", "PUT", "POST", "\x00", "P" * 300]),
        st.text(max_size=40).map(lambda t: "/" + t.replace(" ", "").replace("\n", "")),
        st.lists(
            st.tuples(
                st.sampled_from(
                    [b"Content-Length", b"Transfer-Encoding", b"Expect", b"Host", b"X"]
                ),
                st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
            ),
            max_size=6,
        ),
        st.binary(max_size=600)
        | st.sampled_from([b'{"status": "pass", "temperature_c": [36.6]}', b"pass", b"{" * 500]),
    ),
)


@pytest.fixture(scope="module")
def http_gate():
    gate = ExternalGate(Counters())
    port = gate.serve_http("127.0.0.1", 0)
    yield gate, port
    gate.close()


@pytest.fixture(scope="module")
def metrics_port():
    pytest.importorskip("prometheus_client")
    from kiosk.metrics import start_metrics_server

    server = start_metrics_server("127.0.0.1", 0, Counters())
    yield server.port
    server.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=4))
def test_fuzz_metrics_listener_keeps_serving(metrics_port, batch):
    for data in batch:
        raw(metrics_port, data)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        assert resp.status == 200


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=4))
def test_fuzz_http_listener_never_stops_taking_decisions(http_gate, batch):
    gate, port = http_gate
    for data in batch:
        raw(port, data)
    gate._rate._tokens = float(ExternalGate.BURST)
    assert post(port, b"pass") == 202


@needs_mosquitto
def test_malformed_mqtt_decisions_never_stop_the_gate_thread(tmp_path):
    bad = [
        b'{"status": "pass", "temperature_c": [36.6]}',
        b'{"status": "pass", "temperature_c": {"a": 1}}',
        b'{"status": ["pass"]}',
        b'{"status": "pass", "at": 17}',
        b'{"status": "pass", "at": "0001-01-01T00:00:00+14:00"}',
        b'{"status": "pass", "temperature_c": 1e999}',
        b'{"status": "pass", "temperature_c": true}',
        b"[" * 4000,
        b"\xff" * 10,
        b"x" * 100_000,  # over the packet size the gate asked the broker for: dropped there
    ]
    topic = "kiosk/screening/decision"
    with Broker(tmp_path) as broker, gate_and_publisher(broker.port, topic) as (gate, pub):
        for payload in bad:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        pub.publish(topic, b'{"status": "pass", "temperature_c": 36.6}', qos=1)
        assert wait_until(lambda: len(gate._decisions) == 1, 5), gate.rejected
        assert gate.rejected == len(bad) - 1
        assert gate._mqtt._thread.is_alive()
    assert gate._decisions[0].temperature_c == 36.6


@contextmanager
def gate_and_publisher(port: int, topic: str) -> Iterator[tuple[ExternalGate, mqtt.Client]]:
    """An external gate listening on `topic` at the broker, and a client to publish with."""
    cfg = MqttConfig(host="127.0.0.1", port=port)
    gate_cfg = GateConfig(mode="external", mqtt_topic=topic)
    gate = build_gate(gate_cfg, ThermalConfig(), Counters(), cfg).start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        assert wait_until(lambda: gate._mqtt.is_connected(), timeout=5)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        time.sleep(0.3)  # the gate's SUBSCRIBE follows its CONNACK
        yield gate, pub
    finally:
        pub.loop_stop()
        pub.disconnect()
        gate.close()


@pytest.fixture(scope="module")
def mqtt_gate(tmp_path_factory):
    """One broker, gate and publisher for every hypothesis example (each costs ~1 s else)."""
    with Broker(tmp_path_factory.mktemp("fuzzbroker")) as broker:
        with gate_and_publisher(broker.port, "kiosk/fuzz/#") as parts:
            yield parts


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(st.sampled_from(["status", "temperature_c", "at", "x"]), c, max_size=4)
    ),
    max_leaves=8,
)


@needs_mosquitto
@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=500) | json_values.map(json.dumps).map(str.encode), max_size=8))
def test_fuzz_mqtt_listener_takes_every_valid_decision(mqtt_gate, payloads):
    gate, pub = mqtt_gate
    gate._decisions.clear()
    for p in payloads:
        pub.publish("kiosk/fuzz/decision", p, qos=1).wait_for_publish(5)
    gate._rate._tokens = float(ExternalGate.BURST)
    pub.publish("kiosk/fuzz/decision", b"fail", qos=1).wait_for_publish(5)
    assert wait_until(lambda: any(d.status == "fail" for d in gate._decisions), 5)
    assert gate._mqtt._thread.is_alive()


def test_metrics_endpoint_survives_idle_and_oversized_clients():
    pytest.importorskip("prometheus_client")
    from kiosk.metrics import start_metrics_server

    server = start_metrics_server("127.0.0.1", 0, Counters())
    idle = []
    try:
        for _ in range(MAX_CONNECTIONS + 4):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
            idle.append(s)
        huge = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 60_000 + b"\r\n" * 2
        assert raw(server.port, huge * 3) is not None
        assert all(closed_by_server(s) for s in idle)
        with urllib.request.urlopen(f"{server.url}", timeout=5) as resp:
            assert b"kiosk_frames_total" in resp.read()
    finally:
        for s in idle:
            s.close()
        server.close()


@pytest.fixture(scope="module")
def publisher(tmp_path_factory):
    """A real Publisher on a real broker, and a client to throw things at its subscriptions."""
    from zoneinfo import ZoneInfo

    from kiosk.mqtt import Publisher
    from kiosk.store import Store

    folder = tmp_path_factory.mktemp("publisher")
    with Broker(folder) as broker:
        store = Store(f"sqlite:///{folder / 'kiosk.db'}")
        cfg = MqttConfig(enabled=True, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5)
        p = Publisher(cfg, "door", store, ZoneInfo("UTC"), Counters())
        p.start()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        try:
            assert wait_until(lambda: p.connected, 10)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            yield p, store, client
        finally:
            client.loop_stop()
            client.disconnect()
            p.close()
            store.close()


@needs_mosquitto
@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=300) | st.sampled_from([b"online", b" ONLINE ", b"x" * 20_000]),
                max_size=6))  # fmt: skip
def test_fuzz_home_assistant_status_never_stops_publishing(publisher, payloads):
    from datetime import UTC, datetime

    from kiosk.visit import Visit

    p, store, client = publisher
    for payload in payloads:
        client.publish("homeassistant/status", payload, qos=1).wait_for_publish(5)
    now = datetime.now(UTC)
    store.add_visit(Visit("door", now, now, "25-32", 0.9, "male", 0.9, None, "off", 9, "m"), True)
    p.wake()
    assert wait_until(lambda: store.outbox_depth() == 0, 10)
    assert p.connected and p._thread.is_alive() and p.client._thread.is_alive()
