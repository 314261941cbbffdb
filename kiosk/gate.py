"""The temperature gate: decides per visit whether its demographics may be recorded."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from kiosk.config import ConfigError, GateConfig, MqttConfig, ThermalConfig
from kiosk.counters import Counters
from kiosk.detect import Box
from kiosk.frames import Frame
from kiosk.httplisten import BoundedHTTPServer
from kiosk.limits import LogEvery, TokenBucket
from kiosk.thermal.measure import (
    FaceThermometer,
    MeasureSettings,
    Prepared,
    Reading,
    ReferenceTracker,
    aggregate,
)
from kiosk.thermal.register import map_box
from kiosk.thermal.sources import ThermalSource, open_source

log = logging.getLogger(__name__)

# single_person mode: another visitor seen this recently makes the warm blob ambiguous.
TWO_VISITORS_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class GateResult:
    status: str  # pass | fail | unmeasured | off
    temperature_c: float | None = None
    # Whether the visit's demographics are recorded (unmeasured may pass by config).
    record: bool = True


class Gate(Protocol):
    """Sees each tracked face as it appears and gives a verdict when the visit closes."""

    def observe(self, track_id: int, box: Box, frame: Frame) -> None: ...

    def decide(self, track_id: int, started_mono: float, ended_mono: float) -> GateResult: ...

    def forget(self, track_id: int) -> None:
        """Drop what was gathered for a track that never became a visit."""

    def close(self) -> None: ...


class OffGate:
    """No temperature check: every visitor is recorded, with no temperature."""

    def observe(self, track_id: int, box: Box, frame: Frame) -> None:
        return None

    def decide(self, track_id: int, started_mono: float, ended_mono: float) -> GateResult:
        return GateResult(status="off")

    def forget(self, track_id: int) -> None:
        return None

    def close(self) -> None:
        return None


def verdict(temperature_c: float | None, threshold_c: float, unmeasured_passes: bool) -> GateResult:
    """pass below the threshold, fail at or above it, unmeasured without a valid reading."""
    if temperature_c is None:
        return GateResult("unmeasured", None, record=unmeasured_passes)
    if temperature_c >= threshold_c:
        return GateResult("fail", temperature_c, record=False)
    return GateResult("pass", temperature_c, record=True)


class ThermalGate:
    """Measures each tracked face in the latest thermal frame and judges the visit's median.

    With a homography the visible face box is mapped into thermal pixels; without one
    (single_person mode) the largest warm head-sized blob is the tracked visitor. Each thermal
    frame is checked, smoothed and used to update the reference once, however many visible
    frames or faces see it. Bad or missing thermal frames count in `thermal_rejected`.
    """

    def __init__(
        self,
        source: ThermalSource,
        thermometer: FaceThermometer,
        counters: Counters,
        threshold_c: float = 37.5,
        unmeasured_passes: bool = False,
        homography: np.ndarray | None = None,
        best_readings: int = 5,
        max_age_s: float = 1.0,
    ) -> None:
        self.source = source
        self.thermometer = thermometer
        self.counters = counters
        self.threshold_c = threshold_c
        self.unmeasured_passes = unmeasured_passes
        self.homography = homography
        self.best_readings = best_readings
        self.max_age_s = max_age_s
        self._readings: dict[int, dict[int, Reading]] = {}
        self._prepared_index = -1
        self._prepared: Prepared | Reading | None = None
        self._single: Reading | None = None  # this thermal frame's single_person reading
        self._seen: dict[int, float] = {}  # track -> when last observed (single_person mode)

    def observe(self, track_id: int, box: Box, frame: Frame) -> None:
        self.counters.thermal_reconnects = self.source.reconnects
        thermal = self.source.latest()
        # Freshness by the clock the thermal reader stamps with (a replayed visible file may
        # carry its own timeline in frame.t_mono).
        if thermal is None or time.monotonic() - thermal.t_mono > self.max_age_s:
            self.counters.thermal_rejected += 1
            return
        if thermal.index != self._prepared_index:
            self._prepared_index = thermal.index
            self._single = None
            self._prepared = self.thermometer.prepare(thermal.celsius, thermal.t_mono)
            if isinstance(self._prepared, Reading):
                self.counters.thermal_rejected += 1
                log.debug("thermal frame %d rejected: %s", thermal.index, self._prepared.reason)
        prepared = self._prepared
        if not isinstance(prepared, Prepared):
            return
        per_track = self._readings.setdefault(track_id, {})
        if thermal.index in per_track:
            return
        if self.homography is None:
            now = time.monotonic()
            self._seen[track_id] = now
            others = [
                t
                for t, seen in self._seen.items()
                if t != track_id and now - seen < TWO_VISITORS_WINDOW_S
            ]
            if others:
                # Two visitors at once: the blob cannot be attributed (screening is one person
                # at a time), so these frames count for neither.
                reading = Reading(None, "more than one visitor in view", t_mono=thermal.t_mono)
                for other in others:
                    theirs = self._readings.get(other, {})
                    for index, earlier in theirs.items():
                        if thermal.t_mono - earlier.t_mono < TWO_VISITORS_WINDOW_S:
                            theirs[index] = reading
            else:
                if self._single is None:
                    self._single = self.thermometer.read(prepared, None)
                reading = self._single
        else:
            h, w = prepared.corrected.shape
            tbox = map_box(self.homography, box, w, h)
            if tbox is None:
                return
            reading = self.thermometer.read(prepared, tbox)
        per_track[thermal.index] = reading

    def decide(self, track_id: int, started_mono: float, ended_mono: float) -> GateResult:
        self._seen.pop(track_id, None)
        readings = list(self._readings.pop(track_id, {}).values())
        temperature, spread = aggregate(readings, self.best_readings)
        valid = [r for r in readings if r.ok]
        # Temperatures stay out of the normal log: they belong in the local database only.
        log.debug(
            "thermal check track %d: %s C from %d/%d readings, spread %s C, face %s px",
            track_id, temperature, len(valid), len(readings), spread,
            max((r.face_pixels for r in valid), default=0),
        )  # fmt: skip
        return verdict(temperature, self.threshold_c, self.unmeasured_passes)

    def forget(self, track_id: int) -> None:
        self._seen.pop(track_id, None)
        self._readings.pop(track_id, None)

    def close(self) -> None:
        self.source.stop()


@dataclass(frozen=True, slots=True)
class Decision:
    """A pass/fail from an external kiosk, at a monotonic time."""

    t_mono: float
    status: str
    temperature_c: float | None


MAX_DECISION_BYTES = 4096
# How far a decision's `at` may lie in the future (clocks of two machines disagree a little).
MAX_FUTURE_S = 60.0


def parse_decision(body: bytes, now_mono: float, now_wall: datetime) -> Decision:
    """A decision from `pass`/`fail` text or JSON {"status", "temperature_c"?, "at"?}.

    `at` (ISO 8601, UTC when no zone) dates a decision made earlier than it was delivered.
    Anything else (a wrong type, a list, a date too far away) is a ValueError naming the field.
    """
    if len(body) > MAX_DECISION_BYTES:
        raise ValueError(f"decision longer than {MAX_DECISION_BYTES} bytes")
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("decision is not UTF-8 text") from None
    data: Any = {"status": text}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("JSON decision must be an object")
    status = data.get("status")
    if not isinstance(status, str) or status.strip().lower() not in ("pass", "fail"):
        raise ValueError(f"status must be pass or fail, got {str(status)[:40]!r}")
    return Decision(
        _decision_time(data.get("at"), now_mono, now_wall),
        status.strip().lower(),
        _temperature(data.get("temperature_c")),
    )


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"temperature_c must be a number, got {type(value).__name__}")
    try:
        temperature = float(value)
    except OverflowError:
        raise ValueError("temperature_c must be a finite number") from None
    if not math.isfinite(temperature) or not -50.0 <= temperature <= 150.0:
        raise ValueError("temperature_c must be a number of degrees Celsius in -50..150")
    return temperature


def _decision_time(at: Any, now_mono: float, now_wall: datetime) -> float:
    if at is None or at == "":
        return now_mono
    if not isinstance(at, str):
        raise ValueError(f"at must be an ISO 8601 string, got {type(at).__name__}")
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"at is not an ISO 8601 time: {at[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        ago = (now_wall - when).total_seconds()
    except OverflowError:
        raise ValueError(f"at is out of range: {at[:40]!r}") from None
    if not -MAX_FUTURE_S <= ago <= ExternalGate.KEEP_S:
        why = f"at must be within {ExternalGate.KEEP_S:g} s before now, got {ago:+.0f} s"
        raise ValueError(why)
    return now_mono - ago


class ExternalGate:
    """An existing kiosk decides; its pass/fail reaches us over local HTTP and/or MQTT.

    A decision belongs to the visit it is closest to in time, within `match_window_s` of the
    visit's span; each decision is used once. No decision means unmeasured. What the
    listeners accept is bounded: MAX_DECISIONS kept (oldest dropped), RATE_PER_S on average.
    """

    KEEP_S = 600.0
    # One kiosk decides once per visitor, every few seconds at most; 200 covers minutes.
    MAX_DECISIONS = 200
    RATE_PER_S, BURST = 10.0, 50

    def __init__(
        self,
        counters: Counters,
        match_window_s: float = 5.0,
        unmeasured_passes: bool = False,
    ) -> None:
        self.counters = counters
        self.match_window_s = match_window_s
        self.unmeasured_passes = unmeasured_passes
        self.rejected = 0
        self._decisions: deque[Decision] = deque(maxlen=self.MAX_DECISIONS)
        self._lock = threading.Lock()
        self._rate = TokenBucket(self.RATE_PER_S, self.BURST)
        self._bad = LogEvery(log, logging.WARNING)
        self._http: BoundedHTTPServer | None = None
        self._mqtt: Any = None

    def submit(self, body: bytes) -> Decision:
        """Record one decision (raises ValueError for a malformed one, RateLimited)."""
        if not self._rate.take():
            self.rejected += 1
            raise RateLimited(f"more than {self.RATE_PER_S:g} decisions a second")
        try:
            decision = parse_decision(body, time.monotonic(), datetime.now(UTC))
        except ValueError:
            self.rejected += 1
            raise
        with self._lock:
            self._decisions.append(decision)
            while self._decisions and self._decisions[0].t_mono < decision.t_mono - self.KEEP_S:
                self._decisions.popleft()
        return decision

    def observe(self, track_id: int, box: Box, frame: Frame) -> None:
        return None

    def decide(self, track_id: int, started_mono: float, ended_mono: float) -> GateResult:
        lo, hi = started_mono - self.match_window_s, ended_mono + self.match_window_s
        with self._lock:
            inside = [d for d in self._decisions if lo <= d.t_mono <= hi]
            if not inside:
                return verdict(None, 0.0, self.unmeasured_passes)

            def distance(d: Decision) -> float:
                return max(0.0, started_mono - d.t_mono, d.t_mono - ended_mono)

            best = min(inside, key=distance)
            self._decisions.remove(best)
        if best.status == "fail":
            return GateResult("fail", best.temperature_c, record=False)
        return GateResult("pass", best.temperature_c, record=True)

    def forget(self, track_id: int) -> None:
        return None

    def _http_body(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            decision = self.submit(body)
        except RateLimited as exc:
            return 429, {"error": str(exc)}
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 202, {"status": decision.status}

    def serve_http(self, host: str, port: int) -> int:
        """Accept decisions as POSTs on host:port (0 picks a free port); returns the port."""
        self._http = BoundedHTTPServer(host, port, "gate-http", self._http_body)
        return self._http.start()

    def subscribe_mqtt(self, topic: str, mqtt_cfg: MqttConfig) -> None:
        """Take decisions published on `topic` at the broker of the `mqtt` config section."""
        from kiosk.mqttclient import connect_bounded, make_client, read_password

        password = read_password(mqtt_cfg) if mqtt_cfg.username else None
        client = make_client(mqtt_cfg, "", password)

        def on_connect(client, userdata, flags, reason_code, properties) -> None:
            if not reason_code.is_failure:
                client.subscribe(topic, qos=1)

        def on_message(client, userdata, message) -> None:
            try:
                self.submit(message.payload)
            except ValueError as exc:
                self._bad("external gate: decision on %s refused: %s", message.topic, exc)

        client.on_connect = on_connect
        client.on_message = on_message
        connect_bounded(client, mqtt_cfg, MAX_DECISION_BYTES + len(topic) + 64)
        client.loop_start()
        self._mqtt = client

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()


class RateLimited(ValueError):
    """A listener sent decisions faster than ExternalGate.RATE_PER_S."""


def build_gate(
    gate_cfg: GateConfig,
    thermal_cfg: ThermalConfig,
    counters: Counters,
    mqtt_cfg: MqttConfig | None = None,
    source: ThermalSource | None = None,
) -> Gate:
    """The gate named by `gate.mode`, started (thermal source or decision listeners)."""
    if gate_cfg.mode == "thermal":
        thermometer = FaceThermometer(
            MeasureSettings.from_config(thermal_cfg),
            ReferenceTracker(
                thermal_cfg.reference, thermal_cfg.reference_c, thermal_cfg.reference_smoothing
            ),
        )
        homography = (
            np.asarray(thermal_cfg.homography, np.float64) if thermal_cfg.homography else None
        )
        return ThermalGate(
            source or open_source(thermal_cfg),
            thermometer,
            counters,
            threshold_c=gate_cfg.threshold_c,
            unmeasured_passes=gate_cfg.unmeasured_passes,
            homography=homography,
            best_readings=thermal_cfg.best_readings,
            max_age_s=max(1.0, 2.0 / thermal_cfg.fps),
        )
    if gate_cfg.mode == "external":
        gate = ExternalGate(counters, gate_cfg.match_window_s, gate_cfg.unmeasured_passes)
        if gate_cfg.http_port:
            try:
                gate.serve_http(gate_cfg.http_host, gate_cfg.http_port)
            except OSError as exc:
                where = f"{gate_cfg.http_host}:{gate_cfg.http_port}"
                raise ConfigError("gate.http_port", f"cannot listen on {where}: {exc}") from None
        if gate_cfg.mqtt_topic:
            if mqtt_cfg is None:
                raise ValueError("gate.mqtt_topic needs the mqtt section for the broker")
            gate.subscribe_mqtt(gate_cfg.mqtt_topic, mqtt_cfg)
        return gate
    return OffGate()
