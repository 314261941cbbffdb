"""The external gate: an existing screening kiosk decides, and its pass/fail reaches kioskd
over local HTTP and/or MQTT. Both listeners bound what they accept."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

import paho.mqtt.client as mqtt

from kiosk.config import ConfigError, GateConfig, MqttConfig
from kiosk.counters import Counters
from kiosk.detect import Box
from kiosk.frames import Frame
from kiosk.gate import GateResult, verdict
from kiosk.httplisten import BoundedHTTPServer
from kiosk.lifecycle import Part
from kiosk.limits import LogEvery, TokenBucket
from kiosk.mqttclient import connect_bounded, make_client, read_password

log = logging.getLogger("kiosk.gate")


@dataclass(frozen=True, slots=True)
class Decision:
    """A pass/fail from an external kiosk, at a monotonic time."""

    t_mono: float
    status: Literal["pass", "fail"]
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
        "fail" if status.strip().lower() == "fail" else "pass",
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


class ExternalGate(Part):
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
        http: tuple[str, int] | None = None,
        mqtt_topic: str = "",
        mqtt_cfg: MqttConfig | None = None,
    ) -> None:
        if mqtt_topic and mqtt_cfg is None:
            raise ValueError("gate.mqtt_topic needs the mqtt section for the broker")
        self.counters = counters
        self.match_window_s = match_window_s
        self.unmeasured_passes = unmeasured_passes
        self.http = http
        self.mqtt_topic = mqtt_topic
        self.mqtt_cfg = mqtt_cfg
        self.rejected = 0
        self._decisions: deque[Decision] = deque(maxlen=self.MAX_DECISIONS)
        self._lock = threading.Lock()
        self._rate = TokenBucket(self.RATE_PER_S, self.BURST)
        self._bad = LogEvery(log, logging.WARNING)
        self._http: BoundedHTTPServer | None = None
        self._mqtt: mqtt.Client | None = None

    @classmethod
    def from_config(
        cls, gate: GateConfig, mqtt_cfg: MqttConfig | None, counters: Counters
    ) -> ExternalGate:
        return cls(
            counters,
            gate.match_window_s,
            gate.unmeasured_passes,
            http=(gate.http_host, gate.http_port) if gate.http_port else None,
            mqtt_topic=gate.mqtt_topic,
            mqtt_cfg=mqtt_cfg,
        )

    def start(self) -> Self:
        """Open the configured listeners (a port that cannot be bound is a config error)."""
        if self.http and self._http is None:
            host, port = self.http
            try:
                self.serve_http(host, port)
            except OSError as exc:
                raise ConfigError(
                    "gate.http_port", f"cannot listen on {host}:{port}: {exc}"
                ) from None
        if self.mqtt_topic and self.mqtt_cfg is not None and self._mqtt is None:
            self.subscribe_mqtt(self.mqtt_topic, self.mqtt_cfg)
        return self

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
        http, self._http = self._http, None
        client, self._mqtt = self._mqtt, None
        if http is not None:
            http.close()
        if client is not None:
            client.loop_stop()
            client.disconnect()


class RateLimited(ValueError):
    """A listener sent decisions faster than ExternalGate.RATE_PER_S."""
