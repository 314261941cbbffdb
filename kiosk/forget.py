"""`kioskd forget DEVICE_ID --config FILE`: take a door that is gone (renamed, replaced,
retired) off the broker and out of Home Assistant.

Every retained Home Assistant discovery config of that device (found by its device
identifier, ``kiosk_<device id>``) and its retained ``status`` and ``stats`` get an empty
retained payload: the broker drops them, and Home Assistant deletes the entities and then
the device. A running kioskd removes its own stale entities by itself (kiosk/mqtt.py); this
is for a device id that no kioskd uses any more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt

from kiosk.config import EX_CONFIG, ConfigError, MqttConfig, load_config
from kiosk.discovery import device_identifier, owner
from kiosk.mqttclient import check_files, make_client, read_password
from kiosk.wire import topics

# Retained messages arrive right after the subscription; this long without one means all
# have come (the broker sends them back to back).
QUIET_S = 1.0
CONNECT_TIMEOUT_S = 10.0


def find_retained(cfg: MqttConfig, device_id: str, client: mqtt.Client) -> list[str]:
    """Subscribe on a connected client; the topics that hold the device's retained messages."""
    config_filter = f"{cfg.discovery_prefix}/+/+/config"
    own = topics(cfg.prefix, device_id)
    ident = device_identifier(device_id)
    found: list[str] = []
    last = [time.monotonic()]

    def on_message(_client, _userdata, msg: mqtt.MQTTMessage) -> None:
        last[0] = time.monotonic()
        if not msg.retain or not msg.payload:
            return
        if msg.topic in (own["status"], own["stats"]):
            found.append(msg.topic)
        elif mqtt.topic_matches_sub(config_filter, msg.topic):
            try:
                if owner(json.loads(msg.payload)) == ident:
                    found.append(msg.topic)
            except (ValueError, RecursionError):
                pass

    client.on_message = on_message
    client.subscribe([(config_filter, 1), (own["status"], 1), (own["stats"], 1)])
    while time.monotonic() - last[0] < QUIET_S:
        time.sleep(0.05)
    return sorted(set(found))


def forget(cfg: MqttConfig, device_id: str) -> list[str]:
    """Empty every retained message of `device_id`; the topics emptied."""
    check_files(cfg)
    client = make_client(cfg, f"kiosk-forget-{os.getpid()}", read_password(cfg))
    connected = threading.Event()

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
        if not reason_code.is_failure:
            connected.set()

    client.on_connect = on_connect
    client.connect(cfg.host, cfg.port, cfg.keepalive_s)
    client.loop_start()
    try:
        if not connected.wait(CONNECT_TIMEOUT_S):
            raise OSError(f"broker {cfg.host}:{cfg.port} did not accept the connection")
        emptied = find_retained(cfg, device_id, client)
        for topic in emptied:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(CONNECT_TIMEOUT_S)
        return emptied
    finally:
        client.disconnect()
        client.loop_stop()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kioskd forget", description=__doc__.split("\n\n")[0])
    ap.add_argument("device_id", help="the device id that is gone")
    ap.add_argument("--config", required=True, help="a config with the broker (its mqtt section)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"kioskd forget: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.device_id == cfg.device_id:
        print(f"kioskd forget: {args.device_id} is this config's own device id: a kioskd "
              "running with it publishes everything again on its next connect")  # fmt: skip
    try:
        emptied = forget(cfg.mqtt, args.device_id)
    except ConfigError as exc:
        print(f"kioskd forget: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except OSError as exc:
        print(f"kioskd forget: {exc}", file=sys.stderr)
        return 1
    for topic in emptied:
        print(f"removed {topic}")
    print(f"kioskd forget: {len(emptied)} retained messages of {args.device_id} removed")
    return 0
