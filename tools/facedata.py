"""Labelled face sets in the format of ../shared/data/faces: the CSV and the images.

Shared by tools/train.py and tools/evaluate.py; numpy + OpenCV only.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kiosk.labels import AGE_GROUPS, GENDERS, nearest_age_group

GENDER_CODES = {"f": 0, "female": 0, "m": 1, "male": 1}


@dataclass
class FaceRows:
    """Parsed label columns; -1 / nan where a label is empty."""

    files: list[str]
    age: np.ndarray  # float years, nan if empty
    age_group: np.ndarray  # int index into AGE_GROUPS (exact bucket), -1 if empty
    age_nearest: np.ndarray  # int index, -1 if no age at all
    gender: np.ndarray  # 0 female / 1 male / -1
    fold: np.ndarray  # int, -1 if absent
    res_px: np.ndarray  # int, 0 if absent
    race: np.ndarray  # UTKFace race code from orig_file, -1 if unknown
    overlap: list[frozenset[int]] | None  # adience_overlap groups per row, if the column exists

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, idx: np.ndarray) -> FaceRows:
        idx = np.asarray(idx)
        return FaceRows(
            files=[self.files[i] for i in idx],
            age=self.age[idx],
            age_group=self.age_group[idx],
            age_nearest=self.age_nearest[idx],
            gender=self.gender[idx],
            fold=self.fold[idx],
            res_px=self.res_px[idx],
            race=self.race[idx],
            overlap=None if self.overlap is None else [self.overlap[i] for i in idx],
        )


def _race(orig: str) -> int:
    parts = os.path.basename(orig).split("_")
    try:
        return int(parts[2]) if len(parts) > 3 else -1
    except ValueError:
        return -1


def read_labels(path: str | Path) -> FaceRows:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "file" not in rows[0]:
        raise ValueError(f"{path}: expected a 'file' column")
    group_index = {g: i for i, g in enumerate(AGE_GROUPS)}
    group_index.update({"60+": len(AGE_GROUPS) - 1, "(60, 100)": len(AGE_GROUPS) - 1})
    group_index.update({f"({g.replace('-', ', ')})": i for i, g in enumerate(AGE_GROUPS)})
    files, age, grp, near, gender, fold, res, race, overlap = ([] for _ in range(9))
    has_overlap = bool(rows) and "adience_overlap" in rows[0]
    for r in rows:
        files.append(r["file"])
        a = (r.get("age") or "").strip()
        try:
            age.append(float(a) if a else np.nan)
        except ValueError:  # e.g. a range such as "20-29": not an age in years
            a = ""
            age.append(np.nan)
        g = (r.get("age_group") or "").strip()
        if g and g not in group_index:
            raise ValueError(f"{path}: unknown age_group {g!r} (expected one of {AGE_GROUPS})")
        grp.append(group_index[g] if g else -1)
        n = (r.get("age_group_nearest") or "").strip()
        if n and n in group_index:
            near.append(group_index[n])
        elif a:
            near.append(group_index[nearest_age_group(float(a))])
        elif g:
            near.append(group_index[g])
        else:
            near.append(-1)
        s = (r.get("gender") or "").strip().lower()
        gender.append(GENDER_CODES.get(s, -1))
        f = (r.get("fold") or "").strip()
        fold.append(int(f) if f else -1)
        p = (r.get("res_px") or "").strip()
        res.append(int(p) if p else 0)
        race.append(_race(r.get("orig_file") or ""))
        if has_overlap:
            ov = (r.get("adience_overlap") or "").strip()
            overlap.append(
                frozenset(group_index[x.strip()] for x in ov.split("|") if x.strip() in group_index)
            )
    folds = np.array(fold, dtype=np.int64)
    if len(folds) and (folds < 0).all():  # no fold column (the Pixabay portraits)
        folds = hash_folds(files)
    return FaceRows(
        files=files,
        age=np.array(age, dtype=np.float64),
        age_group=np.array(grp, dtype=np.int64),
        age_nearest=np.array(near, dtype=np.int64),
        gender=np.array(gender, dtype=np.int64),
        fold=folds,
        res_px=np.array(res, dtype=np.int64),
        race=np.array(race, dtype=np.int64),
        overlap=overlap if has_overlap else None,
    )


def iter_image_bytes(images: str | Path, files: list[str]):
    """Yield (file, bytes or None) for each wanted file, from a folder or a .tar."""
    images = Path(images)
    if images.is_dir():
        for f in files:
            p = images / f
            yield f, (p.read_bytes() if p.is_file() else None)
        return
    wanted = set(files)
    found: dict[str, bytes] = {}
    with tarfile.open(images) as tar:
        for member in tar:
            if member.isfile() and member.name in wanted:
                found[member.name] = tar.extractfile(member).read()
    for f in files:
        yield f, found.get(f)


def decode(data: bytes | None) -> np.ndarray | None:
    if data is None:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def load_chips(
    images: str | Path, files: list[str], size: int, cache_dir: str | Path | None = None
) -> np.ndarray:
    """All images decoded and resized to size x size BGR uint8 (N, size, size, 3).

    With ``cache_dir`` the array is kept as a .npy keyed by the image source and file list,
    so later runs skip decoding.
    """
    images = Path(images)
    key = None
    if cache_dir is not None:
        st = images.stat()
        h = hashlib.sha1(f"{images.resolve()}|{st.st_size}|{st.st_mtime}|{size}".encode())
        h.update("\n".join(files).encode())
        key = Path(cache_dir) / f"chips_{size}_{h.hexdigest()[:16]}.npy"
        if key.is_file():
            return np.load(key, mmap_mode=None)
    out = np.zeros((len(files), size, size, 3), np.uint8)
    missing = []
    for i, (f, data) in enumerate(iter_image_bytes(images, files)):
        img = decode(data)
        if img is None:
            missing.append(f)
            continue
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(img, (size, size), interpolation=interp)
    if missing:
        raise FileNotFoundError(
            f"{images}: {len(missing)} labelled images missing or unreadable, e.g. {missing[:3]}"
        )
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, key)
    return out


def hash_folds(files: list[str]) -> np.ndarray:
    """sha1(file name) mod 10: a fixed split for sets without a ``fold`` column.

    Not md5: the Pixabay portraits given to us are exactly those whose md5 mod 10 is 0-5
    (the rest of that collection is kept apart to judge), so md5 would leave folds empty.
    """
    return np.array(
        [int(hashlib.sha1(os.path.basename(f).encode()).hexdigest(), 16) % 10 for f in files],
        dtype=np.int64,
    )


#: Border added around whole photos before detection, as a fraction of the image width, so
#: that faces filling a portrait do not touch the edge (Haar needs some context).
PHOTO_BORDER = 0.25


def bordered(img: np.ndarray, fraction: float) -> np.ndarray:
    """The photo on a grey border ``fraction`` of its width wide on every side."""
    pad = int(img.shape[1] * fraction)
    return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128,) * 3)


def detect_face_crops(
    images: str | Path, files: list[str], size: int, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Whole photos -> the daemon's crop of the largest Haar face (its default detector
    settings), resized to ``size``.

    Photos get a grey border (``PHOTO_BORDER``) first. Returns ``(crops (N, size, size, 3)
    BGR uint8, found (N,) bool)``; rows without a detected face are zeros and not found.
    Cached like :func:`load_chips`.
    """
    from kiosk.classify import crop_face
    from kiosk.config import DetectorConfig
    from kiosk.detect import FaceDetector

    images = Path(images)
    key = None
    if cache_dir is not None:
        st = images.stat()
        h = hashlib.sha1(
            f"faces|{images.resolve()}|{st.st_size}|{st.st_mtime}|{size}|"
            f"{DetectorConfig()}".encode()
        )
        h.update("\n".join(files).encode())
        key = Path(cache_dir) / f"faces_{size}_{h.hexdigest()[:16]}.npz"
        if key.is_file():
            with np.load(key) as z:
                return z["crops"], z["found"]
    detector = FaceDetector.from_config(DetectorConfig())  # the daemon's defaults
    crops = np.zeros((len(files), size, size, 3), np.uint8)
    found = np.zeros(len(files), bool)
    for i, (_f, data) in enumerate(iter_image_bytes(images, files)):
        img = decode(data)
        if img is None:
            continue
        img = bordered(img, PHOTO_BORDER)
        boxes = detector.detect(img)
        if not boxes:
            continue
        crop = crop_face(img, boxes[0])
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
        crops[i] = cv2.resize(crop, (size, size), interpolation=interp)
        found[i] = True
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp.npz")
        np.savez(tmp, crops=crops, found=found)
        os.replace(tmp, key)
    return crops, found


__all__ = [
    "FaceRows",
    "read_labels",
    "iter_image_bytes",
    "decode",
    "load_chips",
    "detect_face_crops",
    "bordered",
    "hash_folds",
    "GENDERS",
]
