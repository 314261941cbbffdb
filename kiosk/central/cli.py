"""kiosk-collect: the command line and the service's main loop (signals, sd_notify READY).

Exit codes: 0 after a clean stop, 78 (EX_CONFIG) for a bad config or a missing driver, so
systemd does not restart-loop on it; anything else is restarted by systemd.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING

from kiosk import __version__
from kiosk.config import EX_CONFIG, ConfigError
from kiosk.logsetup import scrub, setup_logging
from kiosk.metrics import MetricsServer, MetricsUnavailable
from kiosk.notify import Notifier

if TYPE_CHECKING:
    from kiosk.central.collector import Collector

log = logging.getLogger("kiosk.collect")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="kiosk-collect", description="write every kiosk's visits and checks to PostgreSQL"
    )
    ap.add_argument("--config", required=True, help="the collector's YAML config")
    ap.add_argument("--check-config", action="store_true", help="validate the config and exit")
    ap.add_argument(
        "--migrate", action="store_true", help="upgrade the central schema (Alembic) and exit"
    )
    ap.add_argument("--version", action="version", version=f"kiosk-collect {__version__}")
    return ap.parse_args(argv)


def _missing_driver() -> str | None:
    try:
        import alembic  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed; install the collector: pip install 'kioskd[central]'"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if why := _missing_driver():
        print(f"kiosk-collect: {why}", file=sys.stderr)
        return EX_CONFIG
    from kiosk.central.collector import Collector
    from kiosk.central.config import load_collector_config
    from kiosk.central.stats import StatsCollector

    try:
        cfg = load_collector_config(args.config)
        if args.check_config:
            print(f"kiosk-collect: {args.config}: config ok")
            return 0
        collector = Collector.from_config(cfg)
    except ConfigError as exc:
        print(f"kiosk-collect: config error: {scrub(str(exc))}", file=sys.stderr)
        return EX_CONFIG
    setup_logging(cfg.log_level)
    if args.migrate:
        return migrate_only(collector)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    notifier = Notifier()
    with ExitStack() as parts:
        if cfg.metrics.enabled:

            def stats() -> StatsCollector:
                return StatsCollector(collector.stats, collector.pending)

            try:
                parts.enter_context(MetricsServer(cfg.metrics.host, cfg.metrics.port, stats))
            except (MetricsUnavailable, OSError) as exc:
                log.error("metrics: %s", exc)
                return EX_CONFIG
        parts.enter_context(collector)
        parts.callback(notifier.close)
        log.info("kiosk-collect %s running", __version__)
        notifier.ready()
        while not stop.wait(1.0):
            pass
        notifier.stopping()
    return 0


def migrate_only(collector: Collector) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from kiosk.centraldb import migrate
    from kiosk.store import driver_message

    try:
        migrate.upgrade(collector.engine)
    except SQLAlchemyError as exc:
        log.error("cannot migrate the central schema: %s", " ".join(driver_message(exc).split()))
        return 1
    finally:
        collector.engine.dispose()
    log.info("central schema at revision %s", migrate.head())
    return 0


if __name__ == "__main__":
    sys.exit(main())
