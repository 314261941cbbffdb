"""tools/evaluate.py: metrics, counts, JSON keys, --detect misses, tar input."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT))

from tools import evaluate  # noqa: E402
from tools.facedata import read_labels  # noqa: E402

HEADER = "file,age,age_group,gender,adience_overlap\n"
ROWS = [
    "a.jpg,30,25-32,f,25-32|38-43",
    "b.jpg,,,m,",  # gender only
    "c.jpg,23,,f,15-20|25-32",  # age in a gap: no exact group, still has an age
    "d.jpg,70,60-100,,60-100",  # no gender
    "e.jpg,,4-6,,",  # group only
]


def write_set(tmp_path, as_tar=False):
    csv = tmp_path / "labels.csv"
    csv.write_text(HEADER + "\n".join(ROWS) + "\n")
    rng = np.random.default_rng(0)
    imgs = {
        r.split(",")[0]: cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))[
            1
        ].tobytes()
        for r in ROWS
    }
    if as_tar:
        path = tmp_path / "imgs.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in imgs.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return csv, path
    d = tmp_path / "imgs"
    d.mkdir()
    for name, data in imgs.items():
        (d / name).write_bytes(data)
    return csv, d


@pytest.mark.parametrize("as_tar", [False, True])
def test_counts_on_tiny_csv(tmp_path, as_tar, capsys):
    csv, images = write_set(tmp_path, as_tar)
    out = tmp_path / "m.json"
    assert evaluate.main(["--labels", str(csv), "--images", str(images), "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    for key in evaluate.JSON_KEYS:
        assert key in m
    assert m["n"] == 5 and m["faces_missed"] == 0
    c = m["counts"]
    assert c["gender"] == 3 and c["gender_female"] == 2 and c["gender_male"] == 1
    assert c["age_group"] == 3  # a, d, e
    assert c["age"] == 3  # a, c, d
    assert c["adience_overlap"] == 3  # a, c, d
    for key in (
        "gender_accuracy",
        "age_exact_accuracy",
        "age_one_off_accuracy",
        "age_consistent_accuracy",
    ):
        assert 0.0 <= m[key] <= 1.0
    assert m["mae_years"] >= 0 and m["latency_ms_median"] > 0
    assert sum(map(sum, m["age_confusion"])) == 3
    text = capsys.readouterr().out
    assert "gender accuracy" in text and "(n=3)" in text and "latency" in text


def test_by_age_groups_rows_by_nearest_true_age_group(tmp_path, capsys):
    from kiosk.labels import nearest_age_group

    csv, images = write_set(tmp_path)
    out = tmp_path / "m.json"
    assert (
        evaluate.main(
            ["--labels", str(csv), "--images", str(images), "--by-age", "--json", str(out)]
        )
        == 0
    )
    by_age = json.loads(out.read_text())["by_age"]
    # a (30), c (23) and d (70) by age, e by its group; b has neither and is left out.
    expected = {"25-32": 1, "60-100": 1, "4-6": 1}
    expected[nearest_age_group(23.0)] = expected.get(nearest_age_group(23.0), 0) + 1
    assert {k: v["n"] for k, v in by_age.items()} == expected
    assert by_age["4-6"]["gender_accuracy"] is None and by_age["4-6"]["mae_years"] is None
    assert by_age["60-100"]["gender_accuracy"] is None  # d has no gender
    assert by_age["25-32"]["gender_accuracy"] in (0.0, 1.0)
    assert "gender=n/a" in capsys.readouterr().out


def test_detect_counts_photos_without_faces_as_misses(tmp_path):
    csv, images = write_set(tmp_path)
    m = evaluate.run(str(csv), str(images), detect=True)
    assert m["faces_missed"] == 5 and m["n"] == 0
    assert m["gender_accuracy"] is None and m["mae_years"] is None


def test_compute_metrics_exact_numbers(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text(
        HEADER
        + "\n".join(
            [
                "a,1,0-2,f,0-2",
                "b,5,4-6,m,15-20",
                "c,30,25-32,m,",
                "d,65,60-100,f,48-53|60-100",
            ]
        )
        + "\n"
    )
    rows = read_labels(csv)
    age = np.zeros((4, 8))
    age[0, 0] = 1  # right
    age[1, 2] = 1  # one off
    age[2, 7] = 1  # far off
    age[3, 6] = 1  # one off, consistent
    female = np.array([0.9, 0.8, 0.1, 0.3])  # right, wrong, right, wrong
    years = np.array([1, 5, 10, 17.5, 28.5, 40.5, 50.5, 70.0])
    m = evaluate.compute_metrics(rows, age, female, years)
    assert m["gender_accuracy"] == 0.5
    assert m["gender_accuracy_female"] == 0.5 and m["gender_accuracy_male"] == 0.5
    assert m["age_exact_accuracy"] == 0.25 and m["age_one_off_accuracy"] == 0.75
    assert m["age_consistent_accuracy"] == pytest.approx(2 / 3)  # a yes, b no, d yes
    assert m["mae_years"] == pytest.approx((0 + 5 + 40 + 14.5) / 4)


def test_filter_expressions(tmp_path):
    rows = read_labels(write_set(tmp_path)[0])
    assert evaluate.apply_filter(rows, "gender==0").tolist() == [0, 2]
    assert evaluate.apply_filter(rows, "gender!=0").tolist() == [1, 3, 4]
    with pytest.raises(ValueError):
        evaluate.apply_filter(rows, "colour==1")


def test_detect_on_real_faces(shared_data, tmp_path):
    """Real chips pasted into larger photos: Haar finds them, and the daemon's crop of the
    detection is classified like the chip itself (crop_face restores the chip framing)."""
    from kiosk.classify import Classifier
    from tools.facedata import decode, iter_image_bytes

    faces = shared_data / "faces"
    rows = read_labels(faces / "labels.csv")
    idx = np.flatnonzero((rows.fold == 9) & (rows.res_px == 128))[:24]
    d = tmp_path / "photos"
    d.mkdir()
    lines, chips = [], []
    for (f, data), i in zip(
        iter_image_bytes(faces / "utkface.tar", [rows.files[i] for i in idx]), idx, strict=True
    ):
        chip = decode(data)
        chips.append(chip)
        photo = cv2.copyMakeBorder(
            cv2.resize(chip, (160, 160)), 120, 120, 160, 160, cv2.BORDER_REPLICATE
        )
        name = f.replace("/", "_")
        cv2.imwrite(str(d / name), photo)
        lines.append(f"{name},{int(rows.age[i])},,{'fm'[rows.gender[i]]},")
    csv = tmp_path / "l.csv"
    csv.write_text(HEADER + "\n".join(lines) + "\n")
    m = evaluate.run(str(csv), str(d), detect=True)
    assert m["faces_missed"] <= 2
    direct = evaluate.compute_metrics(
        read_labels(csv), *Classifier().probabilities(chips), np.zeros(8)
    )
    assert abs(m["gender_accuracy"] - direct["gender_accuracy"]) <= 0.15


def test_reframe_scales_about_the_centre_and_repeats_the_border():
    img = np.zeros((64, 64, 3), np.uint8)
    img[22:42, 22:42] = 255  # a 20 px square in the middle
    img[:, 0] = 100  # a left edge to be repeated into the new border
    assert evaluate.reframe(img, 1.0) is img
    loose = evaluate.reframe(img, 0.5)
    assert loose.shape == img.shape
    white = np.argwhere(loose[:, :, 0] > 128)
    span = white.max(axis=0) - white.min(axis=0) + 1
    assert ((8 <= span) & (span <= 12)).all()
    assert abs(white.mean(axis=0) - 31.5).max() < 1.5  # still centred
    assert loose[32, 2, 0] == 100  # the border repeats the edge pixels
    tight = evaluate.reframe(img, 2.0)
    assert (tight[16:48, 16:48] == 255).all()


def test_zoom_outside_the_range_is_refused(tmp_path, capsys):
    csv, images = write_set(tmp_path)
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--labels", str(csv), "--images", str(images), "--zoom", "0"])
    assert e.value.code == 2 and "--zoom 0.0" in capsys.readouterr().err
