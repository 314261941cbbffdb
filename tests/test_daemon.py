"""kioskd end to end: real OpenCV decoding, the shipped models, a real SQLite file."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest

from kiosk.classify import SHIPPED_MODELS
from kiosk.frames import demo_video_path
from tests.kioskd import run_kioskd, start_kioskd, stored_visits, write_config
from tools.make_demo import ENTER_S, Appearance, render, write_video


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory):
    """20 s of one person standing in front of the kiosk for the whole clip."""
    path = tmp_path_factory.mktemp("clips") / "still.mp4"
    write_video(path, render((Appearance("hopper", -ENTER_S, 60.0, 320, 130),), 20.0))
    return path


@pytest.fixture(scope="module", params=SHIPPED_MODELS)
def demo_run(tmp_path_factory, request):
    """The bundled demo, played once per shipped model (``classifier.model``): each stored
    visit with the demo visitors on screen."""
    tmp_path = tmp_path_factory.mktemp("demo")
    # clock.trust auto, as in config.example.yaml: a replayed file is not held to the host's
    # NTP state (this container's kernel may say unsynchronised).
    cfg = write_config(tmp_path, classifier={"model": request.param}, clock={"trust": "auto"})
    r = run_kioskd(cfg)
    assert r.returncode == 0, r.stderr
    assert "summary: frames=" in r.stderr
    assert "wall clock not synchronised" not in r.stderr
    # The last line says what to do next, with a command that works as written.
    last = r.stderr.strip().splitlines()[-1]
    assert f"next: kiosk-report daily --config {cfg} --date " in last, last
    assert "web.enabled: true (docs/web.md)" in last, last  # the page, off in this config
    assert "confidence: gender " in r.stderr
    meta = json.loads(demo_video_path().with_suffix(".json").read_text())
    expected = sorted(meta["visitors"], key=lambda v: v["start_s"])
    visits = stored_visits(tmp_path)
    assert all(v.model_version.startswith(f"{request.param}-") for v in visits), visits
    assert all(v.clock_synced for v in visits)
    t0 = visits[0].started_at.timestamp() - expected[0]["start_s"] - ENTER_S if visits else 0
    matched = []
    for visit in visits:
        start = visit.started_at.timestamp() - t0  # clip time
        present = [v for v in expected if v["start_s"] - 1 <= start <= v["end_s"]]
        matched.append((visit, present))
    return expected, matched


def test_demo_stores_one_plausible_visit_per_visitor(demo_run):
    expected, matched = demo_run
    assert len(matched) == len(expected)
    for visit, present in matched:
        assert present, f"visit {visit} matches no demo visitor"
        assert any(visit.age_group in v["age_groups"] for v in present), visit
        assert visit.temperature_status == "off" and visit.temperature_c is None
        assert visit.frames >= 5
    assert len({v.id for v, _ in matched}) == len(matched)


@pytest.mark.parametrize(
    "person",
    [
        "collins",
        pytest.param(
            "hopper",
            marks=pytest.mark.xfail(
                strict=True,
                reason=(
                    "both shipped models read Grace Hopper (a woman over 60 in uniform) as male: "
                    "the known weak band (women 60+: 77-79 % on fold 9), reported in MODEL_CARD.md"
                ),
            ),
        ),
    ],
)
def test_demo_visitor_gender(demo_run, person):
    _, matched = demo_run
    alone = [(v, p[0]) for v, p in matched if len(p) == 1 and p[0]["name"] == person]
    assert alone, f"no visit of {person} alone in the demo"
    for visit, visitor in alone:
        assert visit.gender == visitor["gender"], visit


def test_still_person_is_one_visit_and_restart_keeps_rows(tmp_path, still_clip):
    cfg = write_config(tmp_path, camera={"source": str(still_clip)})
    r = run_kioskd(cfg)
    assert r.returncode == 0, r.stderr
    first = stored_visits(tmp_path)
    assert len(first) == 1
    assert first[0].frames > 250
    r = run_kioskd(cfg)
    assert r.returncode == 0, r.stderr
    both = stored_visits(tmp_path)
    assert len(both) == 2
    assert first[0].id in {v.id for v in both}
    db = tmp_path / "state" / "kiosk.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()


def test_sigterm_during_a_visit_stores_it(tmp_path, still_clip):
    cfg = write_config(tmp_path, camera={"source": str(still_clip), "realtime": True})
    proc = start_kioskd(cfg)
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if "camera" in line and "streaming" in line:
                break
            assert time.monotonic() < deadline
        time.sleep(3.0)  # the visitor has been in view for a while
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out = proc.communicate(timeout=10)[0]
        assert time.monotonic() - t0 < 5.0
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    visits = stored_visits(tmp_path)
    assert len(visits) == 1, out
    assert "received SIGTERM" in out


def test_missing_video_file_exits_78(tmp_path):
    cfg = write_config(tmp_path, camera={"source": str(tmp_path / "nope.mp4")})
    r = run_kioskd(cfg)
    assert r.returncode == 78
    assert "nope.mp4: no such video file" in r.stderr
