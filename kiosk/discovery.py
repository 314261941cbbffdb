"""Home Assistant MQTT discovery: one device per kiosk, its sensors read from the retained
``stats`` topic and marked unavailable while ``status`` is ``offline``; a connectivity sensor
reads ``status`` itself. Plain data, no paho.

Every config names its origin (kiosk) and its device by the identifier ``kiosk_<device id>``,
which is how stale configs are found and removed (:func:`owner`; kiosk/mqtt.py removes this
device's own, `kioskd forget` a device that is gone).
"""

from __future__ import annotations

from typing import Any

from kiosk import __version__
from kiosk.config import MqttConfig
from kiosk.labels import AGE_GROUPS
from kiosk.wire import CAMERA_STATES, STATUS_OFFLINE, STATUS_ONLINE, safe_id, topics

ORIGIN = {"name": "kiosk", "sw_version": __version__}


def device_identifier(device_id: str) -> str:
    return f"kiosk_{safe_id(device_id)}"


def owner(payload: Any) -> str | None:
    """The kiosk device a decoded discovery config belongs to (its identifier), or None for
    anything else (another integration's config, junk)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("device"), dict):
        return None
    ids = payload["device"].get("identifiers")
    ours = [i for i in ids if isinstance(i, str) and i.startswith("kiosk_")] if isinstance(
        ids, list
    ) else []  # fmt: skip
    return ours[0] if len(ours) == 1 else None


def discovery_configs(cfg: MqttConfig, device_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) pairs for Home Assistant MQTT discovery, one device, all sensors."""
    t = topics(cfg.prefix, device_id)
    dev = safe_id(device_id)
    device = {
        "identifiers": [device_identifier(device_id)],
        "name": f"Kiosk {device_id}",
        "manufacturer": "kiosk",
        "model": "Store entrance visitor counter",
        "sw_version": __version__,
    }
    common = {
        "state_topic": t["stats"],
        "availability_topic": t["status"],
        "payload_available": STATUS_ONLINE,
        "payload_not_available": STATUS_OFFLINE,
        "device": device,
        "origin": ORIGIN,
        "has_entity_name": True,
    }
    count = {"state_class": "total_increasing", "unit_of_measurement": "visitors"}
    sensors: list[dict[str, Any]] = [
        {
            "key": "visitors_today",
            "name": "Visitors today",
            "value_template": "{{ value_json.visitors }}",
            "icon": "mdi:account-group",
            **count,
        },
        {
            "key": "female_today",
            "name": "Female today",
            "value_template": "{{ value_json.gender.female }}",
            "icon": "mdi:human-female",
            **count,
        },
        {
            "key": "male_today",
            "name": "Male today",
            "value_template": "{{ value_json.gender.male }}",
            "icon": "mdi:human-male",
            **count,
        },
    ]
    for group in AGE_GROUPS:
        sensors.append(
            {
                "key": f"age_{group}_today",
                "name": f"Age {group} today",
                "value_template": f"{{{{ value_json.age_groups['{group}'] }}}}",
                "icon": "mdi:account-clock",
                **count,
            }
        )
    sensors += [
        {
            "key": "failed_checks_today",
            "name": "Failed checks today",
            "value_template": "{{ value_json.failed_checks }}",
            "icon": "mdi:thermometer-alert",
            "state_class": "total_increasing",
            "unit_of_measurement": "checks",
        },
        {
            "key": "unmeasured_checks_today",
            "name": "Unmeasured checks today",
            "value_template": "{{ value_json.unmeasured_checks }}",
            "icon": "mdi:thermometer-off",
            "state_class": "total_increasing",
            "unit_of_measurement": "checks",
        },
        {
            "key": "last_visit",
            "name": "Last visit",
            "value_template": (
                "{% if value_json.last_visit %}{{ value_json.last_visit.age_group }} "
                "{{ value_json.last_visit.gender }}{% else %}none{% endif %}"
            ),
            "json_attributes_topic": t["stats"],
            "json_attributes_template": "{{ (value_json.last_visit or {}) | tojson }}",
            "icon": "mdi:account-arrow-right",
        },
        {
            "key": "last_visit_at",
            "name": "Last visit at",
            "device_class": "timestamp",
            "value_template": ("{{ value_json.last_visit.at if value_json.last_visit else None }}"),
        },
        {
            "key": "fps",
            "name": "Frame rate",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "value_template": "{{ value_json.fps }}",
            "icon": "mdi:speedometer",
        },
        {
            "key": "camera",
            "name": "Camera",
            "device_class": "enum",
            "options": list(CAMERA_STATES),
            "entity_category": "diagnostic",
            "value_template": "{{ value_json.camera }}",
            "icon": "mdi:cctv",
        },
        {
            "component": "binary_sensor",
            "key": "clock",
            "name": "Clock",
            "device_class": "problem",  # on: not synchronised, visits are stamped flagged
            "entity_category": "diagnostic",
            "value_template": "{{ 'OFF' if value_json.clock_synced else 'ON' }}",
        },
        {
            # Reads `status` itself and has no availability: it shows "disconnected" while
            # the broker holds kioskd's last will, where the others show "unavailable".
            "component": "binary_sensor",
            "key": "mqtt",
            "name": "MQTT",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": t["status"],
            "payload_on": STATUS_ONLINE,
            "payload_off": STATUS_OFFLINE,
            "availability_topic": None,
        },
    ]
    out = []
    for s in sensors:
        component = s.pop("component", "sensor")
        key = s.pop("key")
        unique_id = safe_id(f"kiosk_{dev}_{key}")
        config = {k: v for k, v in {**common, "unique_id": unique_id, **s}.items() if v is not None}
        if config.get("availability_topic") is None:
            config.pop("payload_available", None)
            config.pop("payload_not_available", None)
        out.append((f"{cfg.discovery_prefix}/{component}/{unique_id}/config", config))
    return out
