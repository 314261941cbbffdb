"""Evaluate the runtime classifier (kiosk/classify.py, the daemon's code path) on a labelled set.

    python tools/evaluate.py --labels ../shared/data/faces/labels.csv \
        --images ../shared/data/faces/utkface.tar --filter fold==9 [--detect] [--json OUT]

Prints gender accuracy (overall, female, male), exact and one-off age-group accuracy (rows
with ``age_group``), "consistent" accuracy (rows with ``adience_overlap``), MAE in years
(rows with ``age``), the confusion matrices, the counts used and the median per-face latency.
With ``--detect`` each image is a whole photo: the daemon's Haar detector finds the largest
face, ``crop_face`` crops it, and photos without a face count as misses (``faces_missed``;
they are left out of the accuracy figures, whose counts are printed). ``--zoom F`` re-frames
each crop about its centre (F < 1: a looser crop, the face F times as wide, as other
collections frame faces): a transfer check that needs no other collection.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kiosk.labels import AGE_GROUPS, GENDERS, MODEL_NAMES  # noqa: E402
from tools.facedata import FaceRows, bordered, decode, iter_image_bytes, read_labels  # noqa: E402

#: UTKFace race codes (third field of the original file name, ``orig_file``).
RACES = {0: "white", 1: "black", 2: "asian", 3: "indian", 4: "others"}

JSON_KEYS = (
    "n",
    "gender_accuracy",
    "gender_accuracy_female",
    "gender_accuracy_male",
    "age_exact_accuracy",
    "age_one_off_accuracy",
    "age_consistent_accuracy",
    "mae_years",
    "faces_missed",
    "latency_ms_median",
)


def _frac(hits: np.ndarray) -> float | None:
    return float(np.mean(hits)) if hits.size else None


def compute_metrics(
    rows: FaceRows,
    age_probs: np.ndarray,
    female_prob: np.ndarray,
    age_years: np.ndarray,
    valid: np.ndarray | None = None,
) -> dict:
    """Metrics for predictions aligned with ``rows``; ``valid`` masks rows that have one."""
    n = len(rows)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    pred_group = np.argmax(age_probs, axis=1) if n else np.zeros(0, int)
    pred_gender = (female_prob < 0.5).astype(int)  # 0 female, 1 male
    expected_age = age_probs @ np.asarray(age_years, float) if n else np.zeros(0)
    out: dict = {"n": int(valid.sum())}
    counts: dict = {}

    g = valid & (rows.gender >= 0)
    out["gender_accuracy"] = _frac(pred_gender[g] == rows.gender[g])
    for code, name in enumerate(GENDERS):
        m = g & (rows.gender == code)
        out[f"gender_accuracy_{name}"] = _frac(pred_gender[m] == code)
        counts[f"gender_{name}"] = int(m.sum())
    counts["gender"] = int(g.sum())

    a = valid & (rows.age_group >= 0)
    out["age_exact_accuracy"] = _frac(pred_group[a] == rows.age_group[a])
    out["age_one_off_accuracy"] = _frac(np.abs(pred_group[a] - rows.age_group[a]) <= 1)
    counts["age_group"] = int(a.sum())

    if rows.overlap is not None:
        c = valid & np.array([len(s) > 0 for s in rows.overlap], bool)
        hits = np.array([pred_group[i] in rows.overlap[i] for i in np.flatnonzero(c)], bool)
        out["age_consistent_accuracy"] = _frac(hits)
        counts["adience_overlap"] = int(c.sum())
    else:
        out["age_consistent_accuracy"] = None
        counts["adience_overlap"] = 0

    y = valid & ~np.isnan(rows.age)
    out["mae_years"] = float(np.mean(np.abs(expected_age[y] - rows.age[y]))) if y.any() else None
    counts["age"] = int(y.sum())
    out["faces_missed"] = int(n - valid.sum())
    out["counts"] = counts

    k = len(AGE_GROUPS)
    conf = np.zeros((k, k), int)
    for t, p in zip(rows.age_group[a], pred_group[a], strict=True):
        conf[t, p] += 1
    out["age_confusion"] = conf.tolist()
    gconf = np.zeros((2, 2), int)
    for t, p in zip(rows.gender[g], pred_gender[g], strict=True):
        gconf[t, p] += 1
    out["gender_confusion"] = gconf.tolist()
    return out


def per_group_metrics(
    rows: FaceRows, age_probs, female_prob, age_years, key: np.ndarray, names: dict
) -> dict:
    res = {}
    for code, name in names.items():
        m = key == code
        if m.any():
            sub = compute_metrics(
                rows.subset(np.flatnonzero(m)), age_probs[m], female_prob[m], age_years
            )
            res[name] = {k: sub[k] for k in JSON_KEYS if k in sub}
    return res


def apply_filter(rows: FaceRows, expr: str | None) -> np.ndarray:
    """Row indices matching comma-separated ``field==v`` / ``field!=v`` terms (all must hold).

    Fields: fold, res_px, race, gender (0 female / 1 male).
    """
    keep = np.ones(len(rows), bool)
    if not expr:
        return np.flatnonzero(keep)
    for term in expr.split(","):
        term = term.strip()
        op = "!=" if "!=" in term else "=="
        if op not in term:
            raise ValueError(f"filter term {term!r}: expected field==value or field!=value")
        field, value = (s.strip() for s in term.split(op, 1))
        if field not in ("fold", "res_px", "race", "gender"):
            raise ValueError(f"filter term {term!r}: unknown field {field!r}")
        col = getattr(rows, field)
        vals = [int(v) for v in value.split("|")]
        m = np.isin(col, vals)
        keep &= m if op == "==" else ~m
    return np.flatnonzero(keep)


def reframe(img: np.ndarray, zoom: float) -> np.ndarray:
    """The same image scaled by ``zoom`` about its centre, the border filled by repeating the
    edge pixels: zoom 0.7 frames the face the way a 30 % looser crop would."""
    if zoom == 1.0:
        return img
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, zoom)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def format_report(m: dict, title: str = "") -> str:
    def pct(v):
        return "   n/a" if v is None else f"{100 * v:6.2f}%"

    c = m["counts"]
    lines = [title] if title else []
    lines += [
        f"faces evaluated        {m['n']}  (missed: {m['faces_missed']})",
        f"gender accuracy        {pct(m['gender_accuracy'])}  (n={c['gender']})",
        f"  female               {pct(m['gender_accuracy_female'])}  (n={c['gender_female']})",
        f"  male                 {pct(m['gender_accuracy_male'])}  (n={c['gender_male']})",
        f"age exact              {pct(m['age_exact_accuracy'])}  (n={c['age_group']})",
        f"age one-off            {pct(m['age_one_off_accuracy'])}  (n={c['age_group']})",
        f"age consistent         {pct(m['age_consistent_accuracy'])}  (n={c['adience_overlap']})",
        "MAE years              "
        + ("   n/a" if m["mae_years"] is None else f"{m['mae_years']:6.2f}")
        + f"  (n={c['age']})",
    ]
    if m.get("latency_ms_median") is not None:
        lines.append(f"latency / face median  {m['latency_ms_median']:.3f} ms")
    lines.append("age confusion (rows = true, cols = predicted): " + " ".join(AGE_GROUPS))
    for g, r in zip(AGE_GROUPS, m["age_confusion"], strict=True):
        lines.append(f"  {g:>7} " + " ".join(f"{v:5d}" for v in r))
    lines.append("gender confusion (rows = true, cols = predicted): female male")
    for g, r in zip(GENDERS, m["gender_confusion"], strict=True):
        lines.append(f"  {g:>7} " + " ".join(f"{v:5d}" for v in r))
    return "\n".join(lines)


def group_line(sub: dict) -> str:
    """One line of a per-group breakdown; groups can lack gender or age labels ("n/a")."""

    def num(key: str, fmt: str) -> str:
        return "n/a" if sub.get(key) is None else format(sub[key], fmt)

    return (
        f"n={sub['n']} gender={num('gender_accuracy', '.3f')} "
        f"(f {num('gender_accuracy_female', '.3f')} / m {num('gender_accuracy_male', '.3f')}) "
        f"exact={num('age_exact_accuracy', '.3f')} one-off={num('age_one_off_accuracy', '.3f')} "
        f"mae={num('mae_years', '.2f')}"
    )


#: Age bands of the transfer report (years, upper bound exclusive).
AGE_BANDS = {0: "<13", 1: "13-19", 2: "20-39", 3: "40-59", 4: "60+"}
_BAND_EDGES = (13, 20, 40, 60)


def age_bands(age: np.ndarray) -> np.ndarray:
    """Band index per exact age (-1 where the age is unknown)."""
    out = np.digitize(np.nan_to_num(age, nan=-1.0), _BAND_EDGES)
    return np.where(np.isnan(age), -1, out)


def perturb(img: np.ndarray, spec: str, seed: int) -> np.ndarray:
    """One named input change: ``noiseN`` (uniform +-N levels per pixel, as another decoder
    gives), ``jpegQ`` (re-encoded at quality Q, as an MJPEG camera does), ``blurS`` (Gaussian
    sigma S px), ``lightG`` (brightness and contrast times G), ``zoomF`` (see reframe)."""
    kind = spec.rstrip("0123456789.")
    try:
        v = float(spec[len(kind) :])
    except ValueError:
        raise ValueError(
            f"perturbation {spec!r}: expected e.g. noise3, jpeg75, blur1.5, light0.6 or zoom0.7"
        ) from None
    if kind == "noise":
        rng = np.random.default_rng(seed)
        n = rng.integers(-int(v), int(v) + 1, img.shape, dtype=np.int16)
        return np.clip(img.astype(np.int16) + n, 0, 255).astype(np.uint8)
    if kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(v)])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), v)
    if kind == "light":
        return np.clip(img.astype(np.float32) * v, 0, 255).astype(np.uint8)
    if kind == "zoom":
        return reframe(img, v)
    raise ValueError(f"perturbation {spec!r}: unknown kind {kind!r}")


def _predict_all(rows, images, clf, detector, border, change, num_seed=0):
    """Probabilities for every row; ``change`` (a perturbation or None) is applied to the
    photo before detection (--detect) or to the crop; a zoom always re-frames the crop."""
    from kiosk.classify import crop_face

    on_photo = detector is not None and change is not None and not change.startswith("zoom")

    n = len(rows)
    age = np.full((n, len(AGE_GROUPS)), 1.0 / len(AGE_GROUPS))
    female = np.full(n, 0.5)
    valid = np.zeros(n, bool)
    lat = []
    for i, (_f, data) in enumerate(iter_image_bytes(images, rows.files)):
        img = decode(data)
        if img is None:
            continue
        if detector is not None:
            if border:
                img = bordered(img, border)
            if on_photo:
                img = perturb(img, change, num_seed + i)
            boxes = detector.detect(img)
            if not boxes:
                continue
            img = crop_face(img, boxes[0])
        crop = perturb(img, change, num_seed + i) if change and not on_photo else img
        t0 = time.perf_counter()
        a, f = clf.probabilities([crop])
        lat.append(time.perf_counter() - t0)
        age[i], female[i], valid[i] = a[0], f[0], True
    return age, female, valid, lat


def run(
    labels: str,
    images: str,
    detect: bool = False,
    model_dir: str | None = None,
    filter_expr: str | None = None,
    num_threads: int = 1,
    limit: int | None = None,
    flip_tta: bool | None = None,
    by_race: bool = False,
    by_age: bool = False,
    zoom: float = 1.0,
    by_band: bool = False,
    border: float = 0.0,
    perturbations: tuple[str, ...] = (),
) -> dict:
    from kiosk.classify import Classifier

    rows = read_labels(labels)
    idx = apply_filter(rows, filter_expr)
    if limit:
        idx = idx[:limit]
    rows = rows.subset(idx)
    clf = Classifier(model_dir, num_threads=num_threads, flip_tta=flip_tta)
    detector = None
    if detect:
        from kiosk.config import DetectorConfig
        from kiosk.detect import FaceDetector

        detector = FaceDetector.from_config(DetectorConfig())  # the daemon's defaults
    clean = f"zoom{zoom}" if zoom != 1.0 else None
    age, female, valid, lat = _predict_all(rows, images, clf, detector, border, clean)
    m = compute_metrics(rows, age, female, clf.age_years, valid)
    m["latency_ms_median"] = float(np.median(lat) * 1000) if lat else None
    m["model_version"] = clf.model_version
    scored = rows.subset(np.flatnonzero(valid))
    breakdowns = {
        "by_race": (by_race, rows.race, RACES),
        "by_age": (by_age, rows.age_nearest, dict(enumerate(AGE_GROUPS))),
        "by_band": (by_band, age_bands(rows.age), AGE_BANDS),
    }
    for key, (wanted, codes, names) in breakdowns.items():
        if wanted:
            m[key] = per_group_metrics(
                scored, age[valid], female[valid], clf.age_years, codes[valid], names
            )
    if perturbations:
        m["perturbed"] = {}
    for spec in perturbations:
        a2, f2, v2, _ = _predict_all(rows, images, clf, detector, border, spec, 10_000)
        sub = {
            k: v
            for k, v in compute_metrics(rows, a2, f2, clf.age_years, v2).items()
            if k in JSON_KEYS
        }
        both = valid & v2
        # A flip: the decision on the changed input differs from the one on the original.
        sub["gender_flips"] = _frac((female[both] >= 0.5) != (f2[both] >= 0.5))
        sub["age_group_flips"] = _frac(np.argmax(age[both], 1) != np.argmax(a2[both], 1))
        sub["female_prob_change_median"] = (
            float(np.median(np.abs(female[both] - f2[both]))) if both.any() else None
        )
        sub["compared"] = int(both.sum())
        m["perturbed"][spec] = sub
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", required=True, help="labels CSV (file, age, age_group, gender...)")
    ap.add_argument("--images", required=True, help="folder or .tar holding the CSV's files")
    ap.add_argument(
        "--detect",
        action="store_true",
        help="images are whole photos: detect (Haar) and crop like the daemon",
    )
    ap.add_argument("--json", help="write the metrics to this JSON file")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--model", help="a shipped model by name: " + ", ".join(MODEL_NAMES))
    which.add_argument("--model-dir", help="a model folder (default: the shipped default)")
    ap.add_argument("--filter", help="e.g. fold==9 or res_px==64,race!=1")
    ap.add_argument("--limit", type=int, help="only the first N matching rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--flip-tta", choices=("on", "off"), help="override the model's setting")
    ap.add_argument(
        "--by-race", action="store_true", help="also report per UTKFace race code (from orig_file)"
    )
    ap.add_argument(
        "--by-age",
        action="store_true",
        help="also report per true age group (nearest group to the age in years)",
    )
    ap.add_argument(
        "--zoom",
        type=float,
        default=1.0,
        help="re-frame each crop about its centre (0.7 = 30%% looser) to check framing transfer",
    )
    ap.add_argument(
        "--by-band",
        action="store_true",
        help="also report per age band (<13, 13-19, 20-39, 40-59, 60+)",
    )
    ap.add_argument(
        "--border",
        type=float,
        default=0.0,
        help="--detect: grey border around each photo, as a fraction of its width "
        "(portraits whose face touches the edge)",
    )
    ap.add_argument(
        "--perturb",
        action="append",
        default=[],
        help="also evaluate changed inputs and count decision flips: noise3, "
        "jpeg75, blur1.5, light0.6, zoom0.7 (repeatable)",
    )
    args = ap.parse_args(argv)
    for spec in args.perturb:
        try:
            perturb(np.zeros((4, 4, 3), np.uint8), spec, 0)
        except ValueError as exc:
            ap.error(str(exc))
    if args.model:
        from kiosk.classify import shipped_model_dir

        try:
            args.model_dir = str(shipped_model_dir(args.model))
        except ValueError as exc:
            ap.error(f"--model: {exc}")
    if not 0.2 <= args.zoom <= 3.0:
        ap.error(f"--zoom {args.zoom}: expected a factor between 0.2 and 3")
    tta = None if args.flip_tta is None else args.flip_tta == "on"
    m = run(
        args.labels,
        args.images,
        args.detect,
        args.model_dir,
        args.filter,
        args.threads,
        args.limit,
        tta,
        args.by_race,
        args.by_age,
        args.zoom,
        args.by_band,
        args.border,
        tuple(args.perturb),
    )
    print(format_report(m, f"model {m['model_version']} on {args.labels}"))
    for key in ("by_race", "by_age", "by_band"):
        for name, sub in m.get(key, {}).items():
            print(f"  {name:>7}: " + group_line(sub))
    for spec, sub in m.get("perturbed", {}).items():
        print(
            f"  {spec:>9}: " + group_line(sub) + f" gender flips={sub['gender_flips']} "
            f"age flips={sub['age_group_flips']} (n={sub['compared']})"
        )
    if args.json:
        out = {k: m.get(k) for k in JSON_KEYS}
        out.update({k: v for k, v in m.items() if k not in out})
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
