"""The temperature gate: decides per visit whether its demographics may be recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kiosk.detect import Box
from kiosk.frames import Frame


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
