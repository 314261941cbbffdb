"""Home Assistant MQTT discovery: one device per kiosk, its sensors read from the retained
``stats`` topic and marked unavailable while ``status`` is ``offline``. Plain data, no paho."""

from __future__ import annotations

from typing import Any

from kiosk import __version__
from kiosk.config import MqttConfig
from kiosk.labels import AGE_GROUPS
from kiosk.wire import STATUS_OFFLINE, STATUS_ONLINE, safe_id, topics


def discovery_configs(cfg: MqttConfig, device_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) pairs for Home Assistant MQTT discovery, one device, all sensors."""
    t = topics(cfg.prefix, device_id)
    dev = safe_id(device_id)
    device = {
        "identifiers": [f"kiosk_{dev}"],
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
    ]
    out = []
    for s in sensors:
        key = s.pop("key")
        unique_id = safe_id(f"kiosk_{dev}_{key}")
        out.append(
            (
                f"{cfg.discovery_prefix}/sensor/{unique_id}/config",
                {**common, "unique_id": unique_id, **s},
            )
        )
    return out
