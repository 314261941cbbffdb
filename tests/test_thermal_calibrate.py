"""tools/calibrate.py on the SpeakingFaces board corners: YAML the config accepts, errors."""

from __future__ import annotations

import re

import numpy as np
import yaml

from kiosk.config import parse_config
from kiosk.detect import Box
from kiosk.thermal.register import map_box
from tools.calibrate import main

PAIRS = "thermal/speakingfaces_registration/matched_features.csv"


def test_calibrate_prints_a_homography_the_config_accepts(shared_data, capsys):
    assert main([str(shared_data / PAIRS), "--ransac", "2"]) == 0
    out = capsys.readouterr().out
    yaml_part, summary = out.rsplit("\n\n", 1)
    cfg = parse_config(yaml.safe_load(yaml_part))
    h = np.asarray(cfg.thermal.homography)
    assert h.shape == (3, 3) and h[2, 2] == 1.0
    median = float(re.search(r"median ([0-9.]+)", summary).group(1))
    assert median <= 2.0 and "pairs used" in summary
    # A face box in the C920 frame (768x512) lands inside the T540 frame (464x348).
    assert map_box(h, Box(300, 150, 160, 200), 464, 348) is not None


def test_calibrate_reports_the_global_fit_error(shared_data, capsys):
    assert main([str(shared_data / PAIRS)]) == 0
    median = float(re.search(r"median ([0-9.]+)", capsys.readouterr().out).group(1))
    assert 5.0 < median < 15.0  # several board depths: one homography cannot fit them all


def test_calibrate_rejects_too_few_pairs_and_bad_columns(tmp_path, capsys):
    few = tmp_path / "few.csv"
    few.write_text("visible_x,visible_y,thermal_x,thermal_y\n0,0,0,0\n10,0,5,0\n0,10,0,5\n")
    assert main([str(few)]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "at least 4 point pairs" in err and "missing column(s) visible_x" in err
