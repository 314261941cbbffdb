"""Typed, strictly validated daemon configuration.

Every section is a dataclass; the loader walks the YAML against the type hints so that an
unknown key, a wrong type or an out-of-range value is reported with its full key path
(``camera.fps: must be > 0, got -3``). A bad config exits 78 (EX_CONFIG) so that systemd does
not restart-loop on it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from kiosk.labels import MODEL_NAMES
from kiosk.logsetup import add_secret

EX_CONFIG = 78
T = TypeVar("T")
# thermal.reference as a box: x,y,w,h in thermal pixels, width and height at least 1.
REFERENCE_BOX = re.compile(r"\d+,\d+,[1-9]\d*,[1-9]\d*")
# 17x config.example.yaml with every comment. Pure-Python PyYAML parsed a 1 MB file in 30-50 s
# on a busy 2-core x86 (libyaml in ~1 s); either way well inside systemd's start timeout.
MAX_CONFIG_BYTES = 128_000
# libyaml when PyYAML was built with it (much faster), else the pure-Python safe loader.
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _Loader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader with YAML 1.2 plain scalars: only true/false are booleans (YAML 1.1 read
    `mode: off` as false), `1.0e300` is a number (1.1 wanted `1.0e+300`), and a key given twice
    in one mapping is an error (1.1 let the second silently replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                continue  # unhashable: SafeConstructor reports it
            if key in seen:
                why = f"key {key!r} appears twice"
                raise yaml.constructor.ConstructorError(None, None, why, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in _BASE_LOADER.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, _BOOL_RE, list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+0123456789."))
_LOADER = _Loader


class ConfigDumper(yaml.SafeDumper):
    """Writes YAML that the config loader reads back as written: it quotes the text that
    the loader's YAML 1.2 scalars would read as a number (`1e5`) and leaves `off` plain."""


ConfigDumper.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}
# YAML 1.1 booleans that _Loader reads as text: named in the error for a true/false key.
_YAML11_BOOLS = ("yes", "no", "on", "off", "y", "n")
# The real config nests 3 deep; PyYAML's scanner slows down quadratically with depth and its
# composer recurses, so a 100 kB file of '[' would hang for minutes, then crash.
MAX_CONFIG_DEPTH = 16
# Upper bounds, so that every value that passes validation also works at run time (a day
# count beyond ~2.9 million overflows date arithmetic, a wait beyond ~292 years a timeout).
MAX_RETENTION_DAYS = 36_500
MAX_WAIT_S = 3600.0
MAX_FPS = 1000.0
MAX_PIXELS = 16_384
# Device ids go into MQTT topics, Home Assistant ids and a 64-character database column; ASCII
# only, so that two ids never map to one Home Assistant entity.
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# One address, no display name: no CR/LF (header injection), no spaces, no commas.
EMAIL_ADDRESS = re.compile(r"[^@\s,<>\"]+@[^@\s,<>\"]+")
# MQTT topic levels here are short; a topic may be at most 65,535 bytes in all.
MAX_TOPIC_CHARS = 200


class ConfigError(Exception):
    """A config problem, named by its key path (or the file) and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def opt(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **rules: Any):
    """A dataclass field with validation rules: gt, ge, lt, le, choices, length."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=rules)
    return field(default=default, metadata=rules)


@dataclass
class CameraConfig:
    # "demo", a device index ("0"), "/dev/videoN", a video file, or an rtsp:// / http:// URL
    source: str = "demo"
    width: int = opt(640, gt=0, le=MAX_PIXELS)
    height: int = opt(480, gt=0, le=MAX_PIXELS)
    fps: float = opt(15.0, gt=0, le=MAX_FPS)
    loop: bool = False
    # Replay files at their own frame rate (True) or as fast as the pipeline runs (False).
    realtime: bool = True
    stall_timeout_s: float = opt(5.0, gt=0, le=MAX_WAIT_S)
    reconnect_initial_s: float = opt(0.5, gt=0, le=MAX_WAIT_S)
    reconnect_max_s: float = opt(30.0, gt=0, le=MAX_WAIT_S)


@dataclass
class DetectorConfig:
    scale_factor: float = opt(1.15, gt=1.0, le=2.0)
    min_neighbors: int = opt(5, ge=0, le=100)
    # Smallest face, in full-frame pixels; a kiosk face is large.
    min_size_px: int = opt(60, ge=8, le=MAX_PIXELS)
    # Detection runs on a grey frame shrunk by this factor.
    downscale: float = opt(2.0, ge=1.0, le=8.0)
    # A frame without an upright face is searched again turned by +- this (tilted heads); 0 = off.
    rotate_deg: float = opt(15.0, ge=0.0, le=45.0)
    # Optional [x, y, w, h] region of the frame where faces can appear.
    roi: list[int] | None = opt(None, length=4)
    # Fast path: full-frame detection only when something moves outside tracked people,
    # otherwise only in a window around each tracked face. false = full frame every frame.
    focus: bool = True


@dataclass
class TrackerConfig:
    iou_threshold: float = opt(0.2, gt=0, lt=1)
    # A track needs this many frames with a face to count as a visitor.
    min_frames: int = opt(5, ge=1, le=100_000)
    # A track closes (becomes a visit) once unseen for this long.
    max_gap_s: float = opt(1.0, gt=0, le=MAX_WAIT_S)
    # Crops classified per visit (largest/sharpest first).
    best_crops: int = opt(5, ge=1, le=50)


@dataclass
class ClassifierConfig:
    # Shipped model: accurate (non-commercial training data) or commercial.
    model: str = opt(MODEL_NAMES[0], choices=MODEL_NAMES)
    # Folder with your own models; set, it replaces `model`.
    model_dir: str | None = None
    num_threads: int = opt(1, ge=1, le=16)


@dataclass
class ThermalConfig:
    # lepton | p2pro | mlx90640 | replay
    source: str = opt("replay", choices=("lepton", "p2pro", "mlx90640", "replay"))
    # Device (index or /dev/videoN), I2C bus, or the recording to replay (.npz, .npy, folder).
    device: str = ""
    # Quarter turns clockwise to make faces upright.
    rotate: int = opt(0, ge=0, le=3)
    loop: bool = True
    fps: float = opt(9.0, gt=0, le=MAX_FPS)
    # Lepton TLinear resolution: 0.01 (centi-kelvin) or 0.1 K per count.
    lepton_resolution_k: float = opt(0.01, choices=(0.01, 0.1))
    stall_timeout_s: float = opt(5.0, gt=0, le=MAX_WAIT_S)
    reconnect_initial_s: float = opt(0.5, gt=0, le=MAX_WAIT_S)
    reconnect_max_s: float = opt(30.0, gt=0, le=MAX_WAIT_S)
    # 3x3 visible->thermal homography (row-major nested lists); none means single_person mode.
    homography: list[list[float]] | None = None
    emissivity: float = opt(0.98, gt=0, le=1)
    offset_c: float = opt(0.0, ge=-20, le=20)
    skin_min_c: float = opt(30.0, ge=-50, le=100)
    skin_max_c: float = opt(43.0, ge=-50, le=100)
    min_pixels: int = opt(12, ge=1, le=1_000_000)
    hottest_pixels: int = opt(8, ge=1, le=1_000_000)
    # single_person mode: the warm head blob must cover at least this share of the frame.
    min_face_fraction: float = opt(0.015, gt=0, lt=1)
    # Readings per visit whose median is the visit's temperature (the hottest valid ones).
    best_readings: int = opt(5, ge=1, le=1000)
    # Reference emitter: "auto", "off", or "x,y,w,h" in thermal pixels; known temperature in C.
    reference: str = "auto"
    reference_c: float | None = opt(None, ge=-50, le=100)
    reference_smoothing: float = opt(0.1, gt=0, le=1)
    # The room temperature in C for the body estimate; none reads it from the frame background.
    ambient_c: float | None = opt(None, ge=-30, le=60)


@dataclass
class GateConfig:
    mode: str = opt("off", choices=("off", "thermal", "external"))
    # On the body (oral) estimate: kiosk/thermal/core_model.json's threshold_c, held out on the
    # FDA study at 90 % sensitivity and specificity for oral >= 37.5 (docs/thermal.md).
    threshold_c: float = opt(37.15, gt=30, lt=45)
    unmeasured_passes: bool = False
    # external mode: local HTTP port (0 = off) and/or MQTT topic for pass/fail decisions
    http_host: str = "127.0.0.1"
    http_port: int = opt(0, ge=0, le=65535)
    mqtt_topic: str = ""
    # How far apart a decision and a visit may be to belong together.
    match_window_s: float = opt(5.0, gt=0, le=600)


@dataclass
class StoreConfig:
    # SQLAlchemy URL; empty means sqlite:///<state_dir>/kiosk.db
    url: str = ""
    # 90 days: see config.example.yaml and docs/deploy.md ("Before you put this at a door").
    retention_days: int = opt(90, ge=1, le=MAX_RETENTION_DAYS)


@dataclass
class BrokerConfig:
    """How to reach an MQTT broker: shared by kioskd's ``mqtt`` and kiosk-collect's ``mqtt``."""

    host: str = "127.0.0.1"
    port: int = opt(1883, ge=1, le=65535)
    prefix: str = "kiosk"
    # MQTT carries keep-alive in 16 bits.
    keepalive_s: int = opt(30, ge=5, le=65535)
    username: str = ""
    # Password comes from this environment variable, this file, or the systemd credential
    # "mqtt_password" ($CREDENTIALS_DIRECTORY); never from the YAML itself.
    password_env: str = "KIOSK_MQTT_PASSWORD"
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False
    # Reconnect backoff: the first retry after this, doubling up to reconnect_max_s.
    reconnect_min_s: float = opt(1.0, gt=0, le=MAX_WAIT_S)
    reconnect_max_s: float = opt(30.0, gt=0, le=MAX_WAIT_S)

    def __post_init__(self) -> None:
        for key in self._topic_keys():
            value = getattr(self, key)
            bad = any(c in value for c in "+#\0") or value.strip("/") != value
            if not value or bad or len(value) > MAX_TOPIC_CHARS:
                why = (
                    f"must be a non-empty topic of at most {MAX_TOPIC_CHARS} characters without "
                    "'+', '#', NUL or a leading/trailing '/'"
                )
                raise ConfigError(f"mqtt.{key}", f"{why}, got {value[:80]!r}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError("mqtt.reconnect_max_s", "must be >= mqtt.reconnect_min_s")

    def _topic_keys(self) -> tuple[str, ...]:
        return ("prefix",)


@dataclass
class MqttConfig(BrokerConfig):
    enabled: bool = False
    stats_interval_s: float = opt(60.0, gt=0, le=86400)
    publish_temperature: bool = False
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    outbox_max_age_days: float = opt(30.0, gt=0, le=MAX_RETENTION_DAYS)
    outbox_max_count: int = opt(100_000, ge=1, le=10_000_000)

    def _topic_keys(self) -> tuple[str, ...]:
        return ("prefix", "discovery_prefix")


@dataclass
class ClockConfig:
    # When the wall clock counts as right: "auto" (the kernel's NTP status, else systemd-
    # timesyncd's flag file; a replayed file: always), "always" (a board with a battery RTC),
    # or a file path that exists once time is synchronised. Until then records are flagged,
    # then restamped.
    trust: str = "auto"

    def __post_init__(self) -> None:
        if not self.trust:
            raise ConfigError("clock.trust", "must be auto, always or a file path, got ''")


@dataclass
class MetricsConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = opt(9108, ge=1, le=65535)


@dataclass
class WebConfig:
    enabled: bool = False
    # 127.0.0.1 (this board only) by default; any other address needs the password.
    host: str = "127.0.0.1"
    port: int = opt(8080, ge=1, le=65535)
    # The setup view of the camera (frames in memory only, and only while a page shows it).
    live_view: bool = False
    # Password comes from this environment variable, this file, or the systemd credential
    # "web_password" ($CREDENTIALS_DIRECTORY); never from the YAML itself.
    password_env: str = "KIOSK_WEB_PASSWORD"
    password_file: str = ""

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError("web.host", f"must be an address to listen on, got {self.host!r}")


@dataclass
class EmailConfig:
    # Who gets the nightly report by e-mail; empty = no e-mail.
    to: list[str] = opt(factory=list)
    # The From: address; empty = username.
    sender: str = ""
    smtp_host: str = ""
    smtp_port: int = opt(587, ge=1, le=65535)
    # starttls (port 587), tls (implicit TLS, port 465) or none (a relay on the LAN, port 25).
    security: str = opt("starttls", choices=("starttls", "tls", "none"))
    # CA bundle for a server with a certificate of the store's own; empty = the system's.
    ca_file: str = ""
    username: str = ""
    # Password from this environment variable, this file, or the systemd credential
    # "smtp_password" ($CREDENTIALS_DIRECTORY); never from the YAML itself.
    password_env: str = "KIOSK_SMTP_PASSWORD"
    password_file: str = ""
    timeout_s: float = opt(30.0, gt=0, le=MAX_WAIT_S)

    def __post_init__(self) -> None:
        for i, address in enumerate([*self.to, self.sender]):
            key = f"report.email.to[{i}]" if i < len(self.to) else "report.email.sender"
            if address and (not EMAIL_ADDRESS.fullmatch(address)):
                raise ConfigError(key, f"must be an e-mail address, got {address[:80]!r}")
        if self.to and not self.smtp_host:
            raise ConfigError("report.email.smtp_host", "needed when report.email.to is set")
        if self.to and not (self.sender or "@" in self.username):
            why = "needed when report.email.to is set and username is not an address"
            raise ConfigError("report.email.sender", why)
        if self.username and self.security == "none":
            why = "a password is never sent without TLS: use starttls or tls, or no username"
            raise ConfigError("report.email.security", why)


@dataclass
class ReportConfig:
    # Where `kiosk-report nightly` (the nightly timer) writes the day's CSV and chart: e.g. a
    # share the store mounts (docs/report.md); empty = <state_dir>/reports.
    folder: str = ""
    # Also a PNG bar chart of the day (needs the chart extra, which install.sh installs).
    chart: bool = True
    email: EmailConfig = field(default_factory=EmailConfig)


@dataclass
class Config:
    device_id: str = field(default_factory=socket.gethostname)
    timezone: str = "UTC"
    log_level: str = opt("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    # Where the database lives by default; empty means $STATE_DIRECTORY or ./var
    state_dir: str = ""
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir or os.environ.get("STATE_DIRECTORY", "") or "var")

    @property
    def database_url(self) -> str:
        return self.store.url or f"sqlite:///{self.state_path / 'kiosk.db'}"

    @property
    def report_folder(self) -> Path:
        return Path(self.report.folder) if self.report.folder else self.state_path / "reports"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _check_rules(key: str, value: Any, given: Any, rules: dict[str, Any]) -> None:
    def fail(why: str) -> typing.NoReturn:
        raise ConfigError(key, f"{why}, got {given!r}")

    if value is None:
        return
    if "gt" in rules and not value > rules["gt"]:
        fail(f"must be > {rules['gt']}")
    if "ge" in rules and not value >= rules["ge"]:
        fail(f"must be >= {rules['ge']}")
    if "lt" in rules and not value < rules["lt"]:
        fail(f"must be < {rules['lt']}")
    if "le" in rules and not value <= rules["le"]:
        fail(f"must be <= {rules['le']}")
    if "choices" in rules and value not in rules["choices"]:
        fail("must be one of " + ", ".join(str(c) for c in rules["choices"]))
    if "length" in rules and len(value) != rules["length"]:
        fail(f"must have {rules['length']} items")


def _convert(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(key, args[0], value)
    if dataclasses.is_dataclass(hint):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
        return _build(typing.cast(type, hint), value, key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_convert(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
            raise ConfigError(key, f"must be true or false, got {value!r} (write true or false)")
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(key, f"must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool):
            word = str(value).lower()
            why = f'must be a string, got {word} (quote it if you meant the text: "{word}")'
            raise ConfigError(key, why)
        if not isinstance(value, str | int | float):
            raise ConfigError(key, f"must be a string, got {type(value).__name__}")
        return str(value)
    raise ConfigError(key, f"unsupported type {hint!r}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            raise ConfigError(f"{prefix}{name}", "unknown key")
    values = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        values[name] = _convert(key, hints[name], value)
        _check_rules(key, values[name], value, dict(fields[name].metadata))
    return cls(**values)


def _validate_semantics(cfg: Config) -> None:
    try:
        ZoneInfo(cfg.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("timezone", f"unknown time zone {cfg.timezone!r}") from None
    if not DEVICE_ID.fullmatch(cfg.device_id):
        why = "must be 1 to 64 ASCII letters, digits, '-' or '_'"
        raise ConfigError("device_id", f"{why}, got {cfg.device_id[:80]!r}")
    if cfg.camera.reconnect_max_s < cfg.camera.reconnect_initial_s:
        raise ConfigError("camera.reconnect_max_s", "must be >= camera.reconnect_initial_s")
    h = cfg.thermal.homography
    if h is not None and (len(h) != 3 or any(len(row) != 3 for row in h)):
        raise ConfigError("thermal.homography", "must be a 3x3 matrix (three lists of three)")
    if cfg.thermal.skin_min_c >= cfg.thermal.skin_max_c:
        raise ConfigError("thermal.skin_min_c", "must be below thermal.skin_max_c")
    if cfg.gate.mode == "thermal" and cfg.thermal.source == "replay" and not cfg.thermal.device:
        raise ConfigError("thermal.device", "gate.mode thermal with a replay source needs a path")
    ref = cfg.thermal.reference
    if ref not in ("auto", "off") and not REFERENCE_BOX.fullmatch(ref.replace(" ", "")):
        why = f'must be "auto", "off" or "x,y,w,h" in thermal pixels, got {ref!r}'
        raise ConfigError("thermal.reference", why)
    if cfg.gate.mode == "external" and not cfg.gate.http_port and not cfg.gate.mqtt_topic:
        why = "gate.mode external needs gate.http_port and/or gate.mqtt_topic"
        raise ConfigError("gate.http_port", why)
    if cfg.gate.mqtt_topic and (problem := topic_filter_problem(cfg.gate.mqtt_topic)):
        raise ConfigError("gate.mqtt_topic", f"{problem}, got {cfg.gate.mqtt_topic[:80]!r}")
    roi = cfg.detector.roi
    if roi is not None and not (all(0 <= v <= MAX_PIXELS for v in roi) and roi[2] and roi[3]):
        why = f"must be [x, y, w, h] with 0 <= each <= {MAX_PIXELS} and w, h > 0"
        raise ConfigError("detector.roi", f"{why}, got {roi!r}")


def topic_filter_problem(topic: str) -> str | None:
    """Why `topic` is not a valid MQTT subscription filter, or None."""
    if not topic or len(topic) > MAX_TOPIC_CHARS or "\0" in topic:
        return f"must be 1 to {MAX_TOPIC_CHARS} characters without NUL"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' may only be a whole last level ('a/#')"
        if "+" in level and level != "+":
            return "'+' may only be a whole level ('a/+/b')"
    return None


_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
         yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)  # fmt: skip
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _reject_aliases(text: str, path: Path) -> None:
    """YAML anchors/aliases are never needed here and enable alias bombs; deep nesting is
    refused as soon as the scanner reaches it.

    The pure-Python scanner, even where libyaml is present: libyaml looks ahead and refuses
    deep nesting with a limit and a message of its own (PyYAML 6.0.4: 1000 levels, "exceeded
    maximum nesting depth") before this guard sees a token. It costs ~6 ms on the example."""
    depth = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
            raise ConfigError(str(path), "YAML anchors and aliases are not allowed")
        if isinstance(token, _OPEN):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                why = f"nested deeper than {MAX_CONFIG_DEPTH} levels"
                raise ConfigError(str(path), why)
        elif isinstance(token, _CLOSE):
            depth -= 1


def parse_config(data: Any, source: str = "config") -> Config:
    if data is None:
        raise ConfigError(source, "file is empty")
    if not isinstance(data, dict):
        raise ConfigError(source, f"must be a mapping at the top level, got {type(data).__name__}")
    cfg = _build(Config, data)
    _validate_semantics(cfg)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; every problem is a ConfigError."""
    return parse_config(read_yaml(path), str(path))


def build_section(cls: type[T], data: Any, source: str) -> T:
    """A config dataclass tree (another program's config, e.g. kiosk-collect's) from parsed
    YAML, with the same walker, rules and messages as kioskd's."""
    if data is None:
        raise ConfigError(source, "file is empty")
    if not isinstance(data, dict):
        raise ConfigError(source, f"must be a mapping at the top level, got {type(data).__name__}")
    return _build(cls, data)


def read_yaml(path: str | Path) -> Any:
    """A config file's YAML, bounded in size and depth, without anchors; a ConfigError else."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        why = f"file is too large ({len(raw)} bytes, max {MAX_CONFIG_BYTES})"
        raise ConfigError(str(path), why)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not a UTF-8 text file") from None
    if "\x00" in text:
        raise ConfigError(str(path), "not a text file (contains NUL bytes)")
    try:
        _reject_aliases(text, path)
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        why = f"invalid YAML{where}: {getattr(exc, 'problem', exc)}"
        raise ConfigError(str(path), why) from None
    return data


def read_secret(env_name: str, file_path: str, credential: str, key: str) -> str | None:
    """A secret from the environment, a file, or systemd's $CREDENTIALS_DIRECTORY."""
    if env_name and os.environ.get(env_name):
        add_secret(os.environ[env_name])
        return os.environ[env_name]
    candidates = [Path(file_path)] if file_path else []
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(os.environ["CREDENTIALS_DIRECTORY"]) / credential)
    for candidate in candidates:
        if candidate.is_file():
            secret = candidate.read_text(encoding="utf-8").strip()
            add_secret(secret)
            return secret
    if file_path:
        raise ConfigError(key, f"{file_path}: file not found")
    return None
