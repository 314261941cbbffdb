"""The real kioskd with metrics enabled: the endpoint answers with the daemon's counters,
and the MQTT outbox depth follows the database while the broker is unreachable."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client", reason="prometheus-client (extra kiosk[metrics])")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.kioskd import start_kioskd, stored_visits, write_config  # noqa: E402
from tests.mjpeg import free_port  # noqa: E402


def scrape(url: str) -> dict[tuple[str, tuple], float] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_kioskd_metrics_endpoint(tmp_path: Path) -> None:
    port = free_port()
    dead_broker = free_port()  # nothing listens: every visit stays in the outbox
    cfg = write_config(
        tmp_path,
        camera={"source": "demo", "realtime": True, "loop": True},
        metrics={"enabled": True, "host": "127.0.0.1", "port": port},
        mqtt={"enabled": True, "host": "127.0.0.1", "port": dead_broker},
    )
    url = f"http://127.0.0.1:{port}/metrics"
    proc = start_kioskd(cfg)
    try:
        deadline = time.monotonic() + 120
        m = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            m = scrape(url)
            if m and m.get(("kiosk_visits_total", (("outcome", "stored"),)), 0) >= 1:
                break
            time.sleep(0.5)
        assert m, "the metrics endpoint never answered"
        stored = m[("kiosk_visits_total", (("outcome", "stored"),))]
        assert stored >= 1, f"no visit counted within 120 s: {m}"
        visits_in_db = len(stored_visits(tmp_path))  # read after the scrape: never fewer
        assert visits_in_db >= stored
        # The broker is down, so every stored visit waits in the outbox (read last in a scrape).
        assert stored <= m[("kiosk_mqtt_outbox_depth", ())] <= visits_in_db

        assert m[("kiosk_frames_total", ())] > 0
        assert m[("kiosk_fps", ())] > 0
        assert m[("kiosk_faces_detected_total", ())] > 0
        assert m[("kiosk_visits_total", (("outcome", "dropped"),))] == 0
        assert m[("kiosk_source_reconnects_total", (("source", "camera"),))] == 0
        assert m[("kiosk_inference_seconds_count", ())] >= 1  # the classifier ran
        per_crop = m[("kiosk_inference_seconds_sum", ())] / m[("kiosk_inference_seconds_count", ())]
        assert 0 < per_crop < 10
        assert m[("kiosk_last_frame_age_seconds", ())] < 5
        assert m[("kiosk_uptime_seconds", ())] > 0

        # Counters keep moving between scrapes.
        frames = m[("kiosk_frames_total", ())]
        time.sleep(1.0)
        later = scrape(url)
        assert later and later[("kiosk_frames_total", ())] > frames

        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    with socket.socket() as s:  # the endpoint went away with the daemon
        assert s.connect_ex(("127.0.0.1", port)) != 0
