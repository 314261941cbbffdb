"""The Prometheus endpoint: real HTTP scrapes of a real prometheus-client server."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime

import pytest

pytest.importorskip("prometheus_client", reason="prometheus-client (extra kiosk[metrics])")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kiosk.counters import Counters  # noqa: E402
from kiosk.metrics import start_metrics_server  # noqa: E402


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def counters() -> Counters:
    return Counters()


def test_counters_are_read_at_scrape_time(counters: Counters) -> None:
    depth = [3]
    server = start_metrics_server("127.0.0.1", 0, counters, lambda: depth[0])
    try:
        first = scrape(server.url)
        assert first[("kiosk_frames_total", ())] == 0
        assert first[("kiosk_mqtt_outbox_depth", ())] == 3

        counters.frame_done(100.0)
        counters.frame_done(100.1)
        counters.frames_rejected = 2
        counters.faces = 7
        counters.visits = 4
        counters.visits_dropped = 1
        counters.checks["pass"] += 4
        counters.checks["fail"] += 2
        counters.checks["unmeasured"] += 1
        counters.source_reconnects = 3
        counters.thermal_reconnects = 5
        counters.thermal_rejected = 6
        counters.last_visit_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        depth[0] = 11

        m = scrape(server.url)
        assert m[("kiosk_frames_total", ())] == 2
        assert m[("kiosk_frames_rejected_total", ())] == 2
        assert m[("kiosk_fps", ())] == pytest.approx(10.0)
        assert m[("kiosk_faces_detected_total", ())] == 7
        assert m[("kiosk_visits_total", (("outcome", "stored"),))] == 4
        assert m[("kiosk_visits_total", (("outcome", "dropped"),))] == 1
        assert m[("kiosk_temperature_checks_total", (("status", "pass"),))] == 4
        assert m[("kiosk_temperature_checks_total", (("status", "fail"),))] == 2
        assert m[("kiosk_temperature_checks_total", (("status", "unmeasured"),))] == 1
        assert m[("kiosk_source_reconnects_total", (("source", "camera"),))] == 3
        assert m[("kiosk_source_reconnects_total", (("source", "thermal"),))] == 5
        assert m[("kiosk_thermal_frames_rejected_total", ())] == 6
        assert m[("kiosk_last_visit_timestamp_seconds", ())] == pytest.approx(1767323045.0)
        assert m[("kiosk_mqtt_outbox_depth", ())] == 11
        assert m[("kiosk_uptime_seconds", ())] > 0
        assert ("kiosk_last_frame_age_seconds", ()) in m
        assert m[("process_resident_memory_bytes", ())] > 0
    finally:
        server.close()


def test_inference_histogram_drains_counters(counters: Counters) -> None:
    server = start_metrics_server("127.0.0.1", 0, counters)
    try:
        counters.inference_ms.extend([0.8, 4.0, 40.0])
        m = scrape(server.url)
        assert len(counters.inference_ms) == 0
        assert m[("kiosk_inference_seconds_count", ())] == 3
        assert m[("kiosk_inference_seconds_sum", ())] == pytest.approx(0.0448)
        assert m[("kiosk_inference_seconds_bucket", (("le", "0.001"),))] == 1
        assert m[("kiosk_inference_seconds_bucket", (("le", "0.005"),))] == 2
        assert m[("kiosk_inference_seconds_bucket", (("le", "0.05"),))] == 3
        # No outbox callable, no outbox metric (rather than a made-up zero).
        assert ("kiosk_mqtt_outbox_depth", ()) not in m

        counters.inference_ms.append(300.0)
        m = scrape(server.url)
        assert m[("kiosk_inference_seconds_count", ())] == 4
        assert m[("kiosk_inference_seconds_bucket", (("le", "0.25"),))] == 3
        assert m[("kiosk_inference_seconds_bucket", (("le", "0.5"),))] == 4
    finally:
        server.close()


def test_a_failing_outbox_query_does_not_break_the_scrape(counters: Counters) -> None:
    def broken() -> int:
        raise OSError("database is locked")

    counters.frames = 9
    server = start_metrics_server("127.0.0.1", 0, counters, broken)
    try:
        m = scrape(server.url)
        assert m[("kiosk_frames_total", ())] == 9
        assert ("kiosk_mqtt_outbox_depth", ()) not in m
    finally:
        server.close()


def test_close_frees_the_port_and_ipv6_loopback_works(counters: Counters) -> None:
    server = start_metrics_server("127.0.0.1", 0, counters)
    port = server.port
    scrape(server.url)
    server.close()
    again = start_metrics_server("127.0.0.1", port, counters)  # e.g. after a restart
    try:
        assert again.port == port
        scrape(again.url)
    finally:
        again.close()
    with socket.socket() as s:  # and nothing listens there any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
    if socket.has_ipv6:
        try:
            v6 = start_metrics_server("::1", 0, counters)
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        try:
            assert v6.url.startswith("http://[::1]:")
            assert ("kiosk_frames_total", ()) in scrape(v6.url)
        finally:
            v6.close()


def test_prometheus_client_is_imported_lazily() -> None:
    code = (
        "import sys, kiosk.metrics\n"
        "assert 'prometheus_client' not in sys.modules, 'imported eagerly'\n"
        "sys.modules['prometheus_client'] = None\n"  # as if the extra were not installed
        "from kiosk.counters import Counters\n"
        "try:\n"
        "    kiosk.metrics.start_metrics_server('127.0.0.1', 0, Counters())\n"
        "except kiosk.metrics.MetricsUnavailable as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'kioskd[metrics]'" in out.stdout
