"""Closing visits are classified off the frame thread: frames keep flowing, nothing is lost.

The real Pipeline, detector, tracker, OpenCV decoding and LiteRT classifier on the bundled demo
(five visits); tests/slow_classifier.py makes the classifier slower than a frame (timing only).
A frame's latency is its wall time less the time its thread waited for a CPU (Linux schedstat):
on a machine loaded by other processes, that wait alone can exceed a frame interval, and it is
not the pipeline's doing. Sleeping, waiting for the GIL or for the classifier all still count.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from kiosk.classify import Classifier
from kiosk.counters import Counters
from kiosk.frames import CameraSource, demo_video_path
from kiosk.ordered import OrderedWorker
from kiosk.visit import Visit
from tests.kioskd import start_kioskd, stored_visits, write_config
from tests.slow_classifier import SlowClassifier
from tools.bench import build_pipeline
from tools.make_demo import FPS, Appearance, render, write_video

FRAME_INTERVAL_S = 1.0 / FPS
SCHEDSTAT = Path("/proc/thread-self/schedstat")
#: Far longer than a frame at 15 fps (67 ms): a 5 ms-per-face model on 5 crops on a slow board.
SLOW_S = 0.5


@dataclass
class Replay:
    visits: list[Visit]
    frame_s: list[float]  # latency of each pipeline.process call (see the module docstring)
    counters: Counters
    t0: datetime


def cpu_wait_s() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (0 where not reported)."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def replay(classifier: Classifier, off_thread: bool, max_pending: int | None = None) -> Replay:
    """The demo as fast as it decodes (`camera.realtime: false`), each frame timed."""
    visits: list[Visit] = []
    counters = Counters()
    pipeline = build_pipeline("fast", classifier, visits.append, counters, off_thread=off_thread)
    if max_pending is not None:
        pipeline.closing.max_pending = max_pending
    source = CameraSource(str(demo_video_path()), realtime=False).start()
    frame_s: list[float] = []
    t0: datetime | None = None
    while (frame := source.read()) is not None:
        t0 = t0 or frame.t_wall
        start, waited = time.perf_counter(), cpu_wait_s()
        pipeline.process(frame)
        frame_s.append(time.perf_counter() - start - (cpu_wait_s() - waited))
    pipeline.close()
    source.close()
    assert t0 is not None
    return Replay(visits, frame_s, counters, t0)


def outcome(run: Replay) -> list[tuple]:
    """What a visit record says, in the order the visits reached the sink."""
    return [
        (
            round((v.started_at - run.t0).total_seconds(), 3),
            round((v.ended_at - run.t0).total_seconds(), 3),
            v.frames,
            v.age_group,
            v.gender,
            round(v.age_confidence, 6),
            round(v.gender_confidence, 6),
        )
        for v in run.visits
    ]


@pytest.fixture(scope="module")
def inline() -> Replay:
    """The reference: the shipped classifier on the frame thread."""
    return replay(Classifier(), off_thread=False)


def test_same_visits_in_the_same_order_off_thread(inline: Replay) -> None:
    assert len(inline.visits) == 5
    assert outcome(replay(Classifier(), off_thread=True)) == outcome(inline)


def test_a_slow_classifier_inline_stalls_one_frame_per_visit() -> None:
    run = replay(SlowClassifier(delay_s=SLOW_S), off_thread=False)
    assert sum(s >= SLOW_S for s in run.frame_s) == len(run.visits) == 5


def test_a_slow_classifier_off_thread_stalls_no_frame(inline: Replay) -> None:
    run = replay(SlowClassifier(delay_s=SLOW_S), off_thread=True)
    assert max(run.frame_s) < FRAME_INTERVAL_S, sorted(run.frame_s)[-5:]
    assert outcome(run) == outcome(inline)


def test_a_full_queue_makes_the_frame_loop_wait_and_loses_nothing(
    inline: Replay, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "kioskd"):
        run = replay(SlowClassifier(delay_s=0.3), off_thread=True, max_pending=1)
    assert outcome(run) == outcome(inline)
    assert "results pending, the frame loop waits for the oldest" in caplog.text
    assert "caught up after waiting" in caplog.text


def test_a_failed_classification_is_logged_and_the_loop_goes_on(
    inline: Replay, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "kioskd"):
        run = replay(SlowClassifier(delay_s=0.0, fail_calls=(2,)), off_thread=True)
    expected = outcome(inline)
    assert outcome(run) == expected[:1] + expected[2:]
    assert run.counters.visits_dropped == 1
    assert run.counters.frames == inline.counters.frames
    failed = [r for r in caplog.records if "classifying a closed visit failed" in r.message]
    assert len(failed) == 1 and "classifier call 2 failed" in caplog.text


def test_results_come_back_in_submission_order_on_the_callers_thread() -> None:
    got: list[tuple[str, str]] = []
    worker: OrderedWorker[str] = OrderedWorker(
        lambda done: got.append((done.result(), threading.current_thread().name)), 8
    )
    worker.submit(lambda: time.sleep(0.2) or "slow")
    worker.put("check")
    worker.submit(lambda: "fast")
    assert got == []  # the first job still runs; nothing overtakes it
    worker.close()
    me = threading.current_thread().name
    assert got == [("slow", me), ("check", me), ("fast", me)]
    worker.close()
    assert len(got) == 3


def test_not_threaded_delivers_at_once() -> None:
    got: list[int] = []
    worker: OrderedWorker[int] = OrderedWorker(lambda done: got.append(done.result()), 1, False)
    worker.submit(lambda: 1)
    worker.put(2)
    assert got == [1, 2] and len(worker) == 0


@pytest.fixture(scope="module")
def three_visitors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short visits that close within a second of each other, then one who stays."""
    path = tmp_path_factory.mktemp("clips") / "three.mp4"
    script = (
        Appearance("collins", 0.0, 0.3, 200, 130),
        Appearance("hopper", 0.6, 0.5, 460, 125, from_left=False),
        Appearance("collins", 4.0, 60.0, 330, 130),
    )
    write_video(path, render(script, 20.0))
    return path


def test_sigterm_stores_visits_open_and_queued_for_the_classifier(
    tmp_path: Path, three_visitors: Path
) -> None:
    cfg = write_config(
        tmp_path, log_level="DEBUG", camera={"source": str(three_visitors), "realtime": True}
    )
    proc = start_kioskd(cfg, module="tests.slow_kioskd", env={"SLOW_CLASSIFIER_DELAY_S": "5"})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            lines.append(line)
            if "closed after" in line and "2 records wait" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        time.sleep(3.0)  # the third visitor is in view; the second visit still waits
        assert len(stored_visits(tmp_path)) <= 1
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    out = "".join(lines) + out
    assert proc.returncode == 0, out
    assert "received SIGTERM" in out
    assert len(stored_visits(tmp_path)) == 3, out
    assert "lost" not in out
