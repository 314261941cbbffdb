"""The thermal gate: a radiometric camera measures each tracked face; the visit's skin
reading (the median of its best frames) and its room give a body estimate, which is judged
against the threshold."""

from __future__ import annotations

import logging
import time
from typing import Self

import numpy as np

from kiosk.config import GateConfig, ThermalConfig
from kiosk.counters import Counters
from kiosk.detect import Box
from kiosk.frames import Frame
from kiosk.gate import GateResult, verdict
from kiosk.lifecycle import Part
from kiosk.limits import LogEvery
from kiosk.thermal.bodytemp import CoreModel, load_core_model
from kiosk.thermal.measure import (
    FaceThermometer,
    MeasureSettings,
    Prepared,
    Reading,
    ReferenceTracker,
    aggregate,
    room_c,
)
from kiosk.thermal.register import map_box
from kiosk.thermal.sources import ThermalSource, source_from_config

log = logging.getLogger("kiosk.gate")

# single_person mode: another visitor seen this recently makes the warm blob ambiguous.
TWO_VISITORS_WINDOW_S = 1.0


class ThermalGate(Part):
    """Measures each tracked face in the latest thermal frame and judges the visit's body
    estimate: the core model on its median skin reading and the room (`ambient_c`, or the
    frames' background when it is None).

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
        ambient_c: float | None = None,
        model: CoreModel | None = None,
    ) -> None:
        self.source = source
        self.thermometer = thermometer
        self.counters = counters
        self.threshold_c = threshold_c
        self.unmeasured_passes = unmeasured_passes
        self.homography = homography
        self.best_readings = best_readings
        self.max_age_s = max_age_s
        self.ambient_c = ambient_c
        self.model = model or load_core_model()
        self._room_warning = LogEvery(log, logging.WARNING, interval_s=3600.0)
        self._readings: dict[int, dict[int, Reading]] = {}
        self._prepared_index = -1
        self._prepared: Prepared | Reading | None = None
        self._single: Reading | None = None  # this thermal frame's single_person reading
        self._seen: dict[int, float] = {}  # track -> when last observed (single_person mode)

    @classmethod
    def from_config(
        cls,
        gate: GateConfig,
        thermal: ThermalConfig,
        counters: Counters,
        source: ThermalSource | None = None,
    ) -> ThermalGate:
        thermometer = FaceThermometer(
            MeasureSettings.from_config(thermal),
            ReferenceTracker(thermal.reference, thermal.reference_c, thermal.reference_smoothing),
        )
        homography = np.asarray(thermal.homography, np.float64) if thermal.homography else None
        return cls(
            source or source_from_config(thermal),
            thermometer,
            counters,
            threshold_c=gate.threshold_c,
            unmeasured_passes=gate.unmeasured_passes,
            homography=homography,
            best_readings=thermal.best_readings,
            max_age_s=max(1.0, 2.0 / thermal.fps),
            ambient_c=thermal.ambient_c,
        )

    def start(self) -> Self:
        self.source.start()
        return self

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
        skin, spread = aggregate(readings, self.best_readings)
        room = self.ambient_c if self.ambient_c is not None else room_c(readings)
        estimate = None
        if skin is not None and room is not None:
            estimate = self.model.estimate(skin, room)
            self._check_room(room)
        valid = [r for r in readings if r.ok]
        # Temperatures stay out of the normal log: they belong in the local database only.
        log.debug(
            "thermal check track %d: skin %s C from %d/%d readings, spread %s C, face %s px,"
            " room %s C, estimate %s C",
            track_id, skin, len(valid), len(readings), spread,
            max((r.face_pixels for r in valid), default=0), room, estimate,
        )  # fmt: skip
        return verdict(estimate, self.threshold_c, self.unmeasured_passes, skin_c=skin)

    def _check_room(self, room: float) -> None:
        low, high = self.model.ambient_range_c
        if not low <= room <= high:
            self._room_warning(
                "thermal gate: the room reads %.1f C, outside the %.1f-%.1f C the body estimate"
                " was fitted on; it extrapolates there (docs/thermal.md)",
                room, low, high,
            )  # fmt: skip

    def forget(self, track_id: int) -> None:
        self._seen.pop(track_id, None)
        self._readings.pop(track_id, None)

    def close(self) -> None:
        self.source.close()
