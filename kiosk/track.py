"""One track per person: associates face boxes across frames and decides when a visit ends."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from kiosk.config import TrackerConfig
from kiosk.detect import Box


@dataclass
class Track:
    id: int
    box: Box
    first_mono: float
    last_mono: float
    first_wall: datetime
    last_wall: datetime
    frames: int = 1
    # (score, crop) of the best few faces, best first; kept in memory only, never written.
    crops: list[tuple[float, np.ndarray]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.last_mono - self.first_mono


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    seen: list[tuple[Track, Box]]  # tracks with a face in this frame
    closed: list[Track]  # tracks that became visits (seen in enough frames)
    discarded: list[Track]  # tracks that ended too short to count


class Tracker:
    """Greedy association by overlap, falling back to centre distance for fast movement."""

    def __init__(
        self,
        iou_threshold: float = 0.2,
        max_gap_s: float = 1.0,
        min_frames: int = 5,
        best_crops: int = 5,
        max_jump: float = 0.6,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.max_gap_s = max_gap_s
        self.min_frames = min_frames
        self.best_crops = best_crops
        self.max_jump = max_jump  # centre move allowed per frame, in face widths
        self.tracks: list[Track] = []
        self._next_id = 1

    @classmethod
    def from_config(cls, t: TrackerConfig) -> Tracker:
        return cls(t.iou_threshold, t.max_gap_s, t.min_frames, t.best_crops)

    def _affinity(self, track: Track, box: Box) -> float:
        """Higher is better; 0 means the box cannot belong to the track."""
        iou = track.box.iou(box)
        if iou >= self.iou_threshold:
            return 1.0 + iou
        (ax, ay), (bx, by) = track.box.center, box.center
        dist = math.hypot(ax - bx, ay - by) / max(track.box.w, box.w, 1)
        size_ratio = min(track.box.w, box.w) / max(track.box.w, box.w, 1)
        if dist <= self.max_jump and size_ratio > 0.6:
            return 1.0 - dist / self.max_jump * 0.99
        return 0.0

    def update(self, boxes: list[Box], t_mono: float, t_wall: datetime) -> TrackUpdate:
        # Age first: a face unseen for longer than max_gap_s ends its visit even when the next
        # frame (after a camera stall) shows it again, whether or not ticks came in between.
        ended = [t for t in self.tracks if t_mono - t.last_mono > self.max_gap_s]
        self.tracks = [t for t in self.tracks if t_mono - t.last_mono <= self.max_gap_s]
        pairs = sorted(
            (
                (a, ti, bi)
                for ti, track in enumerate(self.tracks)
                for bi, box in enumerate(boxes)
                if (a := self._affinity(track, box)) > 0
            ),
            reverse=True,
        )
        used_t: set[int] = set()
        used_b: set[int] = set()
        seen: list[tuple[Track, Box]] = []
        for _, ti, bi in pairs:
            if ti in used_t or bi in used_b:
                continue
            used_t.add(ti)
            used_b.add(bi)
            track = self.tracks[ti]
            track.box, track.last_mono, track.last_wall = boxes[bi], t_mono, t_wall
            track.frames += 1
            seen.append((track, boxes[bi]))
        for bi, box in enumerate(boxes):
            if bi not in used_b:
                track = Track(self._next_id, box, t_mono, t_mono, t_wall, t_wall)
                self._next_id += 1
                self.tracks.append(track)
                seen.append((track, box))
        return self._split(seen, ended)

    def close_all(self) -> TrackUpdate:
        """End every open track (shutdown or end of input)."""
        ended, self.tracks = self.tracks, []
        return self._split([], ended)

    def _split(self, seen: list[tuple[Track, Box]], ended: list[Track]) -> TrackUpdate:
        closed = [t for t in ended if t.frames >= self.min_frames]
        discarded = [t for t in ended if t.frames < self.min_frames]
        return TrackUpdate(seen, closed, discarded)

    def wants_crop(self, track: Track, score: float) -> bool:
        return len(track.crops) < self.best_crops or score > track.crops[-1][0]

    def add_crop(self, track: Track, score: float, crop: np.ndarray) -> None:
        track.crops.append((score, crop))
        track.crops.sort(key=lambda sc: sc[0], reverse=True)
        del track.crops[self.best_crops :]
