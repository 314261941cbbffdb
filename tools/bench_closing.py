"""Frame loop with visits closing: each closing visit classified inline against off-thread.

The last section of tools/bench.py (`python tools/bench.py --only closing` runs it alone).
A rendered clip in which a visitor comes and goes every 2 s (ten visits in 20 s) goes through
kioskd's fast path (real Pipeline, detector, tracker, LiteRT classifier), alternately with the
closing visits classified on the frame thread (inline, kioskd before issue 18) and on the
classify thread (kioskd now), each run in its own child process. Two classifiers: the shipped
model, and the seed's Levi-Hassner network in float32 (random weights, timing only; about
17 ms a face here, so ~85 ms for a visit's 5 crops), standing in for a larger model or a
board several times slower. The child is pinned to one core like the rest of the bench, so
the classify thread has no core of its own (a Pi has four): the harder case for off-thread.

* paced: the clip at its 15 fps through the threaded camera reader, as a live camera delivers
  it; a loop that stalls misses frames, because the reader keeps only the newest one.
* unpaced: decoded as fast as consumed (`camera.realtime: false`): throughput.

Per run: fps (wall clock), the longest and the 99th-percentile pipeline call (process or tick,
wall), calls longer than the 67 ms frame interval, visits stored, CPU ms per classify call.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kiosk.classify import Classifier  # noqa: E402
from kiosk.counters import Counters  # noqa: E402
from kiosk.frames import CameraSource  # noqa: E402
from kiosk.visit import Visit  # noqa: E402
from tools.bench import (  # noqa: E402
    CAMERA_FPS,
    StageClock,
    build_pipeline,
    child,
    median_run,
    one_thread,
    ratio,
)
from tools.make_demo import Appearance, render, write_video  # noqa: E402

#: One visitor every VISIT_EVERY_S at the same spot: 10 visits in 20 s (measured with kioskd).
VISIT_EVERY_S = 2.0
MODES = ("inline", "off-thread")


def closing_clip(work: Path, seconds: float = 20.0) -> Path:
    """Visitors one after another, each standing 0.3 s (rendered once, cached in `work`)."""
    path = work / f"closing_{seconds:g}s.mp4"
    if not path.is_file():
        script = tuple(
            Appearance(("collins", "hopper")[i % 2], -0.8 + VISIT_EVERY_S * i, 0.3, 320, 125)
            for i in range(int(seconds / VISIT_EVERY_S) + 2)
        )
        work.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.mp4")
        write_video(tmp, render(script, seconds))
        tmp.replace(path)
    return path


def measure(spec: dict) -> dict:
    """One run; `spec`: clip, models, mode, paced, cpu."""
    one_thread(spec.get("cpu"))
    counters = Counters()
    visits: list[Visit] = []
    classifier = Classifier(spec["models"], num_threads=1)
    pipeline = build_pipeline(
        "fast", classifier, visits.append, counters, off_thread=spec["mode"] == "off-thread"
    )
    clock = StageClock()  # thread CPU time, on whichever thread classifies
    clock.wrap(pipeline.classifier, "probabilities", "classify")
    source = CameraSource(str(spec["clip"]), fps=CAMERA_FPS, realtime=spec["paced"]).start()
    calls_s: list[float] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        frame = source.read(timeout=0.25)
        t0 = time.perf_counter()
        if frame is not None:
            pipeline.process(frame)
        elif source.ended:
            break
        else:
            pipeline.tick(time.monotonic(), datetime.now(UTC))
        calls_s.append(time.perf_counter() - t0)
    pipeline.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    source.close()
    calls_ms = np.asarray(calls_s) * 1000
    n = counters.frames
    return {
        "mode": spec["mode"],
        "paced": spec["paced"],
        "model_version": classifier.model_version,
        "frames": n,
        "clip_frames": clip_frames(spec["clip"]),
        "wall_s": wall,
        "fps": n / wall if wall else 0.0,
        "cpu_ms_per_frame": cpu * 1000 / max(1, n),
        "loop_ms_max": float(calls_ms.max(initial=0.0)),
        "loop_ms_p99": float(np.percentile(calls_ms, 99)) if len(calls_ms) else 0.0,
        "loop_calls_over_interval": int((calls_ms > 1000 / CAMERA_FPS).sum()),
        "visits": len(visits),
        "classify_calls": clock.calls["classify"],
        "classify_cpu_ms_per_call": clock.cpu_s["classify"]
        * 1000
        / max(1, clock.calls["classify"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def clip_frames(clip: str) -> int:
    cap = cv2.VideoCapture(clip)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def table(inline: dict, off: dict) -> list[str]:
    rows = [f"  {'':40s}{'inline':>10s}{'off-thread':>12s}{'off/inline':>12s}"]

    def row(name: str, key: str, fmt: str = ".1f") -> None:
        a, b = inline[key], off[key]
        rows.append(f"  {name:40s}{a:10{fmt}}{b:12{fmt}}{ratio(b, a):>12s}")

    row("fps (wall clock)", "fps")
    rows.append(
        f"  {'frames processed / in the clip':40s}"
        f"{inline['frames']:>6d}/{inline['clip_frames']:<3d}"
        f"{off['frames']:>8d}/{off['clip_frames']:<3d}"
    )
    row("longest pipeline call (ms, wall)", "loop_ms_max")
    row("99th percentile call (ms, wall)", "loop_ms_p99")
    interval = f"calls over the {1000 / CAMERA_FPS:.0f} ms frame interval"
    row(interval, "loop_calls_over_interval", "d")
    row("process CPU ms/frame (all threads)", "cpu_ms_per_frame", ".2f")
    row("classify CPU ms per visit", "classify_cpu_ms_per_call", ".1f")
    row("visits stored", "visits", "d")
    return rows


def section(work: Path, models: dict[str, str], repeat: int, cpu: int | None, seconds: float):
    """Print and return the inline/off-thread comparison for each model, paced and unpaced."""
    clip = closing_clip(work, seconds)
    pin = ["--cpu", str(-1 if cpu is None else cpu)]
    results: dict = {"clip": clip.name}
    for label, model_dir in models.items():
        for paced in (True, False):
            runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
            for _ in range(repeat):
                for mode in MODES:
                    spec = {"clip": str(clip), "models": model_dir, "mode": mode, "paced": paced}
                    runs[mode].append(child(["--measure", json.dumps(spec), *pin], __file__))
            # Paced: the run with the median fps; unpaced: the median CPU per frame.
            by = "fps" if paced else "cpu_ms_per_frame"
            pick = {mode: median_run(r, by) for mode, r in runs.items()}
            key = f"{label} {'paced' if paced else 'unpaced'}"
            results[key] = {"median": pick, "runs": runs}
            how = f"paced at {CAMERA_FPS:g} fps" if paced else "unpaced (as fast as decoded)"
            version = pick["inline"]["model_version"]
            print(f"\nvisits closing, {label} ({version}): {clip.name}, {how}")
            print("\n".join(table(pick["inline"], pick["off-thread"])), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) == 4 and args[0] == "--measure" and args[2] == "--cpu":
        cpu = int(args[3])
        print(json.dumps(measure({**json.loads(args[1]), "cpu": None if cpu < 0 else cpu})))
        return 0
    print("run it from tools/bench.py: python tools/bench.py --only closing", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
