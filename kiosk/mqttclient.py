"""The one way kiosk builds a paho client: auth, TLS, last will, the configured reconnect
backoff, and a bound on what the broker may send it. The publisher, the external gate's
listener and ``kiosk-watch`` all connect through here.

paho 2.x (``CallbackAPIVersion.VERSION2``), MQTT 5: the Maximum Packet Size property asks the
broker to drop any message over the bound for this client, so a listener cannot be flooded
with one huge payload.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kiosk.config import BrokerConfig, ConfigError, read_secret
from kiosk.wire import STATUS_OFFLINE

# Messages handed to paho and not yet acknowledged; paho re-sends these after a reconnect.
WINDOW = 100


def read_password(cfg: BrokerConfig) -> str | None:
    """The broker password from ``password_env``, ``password_file`` or the systemd credential
    ``mqtt_password``; a configured file that is missing is a ConfigError."""
    return read_secret(cfg.password_env, cfg.password_file, "mqtt_password", "mqtt.password_file")


def check_files(cfg: BrokerConfig) -> None:
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(cfg, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"mqtt.{key}", f"{value}: file not found")
    if cfg.key_file and not cfg.cert_file:
        raise ConfigError("mqtt.key_file", "needs mqtt.cert_file")


class _PahoNoise(logging.Filter):
    """paho 2.2 logs "Client is not connected" at ERROR on every reconnect attempt while the
    broker is away; the publisher already reports that clearly (and rate-limited)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_paho_log = logging.getLogger("kiosk.mqtt.paho")  # the name the docs and filters know
_paho_log.addFilter(_PahoNoise())


def make_client(
    cfg: BrokerConfig,
    client_id: str,
    password: str | None,
    *,
    will_topic: str | None = None,
    manual_ack: bool = False,
) -> mqtt.Client:
    """An MQTT 5 client with auth, TLS, LWT and reconnect backoff; not yet connected.
    `manual_ack`: a received QoS 1 message is acknowledged only by ``client.ack(mid, qos)``
    (kiosk-collect, after its row is committed)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.enable_logger(_paho_log)
    client.suppress_exceptions = True  # a bug in a callback must not kill the network thread
    if cfg.username:
        client.username_pw_set(cfg.username, password)
    if cfg.tls:
        client.tls_set(
            ca_certs=cfg.ca_file or None,
            certfile=cfg.cert_file or None,
            keyfile=cfg.key_file or None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        if cfg.tls_insecure:
            client.tls_insecure_set(True)
    if will_topic:
        client.will_set(will_topic, STATUS_OFFLINE, qos=1, retain=True)
    client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
    client.max_inflight_messages_set(WINDOW)
    return client


def connect_bounded(
    client: mqtt.Client,
    cfg: BrokerConfig,
    max_packet: int,
    *,
    session_expiry_s: int = 0,
    receive_max: int | None = None,
) -> None:
    """Connect in the background (paho retries with the backoff), asking the broker never to
    send this client a packet over `max_packet` bytes.

    `session_expiry_s` > 0 resumes a persistent session (the broker keeps the subscriptions
    and queues QoS 1 messages while the client is away, for that long); `receive_max` bounds
    the QoS 1 messages the broker has in flight to this client unacknowledged."""
    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = max_packet
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    if receive_max:
        props.ReceiveMaximum = receive_max
    client.connect_async(
        cfg.host, cfg.port, cfg.keepalive_s, clean_start=not session_expiry_s, properties=props
    )
