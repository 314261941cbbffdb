"""Haar recall on bordered portraits and false detections on face-free frames, on kioskd's path.

    python tools/eval_detect.py [--json OUT] [--set rotate_deg=0] [--every 4]
    python tools/eval_detect.py --make-reference tests/data/pixabay_faces.csv   # needs dlib

Detection is `FaceDetector.from_config` (the daemon's detector, config defaults unless
``--set key=value`` overrides a `detector` key), run on the whole frame as a full-frame pass.

* Portraits (``../shared/data/faces/pixabay.tar``, read in place, never copied): each photo gets
  a plain grey border a quarter of its long side wide, so no face touches the edge, and is then
  scaled to 640 px on its long side like a camera frame. The reference face is dlib's HOG
  detector's largest box on that frame (evaluation-time only; kept in original-photo pixels in
  ``tests/data/pixabay_faces.csv``, boxes only). A face is found when a detection overlaps it
  with IoU >= 0.3. Photos where dlib finds no face (mostly profiles) count only in
  ``any_detection``.
* Face-free frames, all made at run time from what is installed or shared: scikit-image's
  bundled non-face pictures at 1x, 1.5x and 2x and mirrored; every 5th frame of the demo clip
  while nobody is in view; the strips of each portrait outside its face and body (photos with
  exactly one reference face). Every detection there is false.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kiosk.config import DetectorConfig  # noqa: E402
from kiosk.detect import Box, FaceDetector  # noqa: E402
from kiosk.frames import demo_video_path  # noqa: E402
from tools.facedata import decode, iter_image_bytes, read_labels  # noqa: E402

FACES = ROOT.parent / "shared" / "data" / "faces"
REFERENCE = ROOT / "tests" / "data" / "pixabay_faces.csv"
BORDER = 0.25
FRAME_PX = 640
MATCH_IOU = 0.3
#: scikit-image pictures without a human face ("camera" and "astronaut" show people).
FACE_FREE_PICTURES = (
    "brick", "chelsea", "coffee", "coins", "colorwheel", "clock", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "rocket", "text",
    "retina", "stereo_motorcycle", "cell",
)  # fmt: skip


def framed(img: np.ndarray) -> tuple[np.ndarray, float, int]:
    """The portrait on a grey border, scaled to FRAME_PX; with the scale and border width."""
    pad = int(BORDER * max(img.shape[:2]))
    canvas = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128,) * 3)
    scale = FRAME_PX / max(canvas.shape[:2])
    return cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale, pad


def to_frame(box: Box, scale: float, pad: int) -> Box:
    """A box in original-photo pixels, in the framed portrait's pixels."""
    return Box(*(round(v * scale) for v in (box.x + pad, box.y + pad, box.w, box.h)))


def portraits(labels: Path, images: Path, every: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    files = read_labels(labels).files[::every]
    for name, data in iter_image_bytes(images, files):
        img = decode(data)
        if img is not None:
            yield name, img


def read_reference(path: Path) -> dict[str, Box | None]:
    with open(path, newline="") as fh:
        return {
            r["file"]: Box(*(int(r[k]) for k in "xywh")) if r["w"] else None
            for r in csv.DictReader(fh)
        }


def make_reference(labels: Path, images: Path, out: Path) -> int:
    """dlib HOG's largest face per framed portrait, in original-photo pixels."""
    import dlib

    hog = dlib.get_frontal_face_detector()
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "x", "y", "w", "h"])
        for name, img in portraits(labels, images):
            frame, scale, pad = framed(img)
            faces = hog(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), 1)
            if not faces:
                writer.writerow([name, "", "", "", ""])
                continue
            f = max(faces, key=lambda r: r.width() * r.height())
            box = (f.left() / scale - pad, f.top() / scale - pad, f.width() / scale)
            writer.writerow([name, *(round(v) for v in box), round(f.height() / scale)])
    return 0


def demo_empty_frames(step: int = 5) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of the demo clip while no visitor is in view (0.1 s margin either side)."""
    meta = json.loads(demo_video_path().with_name("demo.json").read_text())
    spans = [(v["start_s"] - 0.1, v["end_s"] + 0.1) for v in meta["visitors"]]
    cap = cv2.VideoCapture(str(demo_video_path()))
    index = 0
    while (got := cap.read())[0]:
        t = index / meta["fps"]
        if index % step == 0 and not any(a <= t <= b for a, b in spans):
            yield f"demo@{index}", got[1]
        index += 1
    cap.release()


def skimage_frames() -> Iterator[tuple[str, np.ndarray]]:
    import skimage.data

    for name in FACE_FREE_PICTURES:
        img = getattr(skimage.data, name)()
        img = np.asarray(img[0] if isinstance(img, tuple) else img)  # a stereo pair: the left
        img = img[..., :3] if img.ndim == 3 else np.dstack([img] * 3)
        img = cv2.cvtColor(np.ascontiguousarray(img, np.uint8), cv2.COLOR_RGB2BGR)
        for k in (1.0, 1.5, 2.0):
            big = img if k == 1.0 else cv2.resize(img, None, fx=k, fy=k)
            yield f"{name}@{k:g}", big
            yield f"{name}@{k:g}/mirror", cv2.flip(big, 1)


def strips(img: np.ndarray, face: Box, min_px: int = 120) -> list[np.ndarray]:
    """The parts of a portrait left, right, above and below the face and the body under it."""
    h, w = img.shape[:2]
    x0, x1 = int(face.x - 0.5 * face.w), int(face.x + 1.5 * face.w)
    y0, y1 = int(face.y - 0.7 * face.h), int(face.y + 1.5 * face.h)
    parts = (img[:, : max(0, x0)], img[:, min(w, x1) :], img[: max(0, y0)], img[min(h, y1) :])
    return [p for p in parts if min(p.shape[:2]) >= min_px]


def evaluate(detector: FaceDetector, portraits_in, reference: dict, free) -> dict:
    """Recall on the framed portraits and false detections on the face-free frames."""
    found = with_ref = anyd = unmatched = 0
    ms_portrait, ms_free = [], []
    for name, img in portraits_in:
        frame, scale, pad = framed(img)
        boxes = timed(detector, frame, ms_portrait)
        anyd += bool(boxes)
        ref = reference.get(name)
        if ref is None:
            continue
        face = to_frame(ref, scale, pad)
        with_ref += 1
        found += any(b.iou(face) >= MATCH_IOU for b in boxes)
        unmatched += sum(b.iou(face) < MATCH_IOU for b in boxes)
    false = frames_false = 0
    mpx = 0.0
    for _name, img in free:
        n = len(timed(detector, img, ms_free))
        false, frames_false, mpx = false + n, frames_false + bool(n), mpx + img[..., 0].size / 1e6
    return {
        "portraits": len(ms_portrait),
        "portraits_with_reference": with_ref,
        "faces_found": found,
        "recall": found / with_ref if with_ref else None,
        "any_detection": anyd,
        "unmatched_detections": unmatched,
        "face_free_frames": len(ms_free),
        "face_free_megapixels": round(mpx, 2),
        "false_detections": false,
        "frames_with_false_detections": frames_false,
        "portrait_ms_median": statistics.median(ms_portrait) if ms_portrait else None,
        "face_free_ms_median": statistics.median(ms_free) if ms_free else None,
    }


def timed(detector: FaceDetector, image: np.ndarray, ms: list[float]) -> list[Box]:
    t0 = time.thread_time()
    boxes = detector.detect(image)
    ms.append((time.thread_time() - t0) * 1000)
    return boxes


def face_free(labels: Path, images: Path, reference: dict, every: int = 1):
    """The whole face-free set (a list: it is walked once per detector compared)."""
    frames = [*skimage_frames(), *demo_empty_frames()]
    for name, img in portraits(labels, images, every):
        if reference.get(name) is not None:
            frames += [(f"{name}/strip{i}", s) for i, s in enumerate(strips(img, reference[name]))]
    return frames


def detector_config(overrides: list[str]) -> DetectorConfig:
    """The config defaults with ``key=value`` overrides, typed like the default."""
    d = DetectorConfig()
    for item in overrides:
        key, _, value = item.partition("=")
        d = dataclasses.replace(d, **{key: type(getattr(d, key))(value)})
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=Path, default=FACES / "pixabay_labels.csv")
    ap.add_argument("--images", type=Path, default=FACES / "pixabay.tar")
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--make-reference", type=Path, help="write dlib HOG reference boxes here")
    ap.add_argument("--set", action="append", default=[], help="detector key=value override")
    ap.add_argument("--every", type=int, default=1, help="every Nth portrait only")
    ap.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.make_reference:
        return make_reference(args.labels, args.images, args.make_reference)
    d = detector_config(args.set)
    reference = read_reference(args.reference)
    free = face_free(args.labels, args.images, reference, args.every)
    m = evaluate(
        FaceDetector.from_config(d),
        portraits(args.labels, args.images, args.every),
        reference,
        free,
    )
    m["detector"] = dataclasses.asdict(d)
    text = json.dumps(m, indent=2, sort_keys=True) + "\n"
    print(text, end="")
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
