"""The temperature gate: decides per visit whether its demographics may be recorded.

Three implementations of one small interface: ``off`` (everyone is recorded), ``thermal``
(:mod:`kiosk.gate.thermal`, a radiometric camera measures each face) and ``external``
(:mod:`kiosk.gate.external`, an existing screening kiosk reports pass/fail). Each is a
long-lived part: ``start()`` opens its camera or listeners, ``close()`` (idempotent) releases
them, and it is a context manager.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Self

from kiosk.labels import GateStatus
from kiosk.lifecycle import Part

if TYPE_CHECKING:
    from kiosk.config import GateConfig, MqttConfig, ThermalConfig
    from kiosk.counters import Counters
    from kiosk.detect import Box
    from kiosk.frames import Frame
    from kiosk.thermal.sources import ThermalSource


@dataclass(frozen=True, slots=True)
class GateResult:
    status: GateStatus
    # The body (oral) estimate the status was decided on, or the external kiosk's own value.
    temperature_c: float | None = None
    # Whether the visit's demographics are recorded (unmeasured may pass by config).
    record: bool = True
    skin_c: float | None = None  # the skin reading behind the estimate (thermal gate)


class Gate(Protocol):
    """Sees each tracked face as it appears and gives a verdict when the visit closes."""

    def start(self) -> Self: ...

    def observe(self, track_id: int, box: Box, frame: Frame) -> None: ...

    def decide(self, track_id: int, started_mono: float, ended_mono: float) -> GateResult: ...

    def forget(self, track_id: int) -> None:
        """Drop what was gathered for a track that never became a visit."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class OffGate(Part):
    """No temperature check: every visitor is recorded, with no temperature."""

    def observe(self, track_id: int, box: Box, frame: Frame) -> None:
        return None

    def decide(self, track_id: int, started_mono: float, ended_mono: float) -> GateResult:
        return GateResult(status="off")

    def forget(self, track_id: int) -> None:
        return None


def verdict(
    temperature_c: float | None,
    threshold_c: float,
    unmeasured_passes: bool,
    skin_c: float | None = None,
) -> GateResult:
    """pass below the threshold, fail at or above it, unmeasured without a valid reading."""
    if temperature_c is None:
        return GateResult("unmeasured", None, record=unmeasured_passes)
    if temperature_c >= threshold_c:
        return GateResult("fail", temperature_c, record=False, skin_c=skin_c)
    return GateResult("pass", temperature_c, record=True, skin_c=skin_c)


def build_gate(
    gate_cfg: GateConfig,
    thermal_cfg: ThermalConfig,
    counters: Counters,
    mqtt_cfg: MqttConfig | None = None,
    source: ThermalSource | None = None,
) -> Gate:
    """The gate named by `gate.mode`, not yet started."""
    if gate_cfg.mode == "thermal":
        from kiosk.gate.thermal import ThermalGate

        return ThermalGate.from_config(gate_cfg, thermal_cfg, counters, source)
    if gate_cfg.mode == "external":
        from kiosk.gate.external import ExternalGate

        return ExternalGate.from_config(gate_cfg, mqtt_cfg, counters)
    return OffGate()
