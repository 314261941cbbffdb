"""Frame-path benchmark: kioskd's fast path against a naive pipeline, stage by stage, same run.

    python tools/bench.py                           # with the shipped models (kiosk/models)
    python tools/bench.py --models /tmp/fakemodels  # any model folder Classifier can load

Clips (640x480, 15 fps): the bundled demo; one face in view for the whole clip; an empty
scene. The last two are rendered with tools/make_demo.py and cached in --work. Each clip is
run by both pipelines, alternately, each run in its own subprocess (so peak RSS is its own):
frames are decoded as fast as they are consumed, like `camera.realtime: false`. The empty
scene is also replayed at its own 15 fps through the threaded camera reader, as a live
camera delivers it, for the share of one core the idle daemon costs.

* naive: full-frame Haar (scaleFactor 1.1, minNeighbors 5, min size 60 px) on every frame
  and every face classified on every frame by the seed's Levi-Hassner network in float32
  TFLite with random weights (timing only), built with TensorFlow on first use.
* fast: kioskd's own path with the config defaults (FocusedDetector: motion test, windows
  around tracked faces, Haar on a downscaled grey frame; the best crops of a track
  classified once per visit by the --models network).

Both use the real Tracker, Pipeline and a real SQLite Store; the gate is off (the default
config) except in one more run of the one-face clip, where kioskd's thermal gate replays a
real Lepton 3.5 kiosk recording from the shared data (the thermal stage is the gate's
observe call; the replay thread's CPU counts in the process figures). OpenCV and LiteRT
run at one thread. Stage figures are CPU time of the frame-loop thread (robust to other load
on the machine); fps is wall-clock; CPU ms/frame is the whole process (decoder and reader
threads included) per frame. Then: detection alone step by step from naive to kioskd's,
age+gender latency for one face with each network, the CPU cost of decoding one 640x480
MJPEG camera frame, and fps with visits closing, each classified on the frame thread against
off it (tools/bench_closing.py; `--only closing` runs that section alone). Figures, command
and machine: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kiosk.classify import DEFAULT_MODEL_DIR, Classifier, crop_face  # noqa: E402
from kiosk.config import Config  # noqa: E402
from kiosk.counters import Counters  # noqa: E402
from kiosk.detect import FaceDetector  # noqa: E402
from kiosk.focus import FocusedDetector  # noqa: E402
from kiosk.frames import CameraSource, Frame, demo_video_path, valid_image  # noqa: E402
from kiosk.gate import Gate, OffGate, build_gate  # noqa: E402
from kiosk.labels import AGE_GROUPS  # noqa: E402
from kiosk.pipeline import Demographics, Pipeline  # noqa: E402
from kiosk.store import Store  # noqa: E402
from kiosk.track import Track, Tracker  # noqa: E402
from kiosk.visit import Check, Visit  # noqa: E402
from tools.make_demo import ENTER_S, Appearance, render, write_video  # noqa: E402

STAGES = ("decode", "detect", "thermal", "classify", "track", "store")
#: The seed's detector settings; the min size is kioskd's, so naive does no extra work there.
NAIVE_HAAR = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": 60, "downscale": 1.0}
NAIVE_INPUT = 227
CAMERA_FPS = 15.0
#: A real Lepton 3.5 kiosk recording (shared data) replayed for the thermal stage.
THERMAL_RECORDING = ROOT.parent / "shared" / "data" / "thermal/feverscreen_lepton35/testr.npz"


# Clips ------------------------------------------------------------------------------------


def scene_clips(work: Path, seconds: float = 20.0) -> dict[str, Path]:
    """The bundled demo, one face for the whole clip, an empty scene (rendered once)."""
    work.mkdir(parents=True, exist_ok=True)
    scripts = {
        "one_face": (Appearance("hopper", -ENTER_S, seconds, 320, 130),),
        "empty": (),
    }
    clips = {"demo": demo_video_path()}
    for name, script in scripts.items():
        path = work / f"{name}_{seconds:g}s.mp4"
        if not path.is_file():
            tmp = path.with_suffix(".part.mp4")
            write_video(tmp, render(script, seconds))
            tmp.replace(path)
        clips[name] = path
    return clips


# The naive pipeline -------------------------------------------------------------------------


def build_levi_hassner(out: Path, size: int = NAIVE_INPUT) -> Path:
    """The seed's network, random weights, as a float32 TFLite model folder Classifier loads."""
    import tensorflow as tf

    from tools.models import build_levi_hassner as network

    tf.keras.utils.set_random_seed(0)
    model = network(size)
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    out.mkdir(parents=True, exist_ok=True)
    (out / "levi_hassner_f32.tflite").write_bytes(data)
    labels = {
        "name": "levi-hassner-f32-random",
        "files": {"model": "levi_hassner_f32.tflite"},
        "age_groups": list(AGE_GROUPS),
        "genders": ["female", "male"],
    }
    (out / "labels.json").write_text(json.dumps(labels) + "\n")
    return out


def naive_model_dir(work: Path) -> Path:
    """Built once in a child process, so TensorFlow never loads into a measured process."""
    out = work / "levi_hassner_f32"
    if not (out / "labels.json").is_file():
        subprocess.run(
            [sys.executable, __file__, "--build-naive-model", str(out)], check=True, cwd=ROOT
        )
    return out


class NaivePipeline(Pipeline):
    """The seed's loop: every face classified on every frame, probabilities averaged per track."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sums: dict[int, tuple[np.ndarray, float, int]] = {}

    def process(self, frame: Frame) -> None:
        if not valid_image(frame.image):
            self.counters.frames_rejected += 1
            return
        boxes = self.detector.detect(frame.image, [])
        self.counters.faces += len(boxes)
        update = self.tracker.update(boxes, frame.t_mono, frame.t_wall)
        if update.seen:
            crops = [crop_face(frame.image, box, NAIVE_INPUT) for _, box in update.seen]
            age, female = self.classifier.probabilities(crops)
            for (track, box), a, f in zip(update.seen, age, female, strict=True):
                self.gate.observe(track.id, box, frame)
                sum_a, sum_f, n = self._sums.get(track.id, (np.zeros(len(AGE_GROUPS)), 0.0, 0))
                self._sums[track.id] = (sum_a + a, sum_f + float(f), n + 1)
        for track in update.discarded:
            self._sums.pop(track.id, None)
        self._finish(update.closed, update.discarded)
        self.counters.frame_done(frame.t_mono)

    def demographics(self, track: Track) -> Callable[[], Demographics]:
        sum_a, sum_f, n = self._sums.pop(track.id)
        demo = Demographics.from_probabilities(sum_a / n, sum_f / n)
        return lambda: demo


def build_pipeline(
    kind: str,
    classifier: Classifier,
    on_visit: Callable[[Visit], None],
    counters: Counters,
    cfg: Config | None = None,
    gate: Gate | None = None,
    on_check: Callable[[Check], None] = lambda check: None,
    off_thread: bool = False,
) -> Pipeline:
    """kind "fast": kioskd's frame path from `cfg`; "naive": the seed's loop. `off_thread`:
    closing visits classified on the classify thread, as kioskd does (fast only)."""
    cfg = cfg or Config()
    t = cfg.tracker
    tracker = Tracker.from_config(t)
    if kind == "naive":
        detector = FocusedDetector(FaceDetector(**NAIVE_HAAR), motion=None)
        cls: type[Pipeline] = NaivePipeline
    else:
        detector = FocusedDetector.from_config(cfg.detector)
        cls = Pipeline
    return cls(
        detector,
        tracker,
        classifier,
        gate or OffGate(),
        on_visit=on_visit,
        on_check=on_check,
        counters=counters,
        device_id="bench",
        classify_off_thread=off_thread,
    )


# One measured run (child process) ---------------------------------------------------------


class StageClock:
    """CPU time of the calling thread spent inside chosen methods, per stage."""

    def __init__(self) -> None:
        self.cpu_s: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def add(self, stage: str, seconds: float) -> None:
        self.cpu_s[stage] += seconds
        self.calls[stage] += 1

    def wrap(self, obj: object, method: str, stage: str) -> None:
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            t0 = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(stage, time.thread_time() - t0)

        setattr(obj, method, timed)


def thermal_gate(recording: str, counters: Counters) -> Gate:
    """kioskd's thermal gate replaying a Lepton kiosk recording (as tests/test_gate_daemon.py)."""
    cfg = Config()
    thermal = dataclasses.replace(
        cfg.thermal, source="replay", device=recording, rotate=1, reference_c=36.6
    )
    return build_gate(dataclasses.replace(cfg.gate, mode="thermal"), thermal, counters).start()


def one_thread(cpu: int | None) -> None:
    """OpenCV at one thread; with `cpu`, the whole process (decoder, readers) on that core."""
    cv2.setNumThreads(1)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def measure(spec: dict) -> dict:
    """Run one clip through one pipeline; `spec`: clip, kind, models, paced, thermal, cpu."""
    one_thread(spec.get("cpu"))
    paced = spec["paced"]
    clock = StageClock()
    counters = Counters()
    visits: list[Visit] = []
    checks: list[Check] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        clock.wrap(store, "add_visit", "store")
        clock.wrap(store, "add_check", "store")
        classifier = Classifier(spec["models"], num_threads=1)
        gate = thermal_gate(spec["thermal"], counters) if spec.get("thermal") else OffGate()
        pipeline = build_pipeline(
            spec["kind"],
            classifier,
            lambda v: (store.add_visit(v), visits.append(v)),
            counters,
            gate=gate,
            on_check=lambda c: (store.add_check(c), checks.append(c)),
        )
        clock.wrap(pipeline.detector, "detect", "detect")
        clock.wrap(pipeline.gate, "observe", "thermal")
        clock.wrap(pipeline.classifier, "probabilities", "classify")
        clock.wrap(pipeline.tracker, "update", "track")
        source = CameraSource(str(spec["clip"]), fps=CAMERA_FPS, realtime=paced).start()
        first: Frame | None = None
        loop_cpu = 0.0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while True:
            t0 = time.thread_time()
            frame = source.read(timeout=0.25)
            t1 = time.thread_time()
            if frame is None:
                if source.ended:
                    break
                pipeline.tick(time.monotonic(), datetime.now(UTC))
                continue
            clock.add("decode", t1 - t0)
            first = first or frame
            pipeline.process(frame)
            loop_cpu += time.thread_time() - t0
        pipeline.flush()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        source.close()
        gate.close()
        store.close()
    n = counters.frames
    t0_wall = first.t_wall if first else datetime.now(UTC)
    det = pipeline.detector
    stage_ms = {s: clock.cpu_s[s] * 1000 / max(1, n) for s in STAGES}
    stage_ms["other"] = max(0.0, loop_cpu * 1000 / max(1, n) - sum(stage_ms.values()))
    return {
        "clip": Path(spec["clip"]).name,
        "kind": spec["kind"],
        "paced": paced,
        "model_version": classifier.model_version,
        "frames": n,
        "faces": counters.faces,
        "wall_s": wall,
        "cpu_s": cpu,
        "fps": n / wall if wall else 0.0,
        "cpu_ms_per_frame": cpu * 1000 / max(1, n),
        "core_share": cpu / wall if wall else 0.0,
        "stage_ms_per_frame": stage_ms,
        "classify_calls": clock.calls["classify"],
        "classify_ms_per_call": clock.cpu_s["classify"] * 1000 / max(1, clock.calls["classify"]),
        "haar": {"full": det.full_frames, "window": det.window_frames, "skip": det.skipped_frames},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "visits": [
            {
                "start_s": (v.started_at - t0_wall).total_seconds(),
                "end_s": (v.ended_at - t0_wall).total_seconds(),
                "frames": v.frames,
                "temperature": v.temperature_status,
            }
            for v in sorted(visits, key=lambda v: v.started_at)
        ],
        "checks": [c.status for c in checks],
    }


def classifier_latency(models: str, crop: np.ndarray, n: int = 200) -> dict:
    """Median CPU ms for age+gender of one face (preprocess + interpreter), one thread."""
    clf = Classifier(models, num_threads=1)
    for _ in range(5):
        clf.probabilities([crop])
    samples = []
    for _ in range(n):
        t0 = time.thread_time()
        clf.probabilities([crop])
        samples.append(time.thread_time() - t0)
    return {
        "model_version": clf.model_version,
        "input_size": clf.input_size,
        "ms_median": statistics.median(samples) * 1000,
        "ms_p90": float(np.percentile(samples, 90)) * 1000,
        "n": n,
    }


def detection_steps(clip: Path) -> dict[str, float]:
    """CPU ms per frame of detection alone, one step at a time from naive to kioskd's.

    Each step keeps the earlier ones; a real Tracker feeds the tracked boxes, as in kioskd.
    """
    cfg = Config()
    d, t = cfg.detector, cfg.tracker
    shrunk = FaceDetector(d.scale_factor, d.min_neighbors, d.min_size_px, d.downscale)
    steps = {
        "naive: full frame, full resolution, scaleFactor 1.1": FocusedDetector(
            FaceDetector(**NAIVE_HAAR)
        ),
        f"grey frame shrunk {d.downscale:g}x first, scaleFactor {d.scale_factor:g}": (
            FocusedDetector(shrunk)
        ),
        "+ motion test, Haar in windows around tracked faces": FocusedDetector.from_config(d),
    }
    result = {}
    for name, detector in steps.items():
        tracker = Tracker.from_config(t)
        source = CameraSource(str(clip), realtime=False).start()
        cpu, n = 0.0, 0
        while (frame := source.read()) is not None:
            t0 = time.thread_time()
            boxes = detector.detect(frame.image, [tr.box for tr in tracker.tracks])
            cpu += time.thread_time() - t0
            tracker.update(boxes, frame.t_mono, frame.t_wall)
            n += 1
        source.close()
        result[name] = cpu * 1000 / max(1, n)
    return result


def clip_frame(clip: Path, index: int = 30) -> np.ndarray:
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, image = cap.read()
    cap.release()
    if not ok:
        raise OSError(f"{clip}: cannot read frame {index}")
    return image


def face_crop(image: np.ndarray) -> np.ndarray:
    """A real crop_face of the face in a frame (what the pipeline classifies)."""
    boxes = FaceDetector(1.1, 5, 60).detect(image)
    if not boxes:
        raise ValueError("no face found in the frame")
    return crop_face(image, boxes[0])


def mjpeg_decode_ms(image: np.ndarray, n: int = 200) -> float:
    """Median CPU ms to decode one 640x480 JPEG (quality 80): what a USB camera's MJPEG
    stream costs per frame, which the mp4 clips here do not show."""
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
    samples = []
    for _ in range(n):
        t0 = time.thread_time()
        cv2.imdecode(data, cv2.IMREAD_COLOR)
        samples.append(time.thread_time() - t0)
    return statistics.median(samples) * 1000


def child(args: list[str], script: str = __file__) -> dict:
    out = subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# Report -----------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from ai_edge_litert import __version__ as litert

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, OpenCV {cv2.__version__}, LiteRT {litert}, "
        f"numpy {np.__version__}; load average {load}"
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "-"


def spans(visits: list[dict]) -> str:
    return " ".join(f"{v['start_s']:.1f}-{v['end_s']:.1f}" for v in visits) or "-"


def table(naive: dict, fast: dict) -> list[str]:
    rows = [f"  {'':38s}{'naive':>10s}{'fast':>10s}{'naive/fast':>12s}"]
    for s in (*STAGES, "other"):
        a, b = naive["stage_ms_per_frame"][s], fast["stage_ms_per_frame"][s]
        rows.append(f"  {s + ' (CPU ms/frame)':38s}{a:10.2f}{b:10.2f}{ratio(a, b):>12s}")
    a, b = naive["cpu_ms_per_frame"], fast["cpu_ms_per_frame"]
    rows.append(f"  {'process CPU ms/frame (all threads)':38s}{a:10.2f}{b:10.2f}{ratio(a, b):>12s}")
    a, b = 1000 / a, 1000 / b
    rows.append(f"  {'fps on one core (1000 / CPU ms)':38s}{a:10.1f}{b:10.1f}{ratio(b, a):>12s}")
    a, b = naive["fps"], fast["fps"]
    rows.append(f"  {'fps end to end (wall clock)':38s}{a:10.1f}{b:10.1f}{ratio(b, a):>12s}")
    a, b = naive["classify_ms_per_call"], fast["classify_ms_per_call"]
    rows.append(f"  {'classify ms per call':38s}{a:10.2f}{b:10.2f}")
    a, b = naive["classify_calls"], fast["classify_calls"]
    rows.append(f"  {'classify calls':38s}{a:10d}{b:10d}")
    hn, hf = naive["haar"], fast["haar"]
    rows.append(
        f"  {'Haar frames full/window/skipped':38s}"
        f"{hn['full']:>4d}/{hn['window']}/{hn['skip']}".ljust(50)
        + f"{hf['full']}/{hf['window']}/{hf['skip']}"
    )
    a, b = naive["faces"], fast["faces"]
    rows.append(f"  {'faces found (summed over frames)':38s}{a:10d}{b:10d}")
    a, b = naive["peak_rss_mb"], fast["peak_rss_mb"]
    rows.append(f"  {'peak RSS (MB)':38s}{a:10.0f}{b:10.0f}")
    rows.append(f"  {'visits naive':38s}{len(naive['visits']):10d}  {spans(naive['visits'])}")
    rows.append(f"  {'visits fast':38s}{len(fast['visits']):10d}  {spans(fast['visits'])}")
    if naive["checks"] or fast["checks"]:
        rows.append(
            f"  {'checks not passed (naive | fast)':38s}{naive['checks']} | {fast['checks']}"
        )
    temps = [v["temperature"] for v in naive["visits"] + fast["visits"]]
    if any(t != "off" for t in temps):
        rows.append(f"  {'temperature status of the visits':38s}{' '.join(temps)}")
    return rows


def median_run(runs: list[dict], key: str = "cpu_ms_per_frame") -> dict:
    """The run with the median `key`; by default process CPU per frame (load only adds)."""
    return sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2]


def closing_section(args: argparse.Namespace, naive_models: Path) -> dict:
    """tools/bench_closing.py: fps with visits closing, classified inline against off-thread."""
    from tools import bench_closing  # it imports this module

    models = {"shipped model": args.models, "Levi-Hassner f32 (slow)": str(naive_models)}
    return bench_closing.section(args.work, models, args.repeat, args.cpu, args.seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=str(DEFAULT_MODEL_DIR), help="fast path's model folder")
    ap.add_argument(
        "--work",
        type=Path,
        default=Path.home() / ".cache" / "kiosk-bench",
        help="cache for the rendered clips and the naive network",
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the rendered clips")
    ap.add_argument("--repeat", type=int, default=1, help="runs per clip and path (median kept)")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    ap.add_argument(
        "--thermal",
        type=Path,
        default=THERMAL_RECORDING,
        help="Lepton recording the thermal-gate run replays (skipped when absent)",
    )
    ap.add_argument(
        "--cpu",
        type=int,
        default=(os.cpu_count() or 1) - 1,
        help="core each measured process is pinned to (-1: not pinned); default the last",
    )
    ap.add_argument(
        "--only",
        choices=("closing",),
        help="run one section: closing = fps with visits closing, inline vs off-thread",
    )
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--latency", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--build-naive-model", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.cpu = None if args.cpu < 0 else args.cpu
    if args.build_naive_model:
        build_levi_hassner(args.build_naive_model)
        return 0
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0
    if args.steps:
        one_thread(args.cpu)
        print(json.dumps(detection_steps(args.steps)))
        return 0
    if args.latency:
        one_thread(args.cpu)
        image = clip_frame(Path(args.latency[1]))
        result = classifier_latency(args.latency[0], face_crop(image))
        print(json.dumps({**result, "mjpeg_decode_ms": mjpeg_decode_ms(image)}))
        return 0

    if not (Path(args.models) / "labels.json").is_file():
        ap.error(f"--models {args.models}: no labels.json (the models have not shipped yet?)")
    clips = scene_clips(args.work, args.seconds)
    naive_models = naive_model_dir(args.work)
    models = {"naive": str(naive_models), "fast": args.models}
    print(f"machine: {machine()}")
    print(f"measured processes pinned to CPU {args.cpu}" if args.cpu is not None else "not pinned")
    print("naive classifier: seed's Levi-Hassner, float32 TFLite, random weights (timing only)")
    results: dict = {"machine": machine(), "cpu": args.cpu, "runs": {}, "argv": sys.argv}
    if args.only == "closing":
        results["closing"] = closing_section(args, naive_models)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0

    def run(clip: str, kind: str, paced: bool, thermal: str | None = None) -> dict:
        spec = {
            "clip": str(clips[clip]),
            "kind": kind,
            "models": models[kind],
            "paced": paced,
            "thermal": thermal,
            "cpu": args.cpu,
        }
        return child(["--measure", json.dumps(spec)])

    scenarios = [(clip, clip, None) for clip in clips]
    if args.thermal.is_file():
        scenarios.append(("one_face+thermal", "one_face", str(args.thermal)))
    else:
        print(f"(no thermal stage: {args.thermal} is absent)")
    for name, clip, thermal in scenarios:
        runs: dict[str, list[dict]] = {"naive": [], "fast": []}
        for _ in range(args.repeat):
            for kind in runs:
                runs[kind].append(run(clip, kind, False, thermal))
        naive, fast = median_run(runs["naive"]), median_run(runs["fast"])
        results["runs"][name] = {"naive": naive, "fast": fast}
        gate = f"thermal gate replaying {Path(thermal).name}" if thermal else "gate off"
        print(f"\n{name}: {clips[clip].name}, {fast['frames']} frames 640x480, {gate}")
        print("\n".join(table(naive, fast)), flush=True)

    paced = {
        kind: median_run([run("empty", kind, True) for _ in range(args.repeat)]) for kind in models
    }
    results["runs"]["empty_paced"] = paced
    print(f"\nempty scene replayed at {CAMERA_FPS:g} fps through the threaded camera reader:")
    for kind, r in paced.items():
        print(
            f"  {kind:6s} {r['core_share'] * 100:5.1f} % of one core "
            f"({r['cpu_ms_per_frame']:.2f} CPU ms/frame incl. decode, {r['frames']} frames "
            f"in {r['wall_s']:.1f} s)"
        )

    pin = ["--cpu", str(-1 if args.cpu is None else args.cpu)]
    steps = {clip: child(["--steps", str(clips[clip]), *pin]) for clip in ("demo", "one_face")}
    results["detection_steps"] = steps
    print("\ndetection alone, step by step (CPU ms/frame; each step keeps the ones above):")
    print(f"  {'':58s}{'demo':>8s}{'one_face':>10s}")
    for name in steps["demo"]:
        a, b = steps["demo"][name], steps["one_face"][name]
        print(f"  {name:58s}{a:8.2f}{b:10.2f}")

    latency = {
        kind: child(["--latency", models[kind], str(clips["one_face"]), *pin]) for kind in models
    }
    results["classifier_latency"] = latency
    print("\nage + gender for one face (preprocess + interpreter, one thread, CPU ms):")
    for kind, r in latency.items():
        print(
            f"  {kind:6s} {r['model_version']} ({r['input_size']}px): median "
            f"{r['ms_median']:.2f} ms, p90 {r['ms_p90']:.2f} ms (n={r['n']})"
        )
    print(f"  naive/fast: {ratio(latency['naive']['ms_median'], latency['fast']['ms_median'])}")
    print(
        f"\ndecoding one 640x480 MJPEG camera frame (not in the clips above): "
        f"{latency['fast']['mjpeg_decode_ms']:.2f} CPU ms median, "
        f"{latency['fast']['mjpeg_decode_ms'] * CAMERA_FPS / 10:.1f} % of one core at "
        f"{CAMERA_FPS:g} fps"
    )
    results["closing"] = closing_section(args, naive_models)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
