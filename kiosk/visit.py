"""The values that leave the pipeline: a visitor's record and a non-passing check."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from kiosk.labels import CheckStatus, VisitStatus


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Visit:
    """One visitor whose temperature check passed (or was off): demographics, no face data."""

    device_id: str
    started_at: datetime  # UTC, timezone-aware
    ended_at: datetime
    age_group: str
    age_confidence: float
    gender: str
    gender_confidence: float
    temperature_c: float | None  # the body (oral) estimate, or the external kiosk's value
    temperature_status: VisitStatus  # unmeasured when it passes by config
    frames: int
    model_version: str
    id: str = field(default_factory=new_id)
    # False while the wall clock was not yet trusted (see kiosk/clock.py).
    clock_synced: bool = True
    skin_c: float | None = None  # the skin reading the estimate came from (thermal gate)


@dataclass(frozen=True, slots=True)
class Check:
    """A temperature check that did not pass: counted per day, never with face data."""

    device_id: str
    at: datetime  # UTC, timezone-aware
    status: CheckStatus
    temperature_c: float | None  # the body (oral) estimate, or the external kiosk's value
    id: str = field(default_factory=new_id)
    clock_synced: bool = True
    skin_c: float | None = None  # the skin reading the estimate came from (thermal gate)
