"""What the collector counts, and its Prometheus view (read at scrape time)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class IngestStats:
    """Plain numbers the writer thread bumps; the metrics endpoint reads them."""

    stored: Counter[str] = field(default_factory=Counter)  # kind -> rows committed
    dead_letters: Counter[str] = field(default_factory=Counter)  # what was wrong -> count
    db_errors: int = 0
    batches: int = 0
    acked: int = 0
    lag_s: float = 0.0  # commit time minus the event time of the last batch's newest event
    connected: bool = False  # connected and subscribed
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def total_stored(self) -> int:
        return sum(self.stored.values())


class StatsCollector:
    """A prometheus-client collector over IngestStats and the in-memory queue depth."""

    def __init__(self, stats: IngestStats, pending: Callable[[], int]) -> None:
        self.stats = stats
        self.pending = pending

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        with s.lock:
            stored, dead = dict(s.stored), dict(s.dead_letters)
            errors, batches, lag, up = s.db_errors, s.batches, s.lag_s, s.connected
        rows = CounterMetricFamily(
            "kiosk_collect_rows",
            "Visits and checks committed (rate = ingest rate)",
            labels=["kind"],
        )
        for kind in ("visit", "check"):
            rows.add_metric([kind], stored.get(kind, 0))
        yield rows
        dl = CounterMetricFamily(
            "kiosk_collect_dead_letters", "Messages kept as dead letters", labels=["reason"]
        )
        for reason, n in sorted(dead.items()):
            dl.add_metric([reason], n)
        yield dl
        yield CounterMetricFamily("kiosk_collect_db_errors", "Failed database writes", errors)
        yield CounterMetricFamily("kiosk_collect_batches", "Committed transactions", batches)
        yield GaugeMetricFamily(
            "kiosk_collect_lag_seconds", "Commit time minus the newest committed event's time", lag
        )
        yield GaugeMetricFamily(
            "kiosk_collect_pending", "Messages received, not yet committed", self.pending()
        )
        yield GaugeMetricFamily("kiosk_collect_broker_connected", "1 when connected", int(up))
