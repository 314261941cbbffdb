"""Render the bundled demo clip: visitors walk up to the kiosk, stand, and leave.

The faces are public-domain photographs shipped inside packages the project already uses:
- Eileen Collins, NASA portrait (``skimage/data/astronaut.png``, public domain);
- Grace Hopper, US Navy portrait (matplotlib ``sample_data/grace_hopper.jpg``, public domain).

Usage: python tools/make_demo.py [--out kiosk/demo/demo.mp4]
Writes the clip and ``demo.json`` (the visitors it contains) beside it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

FPS = 15
SIZE = (640, 480)
ENTER_S = 1.2  # walking in (and out) takes this long


@dataclass(frozen=True)
class Person:
    name: str
    gender: str
    age_groups: tuple[str, ...]  # plausible Adience groups for the photo
    source: str


PEOPLE = {
    "collins": Person("collins", "female", ("25-32", "38-43"), "skimage astronaut.png (NASA)"),
    "hopper": Person("hopper", "female", ("48-53", "60-100"), "matplotlib grace_hopper.jpg"),
}


@dataclass(frozen=True)
class Appearance:
    person: str
    start_s: float  # starts walking in
    stand_s: float  # stands this long in front of the kiosk
    x: int  # where the face centre stands
    face_px: int  # face width while standing
    from_left: bool = True

    @property
    def end_s(self) -> float:
        return self.start_s + 2 * ENTER_S + self.stand_s


DEMO_SCRIPT = (
    Appearance("collins", 1.0, 3.0, 320, 130),
    Appearance("hopper", 8.5, 3.5, 330, 125, from_left=False),
    Appearance("collins", 16.0, 4.0, 180, 115),
    Appearance("hopper", 16.3, 4.0, 470, 115, from_left=False),
    Appearance("collins", 24.5, 3.0, 330, 165),
)
DEMO_SECONDS = 31.0


def _face_photos() -> dict[str, tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Each photo (BGR) with its face box (x, y, w, h) found by the Haar cascade."""
    import matplotlib.cbook
    import skimage.data

    photos = {
        "collins": cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR),
        "hopper": cv2.imread(
            str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        ),
    }
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    out = {}
    for name, img in photos.items():
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        faces = cascade.detectMultiScale(grey, 1.1, 5, minSize=(60, 60))
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        out[name] = (img, (int(x), int(y), int(w), int(h)))
    return out


def make_sprite(img: np.ndarray, face: tuple[int, int, int, int], face_px: int):
    """Head and shoulders cut from a portrait, scaled so the face is `face_px` wide.

    Returns the BGR sprite, its alpha mask (float 0..1) and the face centre in the sprite.
    """
    x, y, w, h = face
    x0, x1 = max(0, int(x - 0.9 * w)), min(img.shape[1], int(x + 1.9 * w))
    y0, y1 = max(0, int(y - 0.6 * h)), min(img.shape[0], int(y + 2.2 * h))
    crop = img[y0:y1, x0:x1]
    s = face_px / w
    sprite = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    sh, sw = sprite.shape[:2]
    alpha = np.zeros((sh, sw), np.float32)
    cx, cy = (x + w / 2 - x0) * s, (y + h / 2 - y0) * s
    cv2.ellipse(
        alpha, (int(cx), int(cy)), (int(0.75 * face_px), int(0.95 * face_px)), 0, 0, 360, 1, -1
    )
    cv2.rectangle(alpha, (int(cx - 1.3 * face_px), int(cy + 0.8 * face_px)), (sw, sh), 1, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), face_px / 25)
    return sprite, alpha, (cx, cy)


def background() -> np.ndarray:
    """A plain store entrance: wall, floor, a door frame."""
    w, h = SIZE
    bg = np.zeros((h, w, 3), np.uint8)
    bg[:] = (200, 205, 210)
    bg[int(h * 0.72) :] = (120, 130, 140)
    cv2.rectangle(bg, (60, 40), (580, int(h * 0.72)), (90, 95, 100), 8)
    cv2.rectangle(bg, (70, 50), (570, int(h * 0.72) - 4), (175, 185, 190), -1)
    return bg


def paste(frame: np.ndarray, sprite: np.ndarray, alpha: np.ndarray, left: int, top: int) -> None:
    fh, fw = frame.shape[:2]
    sh, sw = sprite.shape[:2]
    x0, y0, x1, y1 = max(0, left), max(0, top), min(fw, left + sw), min(fh, top + sh)
    if x0 >= x1 or y0 >= y1:
        return
    sp = sprite[y0 - top : y1 - top, x0 - left : x1 - left].astype(np.float32)
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = (a * sp + (1 - a) * region).astype(np.uint8)


def position(app: Appearance, t: float, sprite_w: int) -> float | None:
    """Face-centre x at time t, or None when the person is not in the scene."""
    if not app.start_s <= t <= app.end_s:
        return None
    off = -sprite_w if app.from_left else SIZE[0] + sprite_w
    exit_to = SIZE[0] + sprite_w if app.from_left else -sprite_w
    if t < app.start_s + ENTER_S:
        k = (t - app.start_s) / ENTER_S
        return off + (app.x - off) * k
    if t > app.end_s - ENTER_S:
        k = (t - (app.end_s - ENTER_S)) / ENTER_S
        return app.x + (exit_to - app.x) * k
    return app.x + 3 * np.sin(2 * np.pi * 0.5 * t)  # small sway while standing


def render(script: tuple[Appearance, ...], seconds: float, fps: int = FPS):
    """Yield the clip's BGR frames."""
    photos = _face_photos()
    sprites = [make_sprite(*photos[a.person], a.face_px) for a in script]
    bg = background()
    for i in range(int(seconds * fps)):
        t = i / fps
        frame = bg.copy()
        for app, (sprite, alpha, (cx, cy)) in zip(script, sprites, strict=True):
            x = position(app, t, sprite.shape[1])
            if x is not None:
                paste(frame, sprite, alpha, int(x - cx), int(SIZE[1] * 0.42 - cy))
        yield frame


def write_video(path: Path, frames, fps: int = FPS) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write mp4v video")
    n = 0
    for frame in frames:
        writer.write(frame)
        n += 1
    writer.release()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("kiosk/demo/demo.mp4"))
    args = ap.parse_args()
    n = write_video(args.out, render(DEMO_SCRIPT, DEMO_SECONDS))
    visitors = [
        {**asdict(PEOPLE[a.person]), "start_s": a.start_s, "end_s": a.end_s} for a in DEMO_SCRIPT
    ]
    meta = {"fps": FPS, "frames": n, "size": SIZE, "visitors": visitors}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(
        f"{args.out}: {n} frames, {args.out.stat().st_size / 1e6:.2f} MB, {len(visitors)} visitors"
    )


if __name__ == "__main__":
    main()
