"""Wires the stages in their one order: frame -> detect -> track -> gate -> classify -> visit.

The pipeline does no I/O itself: visits and non-passing checks go to the sinks it is given,
always on the frame thread and in the order their tracks closed. With `classify_off_thread`
a closing visit's crops are classified by one worker thread (kiosk/ordered.py), so a classifier
slower than a frame does not stall the frame loop; kioskd always does this. The visit reaches
its sink at a later frame (or tick), and `flush` waits for every pending one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import cast

import cv2
import numpy as np

from kiosk.classify import Classifier, crop_face
from kiosk.counters import Counters
from kiosk.detect import Box
from kiosk.focus import FocusedDetector
from kiosk.frames import Frame, valid_image
from kiosk.gate import Gate
from kiosk.labels import AGE_GROUPS, CheckStatus, VisitStatus
from kiosk.lifecycle import Part
from kiosk.ordered import OrderedWorker
from kiosk.track import Track, Tracker
from kiosk.visit import Check, Visit

log = logging.getLogger("kioskd")

#: Closed visits (and checks behind them) waiting for the classify thread before the frame
#: loop waits too. Each holds its best crops, at most 5 x 112x112x3 bytes = 188 kB: 6 MB at
#: most. A door does not close 32 visits faster than they are classified unless the device
#: cannot keep up at all, and then waiting (and saying so) beats losing visits.
MAX_PENDING = 32


@dataclass(frozen=True, slots=True)
class Demographics:
    age_group: str
    age_confidence: float
    gender: str
    gender_confidence: float

    @classmethod
    def from_probabilities(cls, age: np.ndarray, female: float) -> Demographics:
        """The most likely group and gender from averaged class probabilities."""
        best = int(np.argmax(age))
        return cls(
            age_group=AGE_GROUPS[best],
            age_confidence=float(age[best]),
            gender="female" if female >= 0.5 else "male",
            gender_confidence=max(female, 1 - female),
        )


@dataclass(frozen=True, slots=True)
class ClosedVisit:
    """A closed track whose check passed, on its way to the classifier: all but demographics."""

    device_id: str
    started_at: datetime
    ended_at: datetime
    temperature_c: float | None
    temperature_status: VisitStatus
    frames: int
    skin_c: float | None = None

    def classified(self, demo: Demographics, model_version: str) -> Visit:
        return Visit(
            device_id=self.device_id,
            started_at=self.started_at,
            ended_at=self.ended_at,
            age_group=demo.age_group,
            age_confidence=demo.age_confidence,
            gender=demo.gender,
            gender_confidence=demo.gender_confidence,
            temperature_c=self.temperature_c,
            temperature_status=self.temperature_status,
            frames=self.frames,
            model_version=model_version,
            skin_c=self.skin_c,
        )


def is_blank(image: np.ndarray) -> bool:
    """An all-black (or all-one-level) frame: a covered lens or a dead sensor; checked sparsely."""
    sample = image[::8, ::8]
    return int(sample.max()) - int(sample.min()) < 8


def sharpness(image: np.ndarray, box: Box) -> float:
    """Laplacian variance of the face on a small grey thumbnail: blurred faces score low."""
    face = image[box.y : box.y + box.h, box.x : box.x + box.w]
    if face.size == 0:
        return 0.0
    thumb = cv2.resize(face, (32, 32), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var())


def crop_score(image: np.ndarray, box: Box) -> float:
    """Larger and sharper faces are better crops to classify."""
    return box.area * min(1.0, sharpness(image, box) / 200.0)


class Pipeline(Part):
    def __init__(
        self,
        detector: FocusedDetector,
        tracker: Tracker,
        classifier: Classifier,
        gate: Gate,
        on_visit: Callable[[Visit], None],
        on_check: Callable[[Check], None],
        counters: Counters,
        device_id: str,
        classify_off_thread: bool = False,
    ) -> None:
        self.detector = detector
        self.tracker = tracker
        self.classifier = classifier
        self.gate = gate
        self.on_visit = on_visit
        self.on_check = on_check
        self.counters = counters
        self.device_id = device_id
        self.closing: OrderedWorker[Visit | Check] = OrderedWorker(
            self._deliver, MAX_PENDING, threaded=classify_off_thread, name="classify"
        )

    def process(self, frame: Frame) -> None:
        if not valid_image(frame.image) or is_blank(frame.image):
            # Counted and skipped, but time still passes: tracks of people gone still close.
            self.counters.frames_rejected += 1
            self.tick(frame.t_mono, frame.t_wall)
            return
        boxes = self.detector.detect(frame.image, [t.box for t in self.tracker.tracks])
        self.counters.faces += len(boxes)
        update = self.tracker.update(boxes, frame.t_mono, frame.t_wall)
        for track, box in update.seen:
            self.gate.observe(track.id, box, frame)
            if self.tracker.wants_crop(track, box.area):
                score = crop_score(frame.image, box)
                if self.tracker.wants_crop(track, score):
                    self.tracker.add_crop(track, score, crop_face(frame.image, box))
        self._finish(update.closed, update.discarded)
        self.counters.frame_done(frame.t_mono)

    def tick(self, t_mono: float, t_wall: datetime) -> None:
        """No frame arrived: still end the tracks whose person has gone."""
        update = self.tracker.update([], t_mono, t_wall)
        self._finish(update.closed, update.discarded)

    def flush(self) -> None:
        """Close every open track (those seen often enough become visits) and wait until
        every closed visit is classified and handed to its sink."""
        update = self.tracker.close_all()
        self._finish(update.closed, update.discarded)
        self.closing.drain()

    def close(self) -> None:
        """Flush, then stop the classify thread (shutdown); idempotent."""
        self.flush()
        self.closing.close()

    def _finish(self, closed: list[Track], discarded: list[Track]) -> None:
        for track in discarded:
            self.gate.forget(track.id)
        for track in closed:
            result = self.gate.decide(track.id, track.first_mono, track.last_mono)
            self.counters.checks[result.status] += 1
            if not result.record:
                self.closing.put(
                    Check(
                        self.device_id,
                        track.last_wall,
                        cast(CheckStatus, result.status),
                        result.temperature_c,
                        skin_c=result.skin_c,
                    )
                )
                continue
            visit = ClosedVisit(
                device_id=self.device_id,
                # From the monotonic duration: a wall-clock step mid-visit cannot bend it.
                started_at=track.last_wall - timedelta(seconds=track.duration_s),
                ended_at=track.last_wall,
                temperature_c=result.temperature_c,
                temperature_status=cast(VisitStatus, result.status),  # recorded: not fail
                frames=track.frames,
                skin_c=result.skin_c,
            )
            self.closing.submit(partial(self._classified, visit, self.demographics(track)))
            log.debug(
                "track %d closed after %d frames: %d records wait for the classifier",
                track.id, track.frames, len(self.closing),
            )  # fmt: skip
        self.closing.collect()

    def _classified(self, closed: ClosedVisit, demographics: Callable[[], Demographics]) -> Visit:
        """On the classify thread: touches the crops it was given and the classifier only."""
        return closed.classified(demographics(), self.classifier.model_version)

    def _deliver(self, done: Future[Visit | Check]) -> None:
        """On the frame thread, in closing order: a record to its sink; a failure logged."""
        try:
            record = done.result()
        except Exception:
            self.counters.visits_dropped += 1
            log.exception("classifying a closed visit failed: the visit is lost")
            return
        if isinstance(record, Visit):
            self.on_visit(record)
        else:
            self.on_check(record)

    def demographics(self, track: Track) -> Callable[[], Demographics]:
        """The classification of a closed track's visit, to run later on any thread: it takes
        the track's crops with it, so the track itself is not touched again."""
        crops = [crop for _, crop in track.crops]
        track.crops.clear()
        return partial(self.classify, crops)

    def classify(self, crops: list[np.ndarray]) -> Demographics:
        """Average the class probabilities over a track's best crops."""
        t0 = time.perf_counter()
        age, female = self.classifier.probabilities(crops)
        per_face_ms = (time.perf_counter() - t0) * 1000 / max(1, len(female))
        self.counters.inference_ms.append(per_face_ms)
        return Demographics.from_probabilities(age.mean(axis=0), float(female.mean()))
