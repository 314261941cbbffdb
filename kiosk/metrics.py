"""Optional Prometheus endpoint, read from the frame loop's Counters at scrape time.

The frame loop only bumps plain numbers in `Counters`; this module turns them into metrics when
Prometheus asks, so metrics cost nothing between scrapes and the loop never waits for them.
`prometheus-client` is imported only when the endpoint is enabled (extra ``kiosk[metrics]``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kiosk.config import MetricsConfig
from kiosk.counters import Counters
from kiosk.httplisten import BoundedConnections, CappedRequest, is_loopback
from kiosk.lifecycle import Part

log = logging.getLogger(__name__)

# Seconds; int8 age/gender models take a few ms on a Pi 5 and tens of ms on a Pi 4.
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class MetricsUnavailable(RuntimeError):
    """metrics.enabled is set but prometheus-client is not installed."""


class _QuietHandler(CappedRequest, WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every 15 s would flood the journal."""


class CountersCollector:
    """A prometheus-client collector that reads `Counters` (and the outbox) when scraped."""

    def __init__(self, counters: Counters, outbox_depth: Callable[[], int] | None) -> None:
        from prometheus_client import Histogram

        self._counters = counters
        self._outbox_depth = outbox_depth
        self._inference = Histogram(
            "kiosk_inference_seconds",
            "Age/gender model inference time per face crop",
            buckets=INFERENCE_BUCKETS,
            registry=None,
        )
        self._lock = threading.Lock()

    def _drain_inference(self) -> None:
        samples = self._counters.inference_ms
        # The classify thread appends at the right; taking from the left is safe alongside it.
        take = samples.popleft
        while samples:
            self._inference.observe(take() / 1000.0)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self._counters
        now = time.monotonic()
        with self._lock:  # two concurrent scrapes must not both drain the same samples
            self._drain_inference()
            yield from self._inference.collect()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield counter("kiosk_frames", "Visible frames processed", c.frames)
        yield counter("kiosk_frames_rejected", "Malformed frames skipped", c.frames_rejected)
        yield gauge("kiosk_fps", "Processed frames per second (smoothed)", c.fps)
        yield counter("kiosk_faces_detected", "Faces detected, summed over frames", c.faces)

        visits = CounterMetricFamily("kiosk_visits", "Visits by outcome", labels=["outcome"])
        visits.add_metric(["stored"], c.visits)
        visits.add_metric(["dropped"], c.visits_dropped)
        yield visits

        checks = CounterMetricFamily(
            "kiosk_temperature_checks", "Temperature checks by status", labels=["status"]
        )
        for status, n in sorted(dict(c.checks).items()):
            checks.add_metric([status], n)
        yield checks

        reconnects = CounterMetricFamily(
            "kiosk_source_reconnects", "Source reopen attempts", labels=["source"]
        )
        reconnects.add_metric(["camera"], c.source_reconnects)
        reconnects.add_metric(["thermal"], c.thermal_reconnects)
        yield reconnects
        yield counter(
            "kiosk_thermal_frames_rejected",
            "Thermal frames skipped (NaN, empty, wrong shape)",
            c.thermal_rejected,
        )

        yield gauge("kiosk_uptime_seconds", "Seconds since the daemon started", c.uptime_s(now))
        if c.last_frame_mono:
            age = max(0.0, now - c.last_frame_mono)
            yield gauge("kiosk_last_frame_age_seconds", "Seconds since the last frame", age)
        if c.last_visit_at is not None:
            yield gauge(
                "kiosk_last_visit_timestamp_seconds",
                "Unix time of the last stored visit",
                c.last_visit_at.timestamp(),
            )

        if self._outbox_depth is not None:
            try:
                depth = self._outbox_depth()
            except Exception as exc:  # a busy or broken database must not break the scrape
                log.warning("metrics: cannot read the MQTT outbox depth: %s", exc)
            else:
                yield gauge("kiosk_mqtt_outbox_depth", "Visits waiting to be published", depth)


class MetricsServer(Part):
    """The /metrics endpoint on host:port (0 picks a free port; see `.port`), served from a
    daemon thread; `close()` stops it and frees the port."""

    def __init__(self, host: str, port: int, make_collector: Callable[[], Any]) -> None:
        """`make_collector()`: the prometheus-client collector read at each scrape (kioskd's
        CountersCollector, kiosk-collect's StatsCollector), made at start, after the import
        of prometheus-client is known to work."""
        self.requested = (host, port)
        self.make_collector = make_collector
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls, cfg: MetricsConfig, counters: Counters, outbox_depth: Callable[[], int] | None
    ) -> MetricsServer:
        return cls(cfg.host, cfg.port, lambda: CountersCollector(counters, outbox_depth))

    @property
    def host(self) -> str:
        assert self._server is not None
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        """Listen now (MetricsUnavailable without prometheus-client, OSError for the port)."""
        if self._server is not None:
            return self
        try:
            from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
            from prometheus_client.exposition import ThreadingWSGIServer
        except ImportError as exc:
            raise MetricsUnavailable(
                "metrics.enabled needs prometheus-client: pip install 'kioskd[metrics]'"
            ) from exc
        host, port = self.requested

        class Server(BoundedConnections, ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            name = "metrics"

        registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # memory and CPU, to spot a slow leak over months
        registry.register(self.make_collector())
        app = make_wsgi_app(registry)
        self._server = make_server(host, port, app, Server, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        if not is_loopback(host):
            log.warning("metrics endpoint %s is reachable from the network", self.url)
        log.info("metrics on %s", self.url)
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def start_metrics_server(
    host: str,
    port: int,
    counters: Counters,
    outbox_depth: Callable[[], int] | None = None,
) -> MetricsServer:
    """Serve kioskd's /metrics on host:port now."""
    return MetricsServer(host, port, lambda: CountersCollector(counters, outbox_depth)).start()
