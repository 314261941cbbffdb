"""Property-based tests (hypothesis) for the config loader, the tracker and the gate."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kiosk.config import Config, ConfigDumper, ConfigError, load_config, parse_config
from kiosk.counters import Counters
from kiosk.detect import Box
from kiosk.gate import verdict
from kiosk.gate.external import ExternalGate, parse_decision
from kiosk.thermal.measure import FaceThermometer, MeasureSettings, ReferenceTracker, aggregate
from kiosk.track import Tracker
from tests.conftest import config_key_paths

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FS = settings(
    max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- config loader ---------------------------------------------------------------------------


KEYS = sorted(config_key_paths(Config))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def config_docs(draw):
    """Mostly real key paths with random values, plus the odd unknown key."""
    doc: dict = {}
    for path in draw(st.lists(st.sampled_from(KEYS), max_size=8)):
        *sections, leaf = path.split(".")
        node = doc
        for s in sections:
            node = node.setdefault(s, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = draw(values)
    if draw(st.booleans()):
        doc[draw(st.text(min_size=1, max_size=8))] = draw(values)
    return doc


@FS
@given(config_docs())
def test_any_config_document_loads_or_names_its_key(doc):
    try:
        cfg = parse_config(doc)
    except ConfigError as exc:
        assert str(exc).startswith(f"{exc.key}: ")
        known = {*KEYS, *doc, "config"}
        path = exc.key.split("[")[0]  # list items: camera.roi[2]
        named = exc.key in known or path in known  # an unknown key may itself hold a '['
        assert named or any(path.startswith(f"{k}.") for k in doc), exc.key
        return
    assert isinstance(cfg, Config)
    for key in ("fps", "width", "height"):
        assert getattr(cfg.camera, key) > 0


@FS
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode)))
def test_any_file_content_loads_or_fails_with_config_error(tmp_path, content):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    t0 = time.monotonic()
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.key
    assert time.monotonic() - t0 < 2.0


@FS
@given(config_docs())
def test_yaml_round_trip_of_a_document_agrees_with_parse_config(tmp_path, doc):
    try:
        text = yaml.dump(doc, Dumper=ConfigDumper, sort_keys=False)
    except yaml.YAMLError:
        return
    path = tmp_path / "config.yaml"
    path.write_text(text)
    direct = _outcome(lambda: parse_config(doc, str(path)))
    loaded = _outcome(lambda: load_config(path))
    assert direct == loaded


def _outcome(fn):
    try:
        return ("ok", repr(fn()))
    except ConfigError as exc:
        return ("error", exc.key.replace("config", ""), exc.reason)


# -- tracker ---------------------------------------------------------------------------------

box_lists = st.lists(
    st.builds(
        Box,
        st.integers(-50, 640),
        st.integers(-50, 480),
        st.integers(20, 300),
        st.integers(20, 300),
    ),
    max_size=3,
)


def _track_run(frames, gaps, walls):
    tracker = Tracker(min_frames=2, max_gap_s=1.0)
    t, ended = 0.0, []
    for boxes, gap, wall in zip(frames, gaps, walls, strict=True):
        u = tracker.update(boxes, t, wall)
        ended += u.closed + u.discarded
        t += gap
    ended += tracker.close_all().closed
    return [(tr.id, tr.frames, tr.first_mono, tr.last_mono) for tr in ended]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_wall_clock_steps_never_change_the_tracks(data):
    frames = data.draw(st.lists(box_lists, min_size=1, max_size=60))
    n = len(frames)
    gaps = data.draw(st.lists(st.sampled_from([1 / 15, 0.2, 0.9, 1.5]), min_size=n, max_size=n))
    steady = [T0 + timedelta(seconds=i / 15) for i in range(n)]
    steps = data.draw(
        st.lists(st.integers(-10 * 86400, 10 * 86400), min_size=n, max_size=n)
    )  # each frame's wall clock off by up to 10 days either way
    jumpy = [w + timedelta(seconds=s) for w, s in zip(steady, steps, strict=True)]
    assert _track_run(frames, gaps, steady) == _track_run(frames, gaps, jumpy)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([1 / 15, 0.5, 0.99, 1.01, 3.0]), min_size=1, max_size=80))
def test_one_still_face_splits_exactly_at_gaps_over_max_gap(gaps):
    tracker = Tracker(min_frames=1, max_gap_s=1.0)
    box = Box(300, 200, 120, 120)
    t, ended = 0.0, []
    for gap in gaps:
        ended += tracker.update([box], t, T0).closed
        t += gap
    ended += tracker.close_all().closed
    assert len(ended) == 1 + sum(g > 1.0 for g in gaps[:-1])
    assert sum(tr.frames for tr in ended) == len(gaps)


# -- gate ------------------------------------------------------------------------------------


@given(st.floats(allow_nan=False), st.floats(30.5, 44.5), st.booleans())
def test_verdict_fails_exactly_at_or_above_the_threshold(temperature, threshold, unmeasured):
    result = verdict(temperature, threshold, unmeasured)
    assert result.temperature_c == temperature
    assert (result.status == "fail") == (temperature >= threshold)
    assert result.record == (result.status == "pass")
    none = verdict(None, threshold, unmeasured)
    assert none.status == "unmeasured" and none.record == unmeasured


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_decision_body_parses_or_raises_value_error(body):
    try:
        d = parse_decision(body, 100.0, T0)
    except ValueError:
        return
    assert d.status in ("pass", "fail")
    assert d.temperature_c is None or math.isfinite(d.temperature_c)


decisions = st.lists(
    st.tuples(st.sampled_from(["pass", "fail"]), st.floats(0, 120), st.floats(34, 40)),
    max_size=12,
)
spans = st.lists(st.tuples(st.floats(0, 120), st.floats(0, 30)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(decisions, spans, st.booleans())
def test_external_gate_uses_each_decision_once_and_only_near_its_visit(ds, visits, unmeasured):
    gate = ExternalGate(Counters(), match_window_s=5.0, unmeasured_passes=unmeasured)
    now_wall = datetime.now(UTC)
    now_mono = time.monotonic()
    for status, ago, temp in ds:
        at = (now_wall - timedelta(seconds=ago)).isoformat()
        gate.submit(json.dumps({"status": status, "temperature_c": temp, "at": at}).encode())
    judged = 0
    for start_ago, length in visits:
        started = now_mono - start_ago
        result = gate.decide(1, started, started + length)
        if result.status in ("pass", "fail"):
            judged += 1
            assert result.temperature_c is not None
            assert result.record == (result.status == "pass")
        else:
            assert result.status == "unmeasured" and result.record == unmeasured
    assert judged <= len(ds)
    assert judged + len(gate._decisions) == len(ds)


thermal_frames = hnp.arrays(
    np.float32,
    st.tuples(st.integers(0, 40), st.integers(0, 40)),
    elements=st.floats(-300, 400, width=32) | st.sampled_from([np.nan, np.inf, -np.inf]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(thermal_frames, min_size=1, max_size=6), st.floats(30.5, 44.5))
def test_any_thermal_frame_gives_a_reading_or_a_reason_never_an_error(frames, threshold):
    thermometer = FaceThermometer(MeasureSettings(), ReferenceTracker("auto", 36.6, 0.1))
    readings = []
    for i, celsius in enumerate(frames):
        reading = thermometer.measure(celsius, None, float(i))
        assert reading.temperature_c is None or math.isfinite(reading.temperature_c)
        if reading.temperature_c is None:
            assert reading.reason
        readings.append(reading)
    temperature, _ = aggregate(readings)
    result = verdict(temperature, threshold, False)
    assert result.status in ("pass", "fail", "unmeasured")
