"""The payload contract: what is built parses back to the same record, what is hostile is
refused with the key named, and docs/mqtt.md names every key that is sent."""

import dataclasses
import json
import re
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiosk.labels import AGE_GROUPS, GENDERS
from kiosk.wire import (
    MAX_PAYLOAD_BYTES,
    LastVisit,
    PayloadError,
    Sender,
    Stats,
    check_payload,
    encode,
    parse_check,
    parse_event,
    parse_stats,
    parse_visit,
    split_topic,
    stats_payload,
    topics,
    visit_payload,
)
from tests.conftest import ROOT, new_check, new_visit

AT = datetime(2026, 11, 28, 9, 14, 2, 120000, tzinfo=UTC)
SENDER = Sender("Europe/Berlin", "0.1.0")


def sent_fields(visit):
    """What a visit payload carries: every field of the stored record."""
    return {k: getattr(visit, k) for k in visit.__slots__}


@pytest.mark.parametrize("temperature", [False, True])
@pytest.mark.parametrize("synced", [False, True])
def test_visit_round_trip(temperature, synced):
    visit = new_visit(AT, age="60-100", gender="male", clock_synced=synced, temperature_c=36.61)
    back = parse_visit(encode(visit_payload(visit, temperature, SENDER)))
    expected = sent_fields(visit) | {"temperature_c": 36.61 if temperature else None}
    assert sent_fields(back) == expected


@given(
    age=st.sampled_from(AGE_GROUPS),
    gender=st.sampled_from(GENDERS),
    conf=st.floats(0, 1),
    micros=st.integers(0, 999),
)
def test_visit_round_trip_any_labels(age, gender, conf, micros):
    visit = new_visit(AT.replace(microsecond=micros * 1000), age=age, gender=gender,
                      age_confidence=conf, gender_confidence=conf)  # fmt: skip
    back = parse_visit(json.dumps(visit_payload(visit, False, SENDER)).encode())
    assert (back.age_group, back.gender, back.started_at) == (age, gender, visit.started_at)
    assert back.age_confidence == conf  # exactly: the central copy equals the stored one


def test_check_round_trip():
    check = new_check(AT, "unmeasured", temperature_c=None, clock_synced=False)
    assert parse_check(encode(check_payload(check, True, SENDER))) == check
    sent = check_payload(new_check(AT), False, SENDER)
    assert "temperature_c" not in sent and parse_check(encode(sent)).temperature_c is None


def test_events_carry_their_sender():
    visit, check = new_visit(AT), new_check(AT)
    got = parse_event("visit", encode(visit_payload(visit, False, SENDER)))
    assert got.sender == SENDER and got.record == dataclasses.replace(visit, temperature_c=None)
    got = parse_event("check", encode(check_payload(check, True, SENDER)))
    assert (got.record, got.sender) == (check, SENDER)
    sent = check_payload(check, False, SENDER)
    del sent["timezone"]
    with pytest.raises(PayloadError, match="check.timezone: missing"):
        parse_event("check", encode(sent))


def test_stats_round_trip():
    stats = Stats(
        device_id="shop-1",
        date=date(2026, 11, 28),
        timezone="Europe/Berlin",
        visitors=3,
        gender={"female": 1, "male": 2},
        age_groups=dict.fromkeys(AGE_GROUPS, 0) | {"25-32": 3},
        failed_checks=1,
        unmeasured_checks=2,
        last_visit=LastVisit(AT, "25-32", "male"),
        fps=14.91,
        uptime_s=86400,
        updated_at=AT,
        outbox_pending=0,
    )
    assert parse_stats(encode(stats_payload(stats))) == stats


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"age_group": "25-37"}, "visit.age_group"),
        ({"gender": "other"}, "visit.gender"),
        ({"age_confidence": 1.5}, "visit.age_confidence"),
        ({"gender_confidence": True}, "visit.gender_confidence"),
        ({"started_at": "2026-11-28 09:14"}, "visit.started_at"),
        ({"started_at": "2026-W48-6T09:14:02Z"}, "visit.started_at"),  # valid ISO, not ours
        ({"started_at": "20261128T091402Z"}, "visit.started_at"),
        ({"ended_at": "2026-11-28T09:00:00.000Z"}, "visit.ended_at"),
        ({"device_id": "a/b"}, "visit.device_id"),
        ({"id": "x" * 65}, "visit.id"),
        ({"temperature_status": "fail"}, "visit.temperature_status"),
        ({"temperature_c": float("nan")}, "visit.temperature_c"),
        ({"clock_synced": "no"}, "visit.clock_synced"),
        ({"frames": -1}, "visit.frames"),
        ({"frames": 2.5}, "visit.frames"),
        ({"model_version": ""}, "visit.model_version"),
        ({"model_version": "a\x00b"}, "visit.model_version"),
        ({"timezone": "Mars/Olympus"}, "visit.timezone"),
        ({"software_version": None}, "visit.software_version"),
    ],
)
def test_bad_visit_names_the_key(change, key):
    payload = visit_payload(new_visit(AT), True, SENDER) | change
    with pytest.raises(PayloadError, match=re.escape(key)):
        parse_visit(json.dumps(payload))


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{" * 5000, "not valid JSON"),
        (b"[" * 100_000, "longer than"),
        (b"{}", "visit.started_at: missing"),
        (b'{"id": "a"', "not valid JSON"),
    ],
)
def test_hostile_payloads_are_refused(payload, why):
    with pytest.raises(PayloadError, match=why):
        parse_visit(payload)


def test_size_bound_is_on_bytes():
    big = json.dumps(visit_payload(new_visit(AT), False, SENDER) | {"pad": "é" * MAX_PAYLOAD_BYTES})
    with pytest.raises(PayloadError, match="longer than"):
        parse_visit(big)


def test_topics_split_back():
    for kind, topic in topics("shops/berlin", "door-1").items():
        assert split_topic(topic, "shops/berlin") == ("door-1", kind)
    assert split_topic("shops/berlin/door-1/visit/x", "shops/berlin") is None
    assert split_topic("other/door-1/visit", "shops/berlin") is None
    assert split_topic("shops/berlin/door 1/visit", "shops/berlin") is None


def test_docs_name_every_key():
    """docs/mqtt.md shows every key of the visit, check and stats messages (as a `key` or
    "key")."""
    doc = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    named = set(re.findall(r'[`"]([a-z_]+)[`"]', doc))
    visit = visit_payload(new_visit(AT, clock_synced=False), True, SENDER)
    check = check_payload(new_check(AT, clock_synced=False), True, SENDER)
    stats = stats_payload(
        Stats(
            "d",
            date(2026, 1, 1),
            "UTC",
            0,
            {},
            {},
            0,
            0,
            LastVisit(AT, "0-2", "male"),
            None,
            None,
            AT,
            0,
        )  # fmt: skip
    )
    keys = set(visit) | set(check) | set(stats) | set(stats["last_visit"])
    assert keys - named == set()
