"""kioskd: the daemon's main loop, signals, sd_notify and shutdown."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from kiosk import __version__
from kiosk.classify import Classifier
from kiosk.clock import ClockTrust
from kiosk.config import EX_CONFIG, Config, ConfigError, load_config
from kiosk.counters import Counters
from kiosk.days import local_day, today
from kiosk.focus import FocusedDetector
from kiosk.frames import CameraSource, is_live, resolve_source
from kiosk.gate import build_gate
from kiosk.gate.thermal import ThermalGate
from kiosk.health import Health, free_bytes, thermal_state
from kiosk.logsetup import add_url_secret, redact_url, scrub, setup_logging, under_journald
from kiosk.metrics import MetricsServer, MetricsUnavailable
from kiosk.mqtt import Publisher
from kiosk.notify import Notifier
from kiosk.pipeline import Pipeline
from kiosk.recorder import Recorder
from kiosk.retention import RetentionWorker
from kiosk.store import Store, StoreError, check_url, driver_message
from kiosk.track import Tracker
from kiosk.visit import Visit

if TYPE_CHECKING:
    from kiosk.web.server import WebServer

log = logging.getLogger("kioskd")

STATUS_INTERVAL_S = 5.0
RETENTION_INTERVAL_S = 24 * 3600.0
# Beside the database: records it would not take at the last exit (kiosk/spill.py).
SPILL_NAME = "kiosk-unstored.jsonl"


def clock_mode(cfg: Config) -> str:
    """clock.trust, except that `auto` trusts a replayed file: its times are the replay's,
    so there is nothing to flag, restamp or hold back from MQTT (the demo)."""
    if cfg.clock.trust == "auto" and not is_live(resolve_source(cfg.camera.source)):
        return "always"
    return cfg.clock.trust


class Daemon:
    """kioskd: its parts in data-flow order, entered into one ExitStack by `start()`, so that
    `close()` shuts them down in the reverse order."""

    def __init__(self, cfg: Config, config_path: str = "") -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.counters = Counters()
        self.notifier = Notifier()
        self.stop_requested = threading.Event()
        self.summary_requested = False
        self.restart_requested = False
        self.hangup_pending = False
        self._parts = ExitStack()
        # Holds the writer lock and proves the file writable (kiosk/dbfile.py).
        self.store = Store(cfg.database_url, writer=True)
        self.retention = RetentionWorker(
            self.store, cfg.store.retention_days, cfg.tz, cfg.device_id, self._clock_trusted
        )
        # Does nothing unless mqtt.enabled; publishes from the store's outbox on its own thread.
        self.publisher = Publisher(cfg.mqtt, cfg.device_id, self.store, cfg.tz, self.counters)
        # Disk full / untrusted clock: see kiosk/recorder.py.
        self.recorder = Recorder(
            self.store, self.counters, ClockTrust(clock_mode(cfg)), cfg.mqtt.enabled,
            on_visit=self._visit_committed,
            spill_path=(self.store.path.parent if self.store.path else cfg.state_path) / SPILL_NAME,
            on_check=lambda _check: self.publisher.wake(),  # publish it now, not at the next poll
        )  # fmt: skip
        self.gate = build_gate(cfg.gate, cfg.thermal, self.counters, cfg.mqtt)
        self.source = CameraSource.from_config(cfg.camera)
        self.classifier = Classifier.from_config(cfg.classifier)
        self.pipeline = Pipeline(
            FocusedDetector.from_config(cfg.detector),
            Tracker.from_config(cfg.tracker),
            self.classifier,
            self.gate,
            on_visit=self.recorder.add,
            on_check=self.recorder.add,
            counters=self.counters,
            device_id=cfg.device_id,
            # Always: results are the same either way; see kiosk/pipeline.py.
            classify_off_thread=True,
        )
        self.web = self._build_web()
        self.live = self.web.live if self.web is not None else None

    def start(self) -> Daemon:
        """Open every part, downstream first; a part that fails closes those already open."""
        with ExitStack() as parts:
            parts.enter_context(self.notifier)
            parts.enter_context(self.store)
            parts.enter_context(self.retention)
            parts.enter_context(self.publisher)
            if metrics := self._metrics():
                parts.enter_context(metrics)
            parts.callback(lambda: log.info("summary: %s", self.counters.summary()))
            parts.enter_context(self.recorder)  # stores what the last run could not, first
            parts.enter_context(self.gate)
            parts.enter_context(self.source)
            parts.enter_context(self.pipeline)  # open visits reach the recorder at shutdown
            parts.callback(self._say_stopping)
            if web := self._web():
                parts.enter_context(web)  # closed first: no page reads a part being closed
            self._parts = parts.pop_all()
        return self

    def close(self) -> None:
        self._parts.close()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _say_stopping(self) -> None:
        if self.restart_requested:
            self.notifier.reloading()
        else:
            self.notifier.stopping()

    def _clock_trusted(self) -> bool:
        return self.recorder.clock_synced

    def _metrics(self) -> MetricsServer | None:
        """The optional Prometheus endpoint; without it kioskd still counts visitors."""
        m = self.cfg.metrics
        if not m.enabled:
            return None
        depth = self.store.outbox_depth if self.cfg.mqtt.enabled else None
        try:
            return MetricsServer.from_config(m, self.counters, depth).start()
        except (MetricsUnavailable, OSError) as exc:
            log.error("metrics endpoint %s:%d not started: %s", m.host, m.port, exc)
            return None

    def _web(self) -> WebServer | None:
        """The optional web page, started; without it kioskd still counts visitors."""
        if self.web is None:
            return None
        try:
            return self.web.start()
        except (OSError, StoreError, SQLAlchemyError) as exc:
            log.error("web page %s not started: %s", self.web.url, exc)
            self.live = None
            return None

    def _build_web(self) -> WebServer | None:
        """The optional web page (kiosk/web/); Flask is imported only when it is on."""
        c = self.cfg
        if not c.web.enabled:
            return None
        try:
            from kiosk.web.server import WebServer
        except ImportError as exc:
            why = f"needs {exc.name or 'Flask'}: pip install 'kioskd[web]'"
            raise ConfigError("web.enabled", why) from None
        return WebServer.from_config(c.web, c.database_url, c.device_id, c.tz, self.health)

    def health(self) -> Health:
        """The web page's health snapshot; read on a web thread."""
        thermal = self.gate.source if isinstance(self.gate, ThermalGate) else None
        stall_s = self.cfg.thermal.stall_timeout_s
        return Health(
            version=__version__,
            device_id=self.cfg.device_id,
            uptime_s=self.counters.uptime_s(),
            camera=self.source.state,
            fps=self.counters.fps,
            thermal=None if thermal is None else thermal_state(thermal, stall_s),
            mqtt_enabled=self.cfg.mqtt.enabled,
            mqtt_connected=self.publisher.connected,
            outbox_depth=self.store.outbox_depth() if self.cfg.mqtt.enabled else None,
            clock_trusted=self.recorder.clock_synced,
            disk_free_bytes=free_bytes(self.store.path),
            model=self.classifier.model_version,
            records_not_stored=len(self.recorder.queue),
        )

    def _visit_committed(self, visit: Visit) -> None:
        self.counters.visits += 1
        self.counters.last_visit_at = visit.ended_at
        self.publisher.wake()
        log.info(
            "visit %s committed: %s %s (confidence: gender %.0f%%, age group %.0f%%), %d frames, "
            "%.1f s, temperature %s",
            visit.id, visit.gender, visit.age_group, visit.gender_confidence * 100,
            visit.age_confidence * 100, visit.frames,
            (visit.ended_at - visit.started_at).total_seconds(), visit.temperature_status,
        )  # fmt: skip

    def visits_today(self) -> int | None:
        """Visits stored since local midnight (config timezone); one indexed COUNT."""
        day = today(datetime.now(UTC), self.cfg.tz)
        try:
            counts = self.store.visit_counts(day.start, day.end, self.cfg.device_id)
        except SQLAlchemyError:
            return None
        return sum(counts.values())

    def status_line(self) -> str:
        """systemd's STATUS= (shown by `systemctl status kiosk`)."""
        today = self.visits_today()
        visits = "?" if today is None else today
        queued = len(self.recorder.queue)
        storage = f", {queued} records NOT STORED (see the log)" if queued else ""
        return f"fps {self.counters.fps:.1f}, visits today {visits}, {self.source.state}{storage}"

    def install_signals(self) -> None:
        """TERM/INT stop, HUP restarts gracefully (see `restart`), USR1 logs a summary; USR2
        is logged and ignored, so that no stray signal kills kioskd without a clean stop."""

        def stop(signum, _frame) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.stop_requested.set()

        def hangup(_signum, _frame) -> None:
            self.hangup_pending = True

        def summary(_signum, _frame) -> None:
            self.summary_requested = True

        def ignored(signum, _frame) -> None:
            log.warning("received %s: ignored (SIGHUP restarts, SIGUSR1 logs a summary)",
                        signal.Signals(signum).name)  # fmt: skip

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hangup)
        signal.signal(signal.SIGUSR1, summary)
        signal.signal(signal.SIGUSR2, ignored)

    def run(self, max_frames: int | None = None, duration_s: float | None = None) -> int:
        """The frame loop, until stopped, the input ends or a limit is reached; then close."""
        self.install_signals()
        log.info(
            "kioskd %s started: device %s, camera %s, database %s, model %s",
            __version__, self.cfg.device_id, redact_url(self.cfg.camera.source),
            redact_url(self.cfg.database_url), self.classifier.model_version,
        )  # fmt: skip
        self.notifier.ready(self.status_line())
        self.retention.kick()
        started = time.monotonic()
        next_status = started + STATUS_INTERVAL_S
        next_retention = started + RETENTION_INTERVAL_S
        try:
            while not self.stop_requested.is_set():
                frame = self.source.read(timeout=0.25)
                self.counters.source_reconnects = self.source.reconnects
                now = time.monotonic()
                if frame is not None:
                    self.pipeline.process(frame)
                    if self.live is not None and self.live.wanted:  # a viewer on the live page
                        p = self.pipeline
                        self.live.offer(frame, p.detector, p.tracker.tracks, p.gate)
                    self.notifier.frame_processed(now)
                elif self.source.ended:
                    log.info("camera %s: end of input", self.source.name)
                    break
                else:
                    self.pipeline.tick(now, datetime.now(UTC))
                self.recorder.poll(now)
                self._track_health()
                if self.hangup_pending and self.config_reloads():
                    self.restart_requested = True
                    break
                if self.summary_requested:
                    self.summary_requested = False
                    log.info("summary: %s", self.counters.summary())
                if now >= next_status:
                    next_status = now + STATUS_INTERVAL_S
                    self.notifier.status(self.status_line())
                if now >= next_retention:
                    next_retention = now + RETENTION_INTERVAL_S
                    self.retention.kick()
                if max_frames is not None and self.counters.frames >= max_frames:
                    break
                if duration_s is not None and now - started >= duration_s:
                    break
        finally:
            self.close()
        if self.source.ended:  # a file was replayed (the demo): say what to do with it
            log.info("%s", self.next_steps())
        return 0

    def next_steps(self) -> str:
        """The line a first run ends with: the report command that shows these visits, the
        web page, and how to go on to a real camera."""
        day = local_day(datetime.now(UTC), self.cfg.tz)
        config = shlex.quote(self.config_path or "CONFIG")
        where = self.store.path or redact_url(self.cfg.database_url)
        web = self.cfg.web
        page = (
            f"the web page is http://{web.host}:{web.port}/ while kioskd runs"
            if web.enabled
            else "for a web page of the day: web.enabled: true (docs/web.md)"
        )
        return (
            f"next: kiosk-report daily --config {config} --date {day.isoformat()}; the visits "
            f"are in {where}; {page}; for a camera at a door: kioskd cameras, then kioskd setup"
        )

    def _track_health(self) -> None:
        """Camera state and clock trust for the stats (Home Assistant shows both): sent soon
        after either changes."""
        c, state, synced = self.counters, self.source.state, self.recorder.clock_synced
        if (state, synced) != (c.camera_state, c.clock_synced):
            c.camera_state, c.clock_synced = state, synced
            self.publisher.wake()

    def config_reloads(self) -> bool:
        """SIGHUP: restart only into a config that loads; a broken edit keeps this run."""
        self.hangup_pending = False
        try:
            load_config(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: config error: %s; kioskd keeps running with the old config", exc)
            return False
        log.info("received SIGHUP: storing open visits, then restarting with the new config")
        return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="kioskd",
        description="kiosk store-entrance daemon. First time at a door: `kioskd cameras` lists "
        "the cameras, `kioskd setup` writes the config. `kioskd forget DEVICE_ID --config "
        "FILE` removes a device id that is gone from MQTT and Home Assistant.",
    )
    ap.add_argument("--config", required=True, help="YAML config file")
    ap.add_argument("--check-config", action="store_true", help="validate the config and exit")
    ap.add_argument("--max-frames", type=int, help="stop after this many frames")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    ap.add_argument("--version", action="version", version=f"kioskd {__version__}")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["setup"], ["cameras"]):
        from kiosk.setup import main as setup_main  # no models or database to load for these

        return setup_main(argv)
    if argv[:1] == ["forget"]:
        from kiosk.forget import main as forget_main

        return forget_main(argv[1:])
    # Until the daemon's handlers are in place (models, database, camera take seconds), a
    # reload or a stray USR2 must not kill it; they are handled from READY on.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
        check_url(cfg.store.url)
    except ConfigError as exc:
        err = "<3>" if under_journald() else ""  # before logging is set up
        print(f"{err}kioskd: config error: {scrub(str(exc))}", file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        print(f"kioskd: {args.config}: config ok")
        return 0
    add_url_secret(cfg.camera.source)
    add_url_secret(cfg.database_url)
    setup_logging(cfg.log_level)
    try:
        daemon = Daemon(cfg, args.config).start()
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return EX_CONFIG
    except (OSError, ValueError, StoreError) as exc:
        log.error("cannot start: %s", exc)
        return EX_CONFIG
    except SQLAlchemyError as exc:
        log.error(
            "cannot start: database %s: %s", redact_url(cfg.database_url), driver_message(exc)
        )
        return EX_CONFIG
    code = daemon.run(args.max_frames, args.duration)
    if daemon.restart_requested:
        restart()
    return code


def restart() -> None:
    """SIGHUP's graceful restart: everything is stored and closed; the same command starts
    again in this process (same pid, so systemd's Type=notify sees RELOADING=1 then READY=1)."""
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
