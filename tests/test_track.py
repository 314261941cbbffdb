from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.detect import Box
from kiosk.track import Tracker

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(tracker, frames, fps=15.0):
    """Feed per-frame box lists; return all closed and discarded tracks."""
    closed, discarded = [], []
    t = 0.0
    for boxes in frames:
        u = tracker.update(boxes, t, T0)
        closed += u.closed
        discarded += u.discarded
        t += 1 / fps
    u = tracker.update([], t + 100, T0)
    return closed + u.closed, discarded + u.discarded


def test_standing_still_for_30_s_is_one_visit():
    tracker = Tracker(min_frames=5, max_gap_s=1.0)
    box = Box(300, 200, 120, 120)
    frames = [[box] if i % 7 else [] for i in range(30 * 15)]  # with occasional misses
    closed, _ = run(tracker, frames)
    assert len(closed) == 1
    assert closed[0].frames > 380


def test_two_people_side_by_side_are_two_visits():
    tracker = Tracker()
    frames = [[Box(100, 200, 110, 110), Box(420, 210, 110, 110)] for _ in range(60)]
    closed, _ = run(tracker, frames)
    assert len(closed) == 2
    assert {t.frames for t in closed} == {60}


def test_walking_in_fast_stays_one_track():
    tracker = Tracker()
    frames = [[Box(-60 + 30 * i, 200, 120, 120)] for i in range(20)]
    closed, _ = run(tracker, frames)
    assert len(closed) == 1


def test_gap_longer_than_max_gap_splits_visits():
    tracker = Tracker(max_gap_s=1.0)
    box = Box(300, 200, 120, 120)
    frames = [[box]] * 30 + [[]] * 30 + [[box]] * 30  # 2 s away in between
    closed, _ = run(tracker, frames)
    assert len(closed) == 2


def test_short_flickers_are_discarded():
    tracker = Tracker(min_frames=5)
    frames = [[Box(10, 10, 80, 80)]] * 3 + [[]] * 40
    closed, discarded = run(tracker, frames)
    assert closed == [] and len(discarded) == 1


def test_best_crops_keep_the_highest_scores():
    import numpy as np

    tracker = Tracker(best_crops=3)
    tracker.update([Box(0, 0, 10, 10)], 0.0, T0)
    track = tracker.tracks[0]
    for score in [5, 1, 9, 3, 7]:
        if tracker.wants_crop(track, score):
            tracker.add_crop(track, score, np.zeros((2, 2, 3), np.uint8))
    assert [s for s, _ in track.crops] == [9, 7, 5]


boxes_st = st.lists(
    st.builds(
        Box,
        st.integers(-50, 640),
        st.integers(-50, 480),
        st.integers(1, 300),
        st.integers(1, 300),
    ),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(boxes_st, max_size=60))
def test_every_box_belongs_to_exactly_one_track(frames):
    tracker = Tracker(min_frames=1)
    t = 0.0
    total_seen = 0
    ended = []
    for boxes in frames:
        u = tracker.update(boxes, t, T0)
        assert len(u.seen) == len(boxes)
        assert len({tr.id for tr, _ in u.seen}) == len(boxes)
        total_seen += len(boxes)
        ended += u.closed + u.discarded
        t += 0.1
    ended += tracker.close_all().closed
    assert sum(tr.frames for tr in ended) == total_seen
    assert len({tr.id for tr in ended}) == len(ended)
