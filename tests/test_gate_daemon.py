"""kioskd end to end with the thermal gate: a replayed Lepton kiosk recording beside a video.

The same visitor, the same recording: once as recorded (passes, demographics stored), once
read 1.5 C hotter through thermal.offset_c (a fever: a fail check, no demographics). The body
estimate is stored with the skin reading it came from.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest

from kiosk.store import Store
from tests.broker import Broker, Subscriber, needs_mosquitto
from tests.kioskd import run_kioskd, stored_visits, write_config
from tests.test_gate import TESTR_DISC_C
from tools.make_demo import ENTER_S, Appearance, render, write_video

RECORDING = "thermal/feverscreen_lepton35/testr.npz"  # bonefish kiosk, stored value 36.6 C


@pytest.fixture(scope="module")
def visitor_clip(tmp_path_factory):
    """8 s of one person standing in front of the kiosk."""
    path = tmp_path_factory.mktemp("clips") / "visitor.mp4"
    write_video(path, render((Appearance("hopper", -ENTER_S, 60.0, 320, 130),), 8.0))
    return path


def run_with_thermal(tmp_path, clip, recording, mqtt=None, **thermal):
    tmp_path.mkdir()
    cfg = write_config(
        tmp_path,
        camera={"source": str(clip), "realtime": True},
        gate={"mode": "thermal"},
        thermal={
            "source": "replay",
            "device": str(recording),
            "rotate": 1,
            "reference": "auto",
            "reference_c": TESTR_DISC_C,
            **thermal,
        },
        **({"mqtt": mqtt} if mqtt else {}),
    )
    r = run_kioskd(cfg)
    assert r.returncode == 0, r.stderr
    store = Store(f"sqlite:///{tmp_path / 'state' / 'kiosk.db'}", read_only=True)
    try:
        checks = store.check_counts(
            datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        )
    finally:
        store.close()
    return stored_visits(tmp_path), checks, r.stderr


def test_visit_stored_only_when_the_check_passes(tmp_path, shared_data, visitor_clip):
    recording = shared_data / RECORDING
    visits, checks, log = run_with_thermal(tmp_path / "normal", visitor_clip, recording)
    assert len(visits) == 1, log
    assert visits[0].temperature_status == "pass"
    assert 36.0 <= visits[0].temperature_c < 37.5
    assert 34.0 <= visits[0].skin_c < visits[0].temperature_c
    assert checks == {}

    visits, checks, log = run_with_thermal(
        tmp_path / "fever", visitor_clip, recording, offset_c=1.5
    )
    assert visits == [], log
    assert checks == {"fail": 1}
    with sqlite3.connect(tmp_path / "fever" / "state" / "kiosk.db") as conn:
        ((estimate, skin),) = conn.execute("SELECT temperature_c, skin_c FROM checks").fetchall()
    # Under the old 37.5 C skin threshold this visitor would have passed.
    assert skin < 37.5 and estimate >= 37.15


@needs_mosquitto
def test_a_failed_check_is_published_from_the_outbox(tmp_path, shared_data, visitor_clip):
    """The fever run again with MQTT on: the fail check goes out on `check` (QoS 1) with no
    face data and no temperature (not configured), and leaves nothing in the outbox."""
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port, ["kiosk/+/check"]) as sub:
        mqtt = {"enabled": True, "port": broker.port, "discovery": False, "reconnect_min_s": 0.2}
        _, checks, log = run_with_thermal(
            tmp_path / "fever", visitor_clip, shared_data / RECORDING, mqtt=mqtt, offset_c=1.5
        )
        assert checks == {"fail": 1}, log
        assert sub.wait_for(lambda s: len(s.on("kiosk/test-kiosk/check")) == 1, 5), log
    (msg,) = sub.on("kiosk/test-kiosk/check")
    sent = json.loads(msg.payload)
    assert msg.qos == 1 and sent["status"] == "fail" and sent["device_id"] == "test-kiosk"
    assert not {"age_group", "gender", "temperature_c", "skin_c"} & set(sent)
    store = Store(f"sqlite:///{tmp_path / 'fever' / 'state' / 'kiosk.db'}", read_only=True)
    try:
        assert store.outbox_depth() == 0
    finally:
        store.close()
