"""From a received MQTT message to a row or a dead letter: the topic and the payload are
checked against the contract (kiosk/wire.py); anything else is kept as a dead letter with
what was wrong, never raised."""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.centraldb.write import DeadLetter
from kiosk.wire import Event, PayloadError, parse_event, split_topic

# What of a hostile topic or error text is kept (the schema's column and a log line).
MAX_TOPIC_KEPT = 256
MAX_ERROR_KEPT = 500


@dataclass(frozen=True, slots=True)
class Message:
    """One received QoS 1 message, as the network thread handed it over."""

    generation: int  # which connection it came on: only that one may acknowledge it
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_s: float  # time.monotonic()


def classify(msg: Message, prefix: str) -> Event | DeadLetter:
    """The message's event, or the dead letter that says why it is none."""
    where = split_topic(msg.topic, prefix)
    if where is None or where[1] not in ("visit", "check"):
        return _dead(msg, "topic", f"not a kiosk visit or check topic under {prefix}/")
    device_id, kind = where
    try:
        event = parse_event(kind, msg.payload)
    except PayloadError as exc:
        return _dead(msg, str(exc).split(": ", 1)[0], str(exc))
    if event.record.device_id != device_id:
        why = f"{event.record.device_id!r} is not the topic's device {device_id!r}"
        return _dead(msg, f"{kind}.device_id", why)
    return event


def _dead(msg: Message, kind: str, error: str) -> DeadLetter:
    clean = error.replace("\0", "\\0")[:MAX_ERROR_KEPT]
    topic = msg.topic.replace("\0", "\\0")[:MAX_TOPIC_KEPT]
    return DeadLetter(topic=topic, kind=kind[:64], error=clean, payload=msg.payload)
