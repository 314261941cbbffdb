"""Fit the skin-to-body model the temperature gate uses, from the FDA face/oral study.

    python -m tools.fit_core_model [--data ../shared/data/thermal] [--out PATH] [--check]

Screening thermographs (IEC 80601-2-59, ISO/TR 13154) read the inner canthus and map it to a
body-temperature estimate. Here the map is fitted on the FDA's public study (CC0): about 1,020
subjects, two research thermographs (FLIR, ICI), four rounds each, with an oral thermometer
reading (`aveOralM`, monitor mode). Only what a kiosk can measure is allowed in: the canthus
reading, the room temperature and the distance. Each candidate is scored by a 5-fold
cross-validation over subjects (a subject's rounds and both cameras stay in one fold), and a
feature is kept only when it lowers that error. Each round counts as one visit, as a kiosk sees
one. The fitted coefficients, the data's checksums and the figures go to
kiosk/thermal/core_model.json; the command reproduces that file byte for byte (`--check` says
whether it does).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "thermal"
DEFAULT_OUT = ROOT / "kiosk" / "thermal" / "core_model.json"
FDA = "fda_face_oral_temperature"
CAMERAS = ("FLIR", "ICI")
ROUNDS = (1, 2, 3, 4)
FOLDS = 5
# The canthus reading: the mean of the four hottest pixels of the extended canthi area, the
# closest of the study's 26 regions to the daemon's hot-spot (the mean of the hottest pixels).
CANTHUS = "canthi4Max"
ALTERNATIVE_READINGS = ("canthiMax", "T_Max", "T_FH_Max")  # scored for the record
TARGET = "aveOralM"
# Where the slope of oral on canthus may change ("knee"); chosen by cross-validation.
KNOTS_C = tuple(35.0 + 0.25 * i for i in range(9))
# Distances outside this are entry errors (the files hold one 79 m).
DISTANCE_RANGE_M = (0.3, 2.0)
FEVERS_C = (37.5, 38.0)
AMBIENT_BINS_C = (20.0, 22.0, 24.0, 26.0, 28.0, 30.0)
SPECIFICITY = 0.9
# gate.threshold_c: the held-out 90 %-specificity cut for oral >= 37.5, rounded up to this
# (up, so that the specificity stays at least 90 %).
THRESHOLD_STEP_C = 0.05


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def load_visits(folder: Path, reading: str = CANTHUS) -> Visits:
    """Every round with all readings, a room temperature, a distance and an oral reading."""
    rows: list[tuple] = []
    for camera in CAMERAS:
        with open(folder / f"{camera}_groups1and2.csv", newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
        names = table[2]  # rows 1-2 are group headings
        for values in table[3:]:
            record = dict(zip(names, values, strict=False))
            if record.get("SubjectID"):
                rows.extend(_rounds(record, camera, reading))
    return Visits(*(np.array(column) for column in zip(*rows, strict=True)))


def _rounds(record: dict[str, str], camera: str, reading: str) -> list[tuple]:
    """One visit per round: (subject, camera, canthus, ambient, distance, oral)."""
    ambient, oral = _number(record["T_atm"]), _number(record[TARGET])
    distance = _number(record["Distance"])
    if not DISTANCE_RANGE_M[0] <= distance <= DISTANCE_RANGE_M[1]:
        return []
    out = []
    for k in ROUNDS:
        readings = {n: _number(record.get(f"{n}{k}", "")) for n in (CANTHUS, *ALTERNATIVE_READINGS)}
        # Every reading present, so that each reading is scored on the same visits.
        if np.all(np.isfinite([ambient, oral, *readings.values()])):
            out.append((record["SubjectID"], camera, readings[reading], ambient, distance, oral))
    return out


def fold_of(subject: str, salt: str = "") -> int:
    """A subject's fold, from a hash of its id: the same on every machine and numpy version."""
    return int(hashlib.sha256(f"{salt}{subject}".encode()).hexdigest(), 16) % FOLDS


# A model is a tuple of feature names; "knee" is max(0, canthus - knot).
Features = tuple[str, ...]


@dataclass(frozen=True)
class Visits:
    """The rows as arrays, so that the many cross-validation fits stay fast."""

    subject: np.ndarray
    camera: np.ndarray
    canthus_c: np.ndarray
    ambient_c: np.ndarray
    distance_m: np.ndarray
    oral_c: np.ndarray

    def take(self, keep: np.ndarray) -> Visits:
        return Visits(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    def folds(self, salt: str = "") -> np.ndarray:
        return np.array([fold_of(s, salt) for s in self.subject])


def design(v: Visits, features: Features, knot: float) -> np.ndarray:
    columns = {
        "canthus": lambda: v.canthus_c,
        "knee": lambda: np.maximum(0.0, v.canthus_c - knot),
        "ambient": lambda: v.ambient_c,
        "distance": lambda: v.distance_m,
    }
    return np.column_stack([np.ones(v.oral_c.size), *(columns[f]() for f in features)])


def fit(v: Visits, features: Features, knot: float) -> np.ndarray:
    return np.linalg.lstsq(design(v, features, knot), v.oral_c, rcond=None)[0]


def choose_knot(v: Visits, features: Features, salt: str) -> float:
    """The knot with the lowest cross-validated MAE on these visits (inner folds by `salt`)."""
    if "knee" not in features:
        return 0.0
    folds = v.folds(salt)
    return min(KNOTS_C, key=lambda k: _cv_mae(v, features, k, folds))


def _cv_mae(v: Visits, features: Features, knot: float, folds: np.ndarray) -> float:
    estimate = np.empty_like(v.oral_c)
    for k in range(FOLDS):
        held = folds == k
        beta = fit(v.take(~held), features, knot)
        estimate[held] = design(v.take(held), features, knot) @ beta
    return float(np.mean(np.abs(estimate - v.oral_c)))


def held_out(v: Visits, features: Features) -> np.ndarray:
    """Each visit's estimate from a model fitted (knot included) without its subject."""
    folds = v.folds()
    out = np.empty_like(v.oral_c)
    for k in range(FOLDS):
        held = folds == k
        train = v.take(~held)
        knot = choose_knot(train, features, salt=f"inner{k}:")
        out[held] = design(v.take(held), features, knot) @ fit(train, features, knot)
    return out


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    pos, neg = np.sort(score[positive]), np.sort(score[~positive])
    below = np.searchsorted(neg, pos, "left")
    ties = np.searchsorted(neg, pos, "right") - below
    return float((below + 0.5 * ties).sum() / (pos.size * neg.size))


def cut_at_specificity(score: np.ndarray, positive: np.ndarray, spec: float = SPECIFICITY) -> float:
    """The lowest estimate above which at most 1 - spec of the negatives lie."""
    neg = np.sort(score[~positive])
    return float(neg[int(np.ceil(spec * neg.size)) - 1])


def screening(score: np.ndarray, oral: np.ndarray, fever_c: float) -> dict[str, float | int]:
    positive = oral >= fever_c
    cut = cut_at_specificity(score, positive)
    return {
        "fevers": int(positive.sum()),
        "auc": round(auc(score, positive), 4),
        "sensitivity_at_90_specificity": round(float(np.mean(score[positive] > cut)), 4),
        "estimate_at_90_specificity_c": round(cut, 3),
    }


def at_threshold(score: np.ndarray, oral: np.ndarray, threshold_c: float) -> dict[str, float]:
    """What gate.threshold_c does to held-out visits: fails at or above it."""
    positive, fails = oral >= FEVERS_C[0], score >= threshold_c
    return {
        "sensitivity": round(float(np.mean(fails[positive])), 4),
        "specificity": round(float(np.mean(~fails[~positive])), 4),
    }


CANDIDATES: tuple[tuple[str, Features], ...] = (
    ("mean oral (no feature)", ()),
    ("canthus", ("canthus",)),
    ("canthus + ambient", ("canthus", "ambient")),
    ("canthus + knee", ("canthus", "knee")),
    ("canthus + knee + ambient", ("canthus", "knee", "ambient")),
    ("canthus + knee + ambient + distance", ("canthus", "knee", "ambient", "distance")),
)
CHOSEN: Features = ("canthus", "knee", "ambient")


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(np.mean(np.abs(a - b))), 4)


def figures(v: Visits, alternatives: dict[str, Visits]) -> dict:
    candidates = {name: _mae(held_out(v, f), v.oral_c) for name, f in CANDIDATES}
    readings = {CANTHUS: candidates["canthus + knee + ambient"]}
    for name, alt in alternatives.items():
        readings[name] = _mae(held_out(alt, CHOSEN), alt.oral_c)
    estimate = held_out(v, CHOSEN)
    cut = cut_at_specificity(estimate, v.oral_c >= FEVERS_C[0])
    threshold = round(float(np.ceil(cut / THRESHOLD_STEP_C) * THRESHOLD_STEP_C), 2)
    return {
        "held_out_mae_c_by_features": candidates,
        "held_out_mae_c_by_canthus_reading": readings,
        "held_out_mae_c": _mae(estimate, v.oral_c),
        "per_camera": per_camera(v, estimate, threshold),
        "threshold_c": threshold,
        "at_threshold_by_ambient_c": by_ambient(v, estimate, threshold),
    }


def per_camera(v: Visits, estimate: np.ndarray, threshold_c: float) -> dict:
    out = {}
    for cam in CAMERAS:
        sel = v.camera == cam
        out[cam] = {
            "visits": int(sel.sum()),
            "mae_c": _mae(estimate[sel], v.oral_c[sel]),
            **{f"oral_ge_{f}": screening(estimate[sel], v.oral_c[sel], f) for f in FEVERS_C},
            "at_threshold": at_threshold(estimate[sel], v.oral_c[sel], threshold_c),
        }
    return out


def by_ambient(v: Visits, estimate: np.ndarray, threshold_c: float) -> dict:
    """The threshold's sensitivity and specificity by room: where the fit holds."""
    out = {}
    for low in AMBIENT_BINS_C[:-1]:
        high = low + (AMBIENT_BINS_C[1] - AMBIENT_BINS_C[0])
        sel = (v.ambient_c >= low) & (v.ambient_c < high)
        fevers = int(np.sum(v.oral_c[sel] >= FEVERS_C[0]))
        out[f"{low:g}-{high:g}"] = {
            "visits": int(sel.sum()),
            "fevers": fevers,
            "mae_c": _mae(estimate[sel], v.oral_c[sel]),
            **at_threshold(estimate[sel], v.oral_c[sel], threshold_c),
        }
    return out


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of each input file, checked against the study's own SHA256SUMS.txt."""
    sums = {}
    for line in (folder / "SHA256SUMS.txt").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.strip()] = digest
    out = {}
    for camera in CAMERAS:
        name = f"{camera}_groups1and2.csv"
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if sums.get(name) != digest:
            raise SystemExit(f"{folder / name}: sha256 {digest} differs from SHA256SUMS.txt")
        out[name] = digest
    return out


def build(data: Path) -> dict:
    folder = data / FDA
    v = load_visits(folder)
    alternatives = {name: load_visits(folder, name) for name in ALTERNATIVE_READINGS}
    knot = choose_knot(v, CHOSEN, salt="")
    intercept, canthus, knee, ambient = (round(float(b), 5) for b in fit(v, CHOSEN, knot))
    return {
        "model": "oral temperature from the inner-canthus reading and the room temperature",
        "estimate": "oral = intercept + canthus*c + knee*max(0, c - knot_c) + ambient*a",
        "coefficients": {
            "intercept": intercept,
            "canthus": canthus,
            "knee": knee,
            "knot_c": knot,
            "ambient": ambient,
        },
        "fitted_on": {
            "source": "FDA facial and oral temperature study (PhysioNet 10.13026/3bhc-9065, CC0)",
            "files": checksums(folder),
            "canthus_reading": CANTHUS,
            "target": TARGET,
            "subjects": int(np.unique(v.subject).size),
            "visits": int(v.oral_c.size),
            "ambient_range_c": _range(v.ambient_c),
            "canthus_range_c": _range(v.canthus_c),
            "distance_range_m": _range(v.distance_m),
            # What a one-person calibration carries: that person's own oral - canthus gap.
            "oral_minus_canthus_c": {
                "mean": round(float(np.mean(v.oral_c - v.canthus_c)), 4),
                "sd": round(float(np.std(v.oral_c - v.canthus_c)), 4),
            },
        },
        "validation": f"{FOLDS}-fold by subject (sha256 of the id); knot chosen inside each fold",
        "figures": figures(v, alternatives),
    }


def _range(values: np.ndarray) -> list[float]:
    return [round(float(values.min()), 3), round(float(values.max()), 3)]


def render(model: dict) -> str:
    return json.dumps(model, indent=1) + "\n"


def report(model: dict, out=sys.stdout) -> None:
    fig = model["figures"]
    print("held-out MAE by features (C):", file=out)
    for name, mae in fig["held_out_mae_c_by_features"].items():
        print(f"  {name:40s} {mae:.4f}", file=out)
    print("held-out MAE by canthus reading, chosen features (C):", file=out)
    for name, mae in fig["held_out_mae_c_by_canthus_reading"].items():
        print(f"  {name:40s} {mae:.4f}", file=out)
    for cam, f in fig["per_camera"].items():
        parts = [f"{cam}: MAE {f['mae_c']:.3f} C"]
        for fever in FEVERS_C:
            s = f[f"oral_ge_{fever}"]
            sens = s["sensitivity_at_90_specificity"]
            parts.append(
                f"oral>={fever}: AUC {s['auc']:.3f}, sensitivity {sens:.3f}"
                f" at 90% specificity (estimate {s['estimate_at_90_specificity_c']:.2f})"
            )
        print("; ".join(parts), file=out)
    print(f"coefficients {model['coefficients']}; gate.threshold_c {fig['threshold_c']}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared thermal folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON to write")
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = parser.parse_args(argv)
    if not (args.data / FDA).is_dir():
        print(f"{args.data}: no {FDA} folder", file=sys.stderr)
        return 2
    model = build(args.data)
    report(model)
    text = render(model)
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print(f"{args.out}: {'reproduced byte for byte' if same else 'DIFFERS'}")
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
