"""Face temperature from a radiometric frame, the way screening practice takes it.

IEC 80601-2-59 / ISO/TR 13154: measure the inner canthus (the hottest part of a frontal face),
one person at a time, and correct the camera against a reference emitter of known temperature
in view. Here:

* the reference emitter (a blackbody or heated disc) is a configured box or found automatically
  as a small, round, uniformly hot spot with cooler surroundings; its measured-minus-known
  offset, smoothed over time, corrects every reading, and its pixels never count as a face;
* the face region is a registered face box, or in `single_person` mode the largest warm,
  head-sized blob (only the top, head part of it);
* the hot-spot estimate is the mean of the hottest few pixels after a 3x3 median filter has
  removed isolated outliers, using only pixels inside the plausible skin range;
* an emissivity correction (reflected radiation taken as the scene median) and a constant
  offset are applied last.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.config import ThermalConfig
from kiosk.thermal.bodytemp import background_c
from kiosk.thermal.frame import frame_problem

KELVIN = 273.15
# The reference is searched for as a round spot of radius up to this many pixels.
DISC_MAX_RADIUS = 8
DISC_ANNULUS = (9.0, 13.0)
DISC_MIN_CONTRAST_C = 2.0
# Frames in a row the auto-found reference must sit in the same place before it is trusted.
DISC_LOCK_FRAMES = 3
# Frames in a row a locked reference may be unreadable (occluded) before it is searched anew.
DISC_RELOCK_FRAMES = 90


@dataclass(frozen=True, slots=True)
class Disc:
    """The reference emitter in thermal pixels: centre (row, col) and radius, or a box."""

    row: float
    col: float
    radius: float
    box: tuple[int, int, int, int] | None = None  # x, y, w, h when configured

    def mask(self, shape: tuple[int, int], grow: float = 0.0) -> np.ndarray:
        if self.box is not None:
            x, y, w, h = self.box
            g = int(round(grow))
            m = np.zeros(shape, bool)
            m[max(0, y - g) : y + h + g, max(0, x - g) : x + w + g] = True
            return m
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        return (yy - self.row) ** 2 + (xx - self.col) ** 2 <= (self.radius + grow) ** 2


@dataclass(frozen=True, slots=True)
class Reading:
    """One frame's measurement of one face, with what it takes to judge its quality."""

    temperature_c: float | None  # corrected skin hot-spot; None when unmeasured
    reason: str  # "ok" or why there is no temperature
    face_pixels: int = 0  # size of the face region in thermal pixels
    pixels_used: int = 0  # skin-range pixels inside it
    raw_hotspot_c: float | None = None  # before any correction
    offset_c: float | None = None  # reference offset that was subtracted
    t_mono: float = 0.0
    background_c: float | None = None  # the room in this frame (bodytemp.background_c)

    @property
    def ok(self) -> bool:
        return self.temperature_c is not None


def parse_box(text: str) -> tuple[int, int, int, int] | None:
    """'x,y,w,h' (thermal pixels) to a tuple; 'auto'/'off' give None."""
    if text in ("auto", "off", ""):
        return None
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 4 or parts[2] <= 0 or parts[3] <= 0:
        raise ValueError(f"reference box must be x,y,w,h with positive size, got {text!r}")
    return parts[0], parts[1], parts[2], parts[3]


def _annulus(image: np.ndarray, row: float, col: float, r0: float, r1: float) -> np.ndarray:
    h, w = image.shape
    y0, y1 = max(0, int(row - r1)), min(h, int(row + r1) + 1)
    x0, x1 = max(0, int(col - r1)), min(w, int(col + r1) + 1)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    d2 = (yy - row) ** 2 + (xx - col) ** 2
    return image[y0:y1, x0:x1][(d2 >= r0 * r0) & (d2 < r1 * r1)]


def disc_contrast(smoothed: np.ndarray, row: float, col: float) -> float | None:
    """How much a round spot at (row, col) stands out as a reference; None if it does not."""
    core = _annulus(smoothed, row, col, 0.0, 2.5)
    ring = _annulus(smoothed, row, col, *DISC_ANNULUS)
    if core.size < 5 or ring.size < 20:
        return None
    plateau, background = float(np.median(core)), float(np.median(ring))
    contrast = plateau - background
    if contrast < DISC_MIN_CONTRAST_C:
        return None
    # Uniformly cooler surroundings: a face's hot canthus has warm skin all around it.
    if float(np.percentile(ring, 90)) > plateau - contrast / 2:
        return None
    # Compact: nothing above half height between the disc's edge and the ring.
    edge = _annulus(smoothed, row, col, DISC_MAX_RADIUS - 1.0, DISC_ANNULUS[0])
    if edge.size and float(np.mean(edge > background + contrast / 2)) > 0.15:
        return None
    return contrast


def find_disc(smoothed: np.ndarray, candidates: int = 40) -> Disc | None:
    """The most prominent round hot spot that passes `disc_contrast`, with its radius."""
    peaks = smoothed == cv2.dilate(smoothed, np.ones((5, 5), np.uint8))
    rows, cols = np.nonzero(peaks)
    if rows.size == 0:
        return None
    order = np.argsort(-smoothed[rows, cols])[:candidates]
    best: tuple[float, Disc] | None = None
    for i in order:
        disc = _centred(smoothed, int(rows[i]), int(cols[i]))
        if disc is None:
            continue
        contrast = disc_contrast(smoothed, disc.row, disc.col)
        if contrast is not None and (best is None or contrast > best[0]):
            best = (contrast, disc)
    return None if best is None else best[1]


def _centred(smoothed: np.ndarray, row: int, col: int) -> Disc | None:
    """The spot around a peak, re-centred on its half-height region, with its radius."""
    region = _disc_region(smoothed, Disc(row, col, DISC_MAX_RADIUS))
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        return None
    return Disc(float(ys.mean()), float(xs.mean()), float(np.sqrt(ys.size / np.pi)))


def _disc_region(image: np.ndarray, disc: Disc) -> np.ndarray:
    """The emitter's pixels: inside the search radius and above half height over its ring."""
    full = disc.mask(image.shape)
    core = _annulus(image, disc.row, disc.col, 0.0, 2.5)
    ring = _annulus(image, disc.row, disc.col, *DISC_ANNULUS)
    if core.size == 0 or ring.size == 0:
        return full
    plateau, background = float(np.median(core)), float(np.median(ring))
    return full & (image >= background + 0.5 * (plateau - background))


def disc_reading(celsius: np.ndarray, disc: Disc) -> float:
    """The emitter's apparent temperature.

    A configured box is taken as lying inside the emitter: the median of its pixels. A found
    disc is the median over its whole face out to half height, as kiosk firmware measures its
    reference, so a calibration value set on such a device carries over.
    """
    if disc.box is not None:
        return float(np.median(celsius[disc.mask(celsius.shape)]))
    search = Disc(disc.row, disc.col, DISC_MAX_RADIUS)
    return float(np.median(celsius[_disc_region(celsius, search)]))


class ReferenceTracker:
    """Finds (or is told) where the reference is and keeps a smoothed offset from it."""

    def __init__(
        self,
        mode: str = "auto",
        known_c: float | None = None,
        smoothing: float = 0.1,
    ) -> None:
        self.mode = "box" if parse_box(mode) else mode
        self.box = parse_box(mode)
        self.known_c = known_c
        self.smoothing = smoothing
        self.disc: Disc | None = None
        self.offset_c: float | None = None
        self.last_reading_c: float | None = None
        self._candidate: Disc | None = None
        self._candidate_frames = 0
        self._misses = 0

    def update(self, celsius: np.ndarray, smoothed: np.ndarray) -> None:
        if self.mode == "off":
            return
        if self.box is not None:
            self.disc = Disc(0, 0, 0, box=self.box)
        elif not self._locate(smoothed):
            return
        if self.disc is None:
            return
        self.last_reading_c = disc_reading(celsius, self.disc)
        if self.known_c is None:
            return
        offset = self.last_reading_c - self.known_c
        if self.offset_c is None:
            self.offset_c = offset
        else:
            self.offset_c += self.smoothing * (offset - self.offset_c)

    def _locate(self, smoothed: np.ndarray) -> bool:
        """Whether the reference can be read in this frame (found, or locked and visible)."""
        if self.disc is not None:
            if disc_contrast(smoothed, self.disc.row, self.disc.col) is not None:
                self._misses = 0
                return True
            # Someone in front of it or beside it: hold the offset, keep the place for a while.
            self._misses += 1
            if self._misses < DISC_RELOCK_FRAMES:
                return False
            self.disc = None
        found = find_disc(smoothed)
        if found is None:
            self._candidate, self._candidate_frames = None, 0
            return False
        same = (
            self._candidate is not None
            and abs(found.row - self._candidate.row) <= 2
            and abs(found.col - self._candidate.col) <= 2
        )
        self._candidate = found
        self._candidate_frames = self._candidate_frames + 1 if same else 1
        if self._candidate_frames >= DISC_LOCK_FRAMES:
            self.disc, self._misses = found, 0
            return True
        return False


@dataclass(frozen=True, slots=True)
class MeasureSettings:
    emissivity: float = 0.98
    offset_c: float = 0.0
    skin_min_c: float = 30.0
    skin_max_c: float = 43.0
    min_pixels: int = 12
    hottest_pixels: int = 8
    # single_person mode: the head blob must cover at least this share of the frame.
    min_face_fraction: float = 0.015

    @classmethod
    def from_config(cls, cfg: ThermalConfig) -> MeasureSettings:
        return cls(
            emissivity=cfg.emissivity,
            offset_c=cfg.offset_c,
            skin_min_c=cfg.skin_min_c,
            skin_max_c=cfg.skin_max_c,
            min_pixels=cfg.min_pixels,
            hottest_pixels=cfg.hottest_pixels,
            min_face_fraction=cfg.min_face_fraction,
        )


def emissivity_correct(apparent_c: float, emissivity: float, reflected_c: float) -> float:
    """Object temperature from an apparent (emissivity 1) one, total-radiance approximation."""
    if emissivity >= 1.0:
        return apparent_c
    ta, tr = apparent_c + KELVIN, reflected_c + KELVIN
    t4 = (ta**4 - (1.0 - emissivity) * tr**4) / emissivity
    return float(t4**0.25 - KELVIN)


def warm_threshold(corrected: np.ndarray, candidates: np.ndarray) -> float:
    """Where a person stands out from the room: Otsu's split of the frame's temperatures.

    A warm room puts walls inside the skin range, so skin range alone cannot find the person;
    the split between the background mode and the warm mode does, in warm and cold rooms alike.
    """
    if not candidates.any():
        return float("inf")
    lo, hi = np.percentile(corrected, [1.0, 99.9])
    if hi - lo < 1e-3:
        return float("inf")
    scaled = np.clip((corrected - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(lo + level / 255.0 * (hi - lo))


def head_region(blob: np.ndarray) -> np.ndarray:
    """The top, head part of a person blob: down to 1.3 head widths below its top row."""
    rows = np.nonzero(blob.any(axis=1))[0]
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    widths = blob[top:bottom].sum(axis=1)
    # The head's width: the widest row within the first head-ish span (one blob width deep).
    span = max(1, min(bottom - top, int(widths.max())))
    head_w = int(widths[:span].max())
    limit = min(bottom, top + max(1, int(round(1.3 * head_w))))
    out = np.zeros_like(blob)
    out[top:limit] = blob[top:limit]
    return out


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked frame, smoothed and corrected by the reference, ready for face readings."""

    corrected: np.ndarray
    skin: np.ndarray  # skin-range pixels warmer than the room, reference excluded
    offset_c: float
    reflected_c: float  # scene median, taken as the reflected temperature
    t_mono: float
    background_c: float | None  # the commonest temperature outside the person and reference


class FaceThermometer:
    """Measures one face per frame: registered box or single-person blob, with the reference."""

    def __init__(self, settings: MeasureSettings, reference: ReferenceTracker) -> None:
        self.settings = settings
        self.reference = reference

    def measure(
        self,
        celsius: np.ndarray,
        box: tuple[int, int, int, int] | None = None,
        t_mono: float = 0.0,
    ) -> Reading:
        """One reading; `box` (x, y, w, h in thermal pixels) or None for single_person mode."""
        prepared = self.prepare(celsius, t_mono)
        if isinstance(prepared, Reading):
            return prepared
        return self.read(prepared, box)

    def prepare(self, celsius: np.ndarray, t_mono: float = 0.0) -> Prepared | Reading:
        """Check and smooth a frame and update the reference from it (once per frame); a
        Reading with the reason when the frame cannot be measured."""
        problem = frame_problem(celsius)
        if problem is not None:
            return Reading(None, f"bad frame: {problem}", t_mono=t_mono)
        s = self.settings
        smoothed = cv2.medianBlur(celsius.astype(np.float32), 3)
        self.reference.update(celsius, smoothed)
        offset = self.reference.offset_c or 0.0
        corrected = smoothed - np.float32(offset)
        skin = (corrected >= s.skin_min_c) & (corrected <= s.skin_max_c)
        disc = np.zeros(celsius.shape, bool)
        if self.reference.disc is not None:
            disc = self.reference.disc.mask(celsius.shape, grow=3.0)
            skin &= ~disc
        person = corrected >= warm_threshold(corrected, skin)
        skin &= person
        room = background_c(corrected, person | disc)
        return Prepared(corrected, skin, offset, float(np.median(corrected)), t_mono, room)

    def read(self, p: Prepared, box: tuple[int, int, int, int] | None) -> Reading:
        s = self.settings
        if box is None:
            region = self._largest_head(p.skin)
            if region is None:
                return Reading(None, "no warm head-sized blob", t_mono=p.t_mono)
        else:
            region = np.zeros(p.corrected.shape, bool)
            x, y, w, h = box
            region[max(0, y) : max(0, y + h), max(0, x) : max(0, x + w)] = True
            if not region.any():
                return Reading(None, "face box outside the thermal frame", t_mono=p.t_mono)
        face_pixels = int(region.sum())
        values = p.corrected[region & p.skin]
        if values.size < max(s.min_pixels, s.hottest_pixels):
            return Reading(
                None, "too few skin pixels", face_pixels, int(values.size), t_mono=p.t_mono
            )
        hottest = np.partition(values, values.size - s.hottest_pixels)[-s.hottest_pixels :]
        hotspot = float(hottest.mean())
        temperature = emissivity_correct(hotspot, s.emissivity, p.reflected_c) + s.offset_c
        if not s.skin_min_c <= temperature <= s.skin_max_c:
            return Reading(
                None, "outside the skin range after correction", face_pixels, int(values.size),
                raw_hotspot_c=hotspot + p.offset_c, offset_c=p.offset_c, t_mono=p.t_mono,
                background_c=p.background_c,
            )  # fmt: skip
        return Reading(
            temperature,
            "ok",
            face_pixels,
            int(values.size),
            raw_hotspot_c=hotspot + p.offset_c,
            offset_c=p.offset_c,
            t_mono=p.t_mono,
            background_c=p.background_c,
        )

    def _largest_head(self, skin: np.ndarray) -> np.ndarray | None:
        mask = cv2.morphologyEx(skin.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return None
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[biggest, cv2.CC_STAT_AREA] < self.settings.min_face_fraction * skin.size:
            return None
        return head_region(labels == biggest)


def aggregate(readings: list[Reading], best: int = 5) -> tuple[float | None, float | None]:
    """A visit's temperature and its stability: the median of its hottest valid readings.

    The inner canthus is only seen when the face is frontal and near; frames where it is not
    read low, never high (a hot-spot cannot exceed the hottest skin), so the best frames are
    the hottest ones. Returns (temperature, spread of those readings) or (None, None).
    """
    values = sorted(r.temperature_c for r in readings if r.temperature_c is not None)
    if not values:
        return None, None
    top = values[-best:]
    return float(np.median(top)), float(max(top) - min(top))


def room_c(readings: list[Reading]) -> float | None:
    """A visit's room temperature from its frames: the median of their backgrounds."""
    values = [r.background_c for r in readings if r.ok and r.background_c is not None]
    return float(np.median(values)) if values else None
