"""Home Assistant discovery cleanup against a real mosquitto: a running kioskd empties its own
retained configs that it no longer publishes, and `kioskd forget` takes a device id that is
gone off the broker; nobody else's retained messages are touched."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

from kiosk.config import MqttConfig
from kiosk.counters import Counters
from kiosk.discovery import discovery_configs
from kiosk.mqtt import Publisher
from tests.broker import Broker, Subscriber, needs_mosquitto, wait_until
from tests.conftest import ROOT

DEV = "door-a"


def retained(port: int, topic_filter: str = "#") -> dict[str, bytes]:
    """What the broker holds retained, as a fresh subscriber sees it."""
    with Subscriber(port, [topic_filter]) as sub:
        time.sleep(0.5)  # retained messages come right after the subscription
        return {m.topic: bytes(m.payload) for m in sub.messages if m.retain}


def put_retained(port: int, messages: dict[str, str]) -> None:
    with Subscriber(port, ["unused/none"]) as pub:
        for topic, payload in messages.items():
            pub.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)


def ha_config(identifier: str) -> str:
    return json.dumps({"name": "x", "state_topic": "t", "device": {"identifiers": [identifier]}})


@needs_mosquitto
def test_a_running_kioskd_removes_its_own_stale_entities_only(tmp_path, store, caplog):
    caplog.set_level(logging.INFO, "kiosk.mqtt")
    stale = f"homeassistant/sensor/kiosk_{DEV}_visitors_last_week/config"  # an older version's
    others = {
        "homeassistant/sensor/kiosk_door-b_visitors_today/config": ha_config("kiosk_door-b"),
        # a prefix of ours, but another device: must stay
        f"homeassistant/sensor/kiosk_{DEV}_x_fps/config": ha_config(f"kiosk_{DEV}_x"),
        "homeassistant/light/hall/config": ha_config("zigbee_0x1234"),
        "homeassistant/sensor/junk/config": "not json {",
    }
    with Broker(tmp_path) as broker:
        put_retained(broker.port, {stale: ha_config(f"kiosk_{DEV}"), **others})
        cfg = MqttConfig(enabled=True, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5)
        counters = Counters(camera_state="reconnecting", clock_synced=False)
        publisher = Publisher(cfg, DEV, store, ZoneInfo("UTC"), counters).start()
        try:
            own = {topic for topic, _ in discovery_configs(cfg, DEV)}
            assert wait_until(lambda: stale not in retained(broker.port), 10)
            held = retained(broker.port)
            assert own <= set(held)
            assert {t: held[t].decode() for t in others} == others
            stats = json.loads(held[f"kiosk/{DEV}/stats"])
            assert (stats["camera"], stats["clock_synced"]) == ("reconnecting", False)
        finally:
            publisher.close()
    assert f"removed the stale Home Assistant entity {stale}" in caplog.text
    assert caplog.text.count("removed the stale") == 1


@needs_mosquitto
def test_kioskd_forget_takes_a_gone_device_off_the_broker(tmp_path):
    with Broker(tmp_path) as broker:
        cfg = MqttConfig(port=broker.port)
        old = {t: json.dumps(c) for t, c in discovery_configs(cfg, "old-door")}
        old |= {"kiosk/old-door/status": "offline", "kiosk/old-door/stats": '{"visitors": 3}'}
        kept = {t: json.dumps(c) for t, c in discovery_configs(cfg, DEV)}
        kept |= {f"kiosk/{DEV}/status": "online"}
        put_retained(broker.port, old | kept)
        config = tmp_path / "config.yaml"
        config.write_text(f"device_id: {DEV}\nmqtt:\n  port: {broker.port}\n")

        r = subprocess.run(
            [sys.executable, "-m", "kiosk.service", "forget", "old-door", "--config", str(config)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"{len(old)} retained messages of old-door removed" in r.stdout
        held = retained(broker.port)
        assert not set(old) & set(held)
        assert {t: held[t].decode() for t in kept} == kept

        again = subprocess.run(
            [sys.executable, "-m", "kiosk.service", "forget", "old-door", "--config", str(config)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert again.returncode == 0 and "0 retained messages" in again.stdout
