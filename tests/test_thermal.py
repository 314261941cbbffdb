"""Thermal unit conversions from real bytes, frame checks, and the measurement on real data."""

from __future__ import annotations

import csv
from dataclasses import replace

import cv2
import numpy as np
import pytest

from kiosk.config import ThermalConfig
from kiosk.detect import Box
from kiosk.thermal.convert import as_uint16_image, lepton_to_celsius, p2pro_to_celsius, rotate
from kiosk.thermal.frame import frame_problem
from kiosk.thermal.measure import (
    FaceThermometer,
    MeasureSettings,
    Reading,
    ReferenceTracker,
    aggregate,
    emissivity_correct,
    find_disc,
)
from kiosk.thermal.register import fit_homography, map_box, reprojection_errors
from kiosk.thermal.sources import load_recording
from tests.conftest import SHARED_DATA
from tools.thermal_eval import (
    device_offsets,
    evaluate_feverscreen,
    evaluate_flir,
    evaluate_registration,
    fda_figures,
    mean_abs_error,
    per_device_calibrated_mae,
)

FEVER = "thermal/feverscreen_lepton35"


def p2pro_uvc_frame(jpeg: bytes) -> np.ndarray:
    """The 256x384x2 bytes a P2 Pro sends over UVC, as the app stored them in APP3 segments."""
    i, chunks = 2, []
    while i < len(jpeg) and jpeg[i + 1] != 0xDA:
        length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if jpeg[i + 1] == 0xE3:
            chunks.append(jpeg[i + 4 : i + 2 + length])
        i += 2 + length
    raw = b"".join(chunks)[: 256 * 384 * 2]
    return np.frombuffer(raw, np.uint8).reshape(384, 256, 2)


def test_p2pro_frame_from_real_bytes(shared_data):
    folder = shared_data / "thermal/infiray_p2pro"
    frame = p2pro_uvc_frame((folder / "p2pro_test.jpg").read_bytes())
    celsius = p2pro_to_celsius(frame)
    assert celsius.shape == (192, 256) and celsius.dtype == np.float32
    np.testing.assert_allclose(celsius, np.load(folder / "p2pro_test_c.npy"), atol=1e-3)
    # The app's own overlay: scale 24.3-27.5 C, ROI max 27.4 / min 24.5.
    assert 24.0 < celsius.min() < 24.5 and 27.3 < celsius.max() < 27.8


def test_lepton_y16_from_real_bytes(shared_data):
    z = np.load(shared_data / FEVER / "testr.npz")
    key = int(np.nonzero(z["frame_index"] == z["key_frame_index"])[0][0])
    wire = z["frames_ck"][key].astype("<u2").tobytes()  # what the PureThermal board sends
    words = as_uint16_image(np.frombuffer(wire, np.uint8).reshape(120, 320), 120, 160)
    np.testing.assert_allclose(lepton_to_celsius(words), z["key_frame_c"], atol=1e-3)
    coarse = lepton_to_celsius(words // 10, resolution_k=0.1)
    np.testing.assert_allclose(coarse, z["key_frame_c"], atol=0.1)


def test_rotation_makes_faces_upright(shared_data):
    z = np.load(shared_data / FEVER / "testr.npz")
    upright = rotate(z["key_frame_c"], 1)
    np.testing.assert_array_equal(upright, np.rot90(z["key_frame_c"], -1))
    assert upright.shape == (160, 120)


@pytest.mark.parametrize(
    "frame, why",
    [
        (None, "missing"),
        (np.full((120, 160), np.nan, np.float32), "NaN"),
        (np.where(np.eye(120, 160) > 0, np.inf, 30.0).astype(np.float32), "inf"),
        (np.zeros((120, 160), np.float32), "blank"),
        (np.zeros((120, 160, 3), np.float32), "shape"),
        (np.zeros((3, 4), np.float32), "shape"),
        (np.arange(19200, dtype=np.uint16).reshape(120, 160), "floating"),
    ],
)
def test_bad_frames_are_named_and_not_measured(frame, why):
    assert why in frame_problem(frame)
    reading = FaceThermometer(MeasureSettings(), ReferenceTracker("off")).measure(frame)
    assert not reading.ok and why in reading.reason


def test_emissivity_raises_skin_a_little_above_apparent():
    assert emissivity_correct(35.0, 1.0, 25.0) == 35.0
    assert 35.1 < emissivity_correct(35.0, 0.98, 25.0) < 35.3


def test_aggregate_is_median_of_hottest_valid_readings():
    readings = [Reading(t, "ok") for t in (30.0, 36.0, 36.2, 36.4, 45.0)] + [Reading(None, "x")]
    assert aggregate(readings, best=3) == (36.4, 45.0 - 36.2)
    assert aggregate([Reading(None, "no face")]) == (None, None)


@pytest.fixture(scope="module")
def feverscreen():
    """The skin reading with the disc at each device's stored value."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return evaluate_feverscreen(SHARED_DATA / "thermal", body_to_skin_c=0.0)


@pytest.fixture(scope="module")
def body():
    """The daemon's body estimate, the stored value read as the body temperature it is."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return evaluate_feverscreen(SHARED_DATA / "thermal")


def test_reference_disc_is_found_where_it_is(shared_data):
    with open(shared_data / FEVER / "recordings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        z = np.load(shared_data / FEVER / f"{row['name']}.npz")
        r, c = z["ref_disc_center_rc"]
        upright = rotate(z["key_frame_c"], 1)
        disc = find_disc(cv2.medianBlur(upright, 3))
        assert disc is not None, row["name"]
        # rot90 clockwise: sensor (r, c) -> upright (c, H-1-r)
        assert abs(disc.row - c) <= 2 and abs(disc.col - (119 - r)) <= 3, (row["name"], disc)


def test_feverscreen_readings_where_faces_are(feverscreen):
    by_name = {r.name: r for r in feverscreen}
    assert by_name["20210326-091927"].measured_c is None  # the empty scene
    assert by_name["20210326-091927"].disc_found
    with_face = [r for r in feverscreen if "Empty" not in r.tags]
    assert len(with_face) == 16
    assert all(r.measured_c is not None for r in with_face)
    assert all(r.disc_found for r in feverscreen)


def test_feverscreen_skin_mae_regression_bound(feverscreen):
    """The skin reading (0.72 C, see docs/thermal.md); guards the measurement's regressions."""
    assert len([r for r in feverscreen if r.skin_error_c is not None]) == 13
    assert mean_abs_error(feverscreen, skin=True) <= 0.75
    # Without the three TKO8 recordings and the Hat/Long Time one (explained in docs).
    rest = [r for r in feverscreen if r.device != "TKO8" and "Hat" not in r.tags]
    assert mean_abs_error(rest, skin=True) <= 0.5


def test_feverscreen_body_estimate_regression_bound(body):
    """The daemon's body estimate against the kiosk's reports: 0.57 C (docs/thermal.md)."""
    assert len([r for r in body if r.error_c is not None]) == 13
    assert mean_abs_error(body) <= 0.6
    assert mean_abs_error([r for r in body if "Hat" not in r.tags]) <= 0.45
    # The room comes from each recording's own background: an indoor temperature.
    assert all(20.0 <= r.room_c <= 32.0 for r in body if r.room_c is not None)


@pytest.mark.xfail(strict=True, reason="issue target missed: MAE 0.57 C > 0.5 C (docs/thermal.md)")
def test_feverscreen_mae_target(body):
    assert mean_abs_error(body) <= 0.5


def test_tko8_offset_is_one_per_device_constant(feverscreen, body):
    """With the stored value as the disc's temperature TKO8 reads 1.3 C low on all three
    recordings; read as the body temperature it is, the stored value accounts for them."""
    skin = {d.device: d for d in device_offsets(feverscreen, skin=True)}
    assert skin["TKO8"].mean_c <= -1.0 and skin["TKO8"].sd_c <= 0.3
    assert all(abs(d.mean_c) < 0.5 for name, d in skin.items() if name != "TKO8")
    # A per-device calibration (from the device's other recordings) removes most of it.
    assert per_device_calibrated_mae(feverscreen, skin=True) < mean_abs_error(feverscreen, True)
    estimate = {d.device: d for d in device_offsets(body)}
    assert abs(estimate["TKO8"].mean_c) <= 0.3


def test_room_from_the_background_agrees_between_recordings_minutes_apart(body):
    by_name = {r.name: r for r in body}
    # TKO16, three minutes apart; the bonefish kiosk, twenty minutes apart.
    assert abs(by_name["20210325-073124"].room_c - by_name["20210325-073421"].room_c) <= 0.5
    first = by_name["fs-1204-816672-2021-04-01T00_26_03.221Z"]
    second = by_name["fs-1204-816674-2021-04-01T00_46_43.265Z"]
    assert abs(first.room_c - second.room_c) <= 0.5


def test_fda_figures_per_camera(shared_data):
    figures = fda_figures(shared_data / "thermal")
    for camera in ("FLIR", "ICI"):
        f = figures[camera]
        assert f["mae_c"] <= 0.25
        assert f["oral_ge_37.5"]["auc"] >= 0.95 and f["oral_ge_38.0"]["auc"] >= 0.95
        assert f["oral_ge_37.5"]["sensitivity_at_90_specificity"] >= 0.9


def test_flir_hotspot_matches_camera_readout(shared_data):
    rows = {row.readout: row for row in evaluate_flir(shared_data / "thermal")}
    assert abs(rows["face spot"].ours_c - rows["face spot"].camera_c) <= 0.5
    assert abs(rows["image min"].ours_c - rows["image min"].camera_c) <= 0.5
    # The audience photo's "centre" spot pixel is not known; reported, not asserted tightly.
    assert abs(rows["centre spot"].ours_c - rows["centre spot"].camera_c) <= 2.0


def test_flir_face_hotspot_in_single_person_mode(shared_data):
    celsius = np.load(
        shared_data / "thermal/flir_rjpeg/wikimedia_07_BillHotFlashThermography_c.npy"
    )
    settings = replace(MeasureSettings.from_config(ThermalConfig()), emissivity=1.0)
    reading = FaceThermometer(settings, ReferenceTracker("off")).measure(celsius)
    # A close-up face: the hot-spot is the warmest skin, near the frame's own maximum (37.2).
    assert reading.ok and 36.5 <= reading.temperature_c <= 37.3
    assert reading.pixels_used > 1000


def test_speakingfaces_homography_error_is_reported(shared_data):
    result = evaluate_registration(shared_data / "thermal")
    assert result.pairs == 1352
    # One global homography over several board depths cannot reach 2 px (about 9 px median).
    assert 5.0 < result.median_px < 15.0
    # At one depth (the working distance a kiosk calibrates at) it does.
    assert result.inliers >= 100 and result.inlier_median_px <= 2.0


@pytest.mark.xfail(strict=True, reason="target 2 px missed by one global homography: ~9 px")
def test_speakingfaces_global_homography_target(shared_data):
    assert evaluate_registration(shared_data / "thermal").median_px <= 2.0


def test_homography_maps_a_face_box():
    src = np.array([[0, 0], [640, 0], [640, 480], [0, 480], [320, 240]], float)
    dst = src / 4 + [5, 3]
    h = fit_homography(src, dst)
    assert reprojection_errors(h, src, dst).max() < 1e-6
    assert map_box(h, Box(100, 80, 200, 240), 160, 120) == (30, 23, 50, 60)
    assert map_box(h, Box(2000, 2000, 10, 10), 160, 120) is None
    with pytest.raises(ValueError):
        fit_homography(src[:3], dst[:3])


def test_configured_reference_box_agrees_with_the_found_disc(shared_data):
    frames = [rotate(f, 1) for f in load_recording(shared_data / FEVER / "testr.npz")[:20]]
    offsets = {}
    for mode in ("auto", "6,150,6,6"):  # the disc's face, upright: centre (153, 9), r ~5.6
        thermometer = FaceThermometer(MeasureSettings(), ReferenceTracker(mode, 36.6, 0.5))
        readings = [thermometer.measure(f) for f in frames]
        assert all(r.ok for r in readings[3:])
        offsets[mode] = thermometer.reference.offset_c
    # The box reads the disc's flat face; auto reads it out to half height (a little cooler).
    assert 0.0 <= offsets["6,150,6,6"] - offsets["auto"] <= 0.6
