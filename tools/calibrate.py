"""Fit the visible -> thermal homography for `thermal.homography` from point pairs.

    python -m tools.calibrate points.csv [--ransac 2.0]

points.csv has a header with visible_x, visible_y, thermal_x, thermal_y (any column order,
other columns ignored) and at least 4 rows: the same physical points (e.g. the corners of a
heated checkerboard or ArUco board) in both images, taken with the board at the kiosk's working
distance. Two cameras that are not coaxial agree exactly only at one depth, which is why the
reprojection error is printed: a few pixels at the working distance is good. The matrix is
printed as YAML to paste under `thermal:`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from kiosk.thermal.register import fit_homography, reprojection_errors

COLUMNS = ("visible_x", "visible_y", "thermal_x", "thermal_y")


def read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = [[float(row[c]) for c in COLUMNS] for row in reader]
    data = np.asarray(rows, np.float64).reshape(-1, 4)
    if len(data) < 4:
        raise ValueError(f"{path}: need at least 4 point pairs, got {len(data)}")
    return data[:, :2], data[:, 2:]


def homography_yaml(h: np.ndarray) -> str:
    rows = ",\n".join("    [" + ", ".join(f"{v:.8g}" for v in row) + "]" for row in h)
    return "thermal:\n  homography: [\n" + rows + "\n  ]\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("points", type=Path, help="CSV of point pairs")
    parser.add_argument(
        "--ransac",
        type=float,
        metavar="PX",
        help="ignore pairs further than PX thermal pixels from the best fit (e.g. mismatches)",
    )
    args = parser.parse_args(argv)
    try:
        visible, thermal = read_pairs(args.points)
        used = np.ones(len(visible), bool)
        if args.ransac:
            _, mask = cv2.findHomography(visible, thermal, cv2.RANSAC, args.ransac)
            if mask is None:
                raise ValueError("RANSAC found no consistent homography")
            used = mask.ravel().astype(bool)
        h = fit_homography(visible[used], thermal[used])
    except (OSError, ValueError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    errors = reprojection_errors(h, visible[used], thermal[used])
    print(homography_yaml(h))
    print(
        f"pairs used {int(used.sum())}/{len(visible)}; reprojection error (thermal px): "
        f"median {np.median(errors):.2f}, 95% {np.percentile(errors, 95):.2f}, "
        f"max {errors.max():.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
