"""`kioskd setup` writes the config for one door; `kioskd cameras` lists what it can use.

setup asks (on a terminal) or takes flags, and writes only what differs between doors: a
device id unique to this board and camera (MQTT topics and Home Assistant ids are built from
it, so two doors must never share one), the system's time zone, the camera, the model a store
may run, and the thermal camera when one is chosen. Every other key keeps its documented
default (config.example.yaml). The file written is loaded back through the config
validator before setup reports success.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kiosk.cameras import Camera, Grab, I2cThermal, find_i2c_thermal, grab_faces, list_cameras
from kiosk.config import EX_CONFIG, ConfigError, DetectorConfig, load_config

EXIT_OK, EXIT_FAIL = 0, 1
# The shipped models read a 64 px face; a smaller one is enlarged and loses detail.
MODEL_INPUT_PX = 64
THERMAL_KINDS = ("lepton", "p2pro", "mlx90640")
_ID_BAD = re.compile(r"[^a-z0-9]+")


def system_timezone(root: Path = Path("/")) -> str | None:
    """The IANA name of the OS time zone (/etc/localtime's link target, else /etc/timezone)."""
    localtime = root / "etc" / "localtime"
    candidates = []
    if localtime.is_symlink():
        target = os.readlink(localtime)
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    timezone = root / "etc" / "timezone"
    if timezone.is_file():
        candidates.append(timezone.read_text().strip())
    for name in candidates:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return None


def _slug(text: str, limit: int) -> str:
    return _ID_BAD.sub("-", text.lower()).strip("-")[:limit].strip("-") or "x"


def machine_id(root: Path = Path("/")) -> str:
    """/etc/machine-id (unique per OS install, also on cloned SD cards once regenerated)."""
    for path in (root / "etc" / "machine-id", root / "var" / "lib" / "dbus" / "machine-id"):
        if path.is_file() and (text := path.read_text().strip()):
            return text
    return socket.gethostname()


def make_device_id(host: str, camera: str, machine: str) -> str:
    """`<host>-<camera>-<4 hex>`: readable, and unique even where every Pi is called
    raspberrypi (the hash covers the machine id and the camera's stable name)."""
    digest = hashlib.sha256(f"{machine}\0{camera}".encode()).hexdigest()[:4]
    short = camera.rsplit("/", 1)[-1].replace("-video-index0", "")
    return f"{_slug(host.split('.')[0], 30)}-{_slug(short, 24)}-{digest}"


def describe(camera: Camera) -> list[str]:
    """Lines for `kioskd cameras`: the node, its stable name, formats and sizes."""
    kind = f"  [thermal: {camera.thermal}]" if camera.thermal else ""
    usb = f" usb {camera.usb_id[0]}:{camera.usb_id[1]}" if camera.usb_id else ""
    bus = f" ({camera.bus})" if camera.bus else ""
    lines = [f"{camera.device}  {camera.name}{bus}{usb}{kind}"]
    if camera.stable_path:
        lines.append(f"    stable name: {camera.stable_path}")
    if camera.problem:
        lines.append(f"    {camera.problem}")
    for f in camera.formats:
        sizes = ", ".join(f"{w}x{h}" + (f"@{fps:g}" if fps else "") for w, h, fps in f.sizes)
        lines.append(f"    {f.fourcc.strip():4} {f.description}: {sizes or 'no sizes listed'}")
    return lines


def describe_grab(grab: Grab, min_size_px: int) -> list[str]:
    if grab.problem:
        return [f"test grab {grab.source}: {grab.problem}"]
    w, h = grab.size or (0, 0)
    lines = [
        f"test grab {grab.source}: {grab.frames} frames in {grab.seconds:.1f} s "
        f"({grab.fps:.1f} fps{'' if grab.live else ', a file read as fast as it decodes'}) "
        f"at {w}x{h}; a face in {grab.frames_with_face} of them"
    ]
    if not grab.face_widths_px:
        lines.append(
            "    no face found: stand where visitors stand, facing the camera, and try again"
        )
        return lines
    widest = max(grab.face_widths_px)
    median = sorted(grab.face_widths_px)[len(grab.face_widths_px) // 2]
    verdict = (
        "good"
        if median >= MODEL_INPUT_PX
        else f"small: the models read {MODEL_INPUT_PX} px; move the camera closer or zoom in"
    )
    lines.append(
        f"    face width: median {median} px, widest {widest} px ({median / w:.0%} of the frame"
        f" width; detector.min_size_px {min_size_px}): {verdict}"
    )
    return lines


def cameras_main(args: argparse.Namespace) -> int:
    cameras = list_cameras()
    for camera in cameras:
        print("\n".join(describe(camera)))
    for i2c in find_i2c_thermal():
        print(f"{i2c.bus}  a device answers at 0x{i2c.address:02x}  [thermal: mlx90640?]")
    if not cameras:
        print("no V4L2 capture device found (a Pi CSI camera needs the bridge in docs/deploy.md)")
    if args.grab:
        print("\n".join(describe_grab(_grab(args.grab, args), args.min_size_px)))
    return EXIT_OK


def _grab(source: str, args: argparse.Namespace) -> Grab:
    return grab_faces(source, args.width, args.height, args.fps, args.seconds, args.min_size_px)


def _ask(prompt: str, default: str) -> str:
    answer = input(f"{prompt} [{default}]: ").strip()
    return answer or default


def choose_camera(args: argparse.Namespace, cameras: list[Camera], interactive: bool) -> str:
    visible = [c for c in cameras if not c.thermal]
    if args.camera != "auto":
        return args.camera
    if interactive and visible:
        for n, camera in enumerate(visible, 1):
            print(f"{n}) " + "\n   ".join(describe(camera)))
        pick = _ask("camera number, or a path / URL", "1")
        return visible[int(pick) - 1].source if pick.isdigit() else pick
    if visible:
        return visible[0].source
    print(
        "kioskd setup: no camera found; camera.source is /dev/video0: set it when the camera is "
        "connected (kioskd cameras lists them)",
        file=sys.stderr,
    )
    return "/dev/video0"


def choose_thermal(
    args: argparse.Namespace, cameras: list[Camera], i2c: list[I2cThermal], interactive: bool
) -> tuple[str, str] | None:
    """(kind, device) of the thermal camera to use, or None: temperatures are health data,
    so screening is on only when asked for (a flag, or yes at the prompt)."""
    found = [(c.thermal, c.source) for c in cameras if c.thermal]
    found += [("mlx90640", bus.bus.removeprefix("/dev/i2c-")) for bus in i2c]
    if args.thermal == "none":
        return None
    if args.thermal != "auto":
        kind, _, device = args.thermal.partition(":")
        return kind, device
    if interactive and found:
        kind, device = found[0]
        answer = _ask(f"use the {kind} thermal camera at {device} for the temperature check?", "no")
        return (kind, device) if answer.lower().startswith("y") else None
    if found:
        kind, device = found[0]
        print(f"kioskd setup: found a {kind} thermal camera at {device}; it stays off "
              f"(--thermal {kind}:{device} turns the temperature check on)")  # fmt: skip
    return None


def render_config(
    device_id: str, timezone: str, source: str, model: str, thermal: tuple[str, str] | None,
    size: tuple[int, int, float],
) -> str:  # fmt: skip
    """The YAML text; strings are JSON-quoted (a JSON string is a YAML double-quoted one)."""
    width, height, fps = size
    q = json.dumps
    lines = [
        f"# kiosk config for one door, written by `kioskd setup` on "
        f"{datetime.now(UTC).isoformat(timespec='minutes')}.",
        "# Keys not here keep their defaults; every key is explained in config.example.yaml",
        "# (installed as /opt/kiosk/share/kiosk/config.example.yaml).",
        "# After an edit: kioskd --check-config --config THIS_FILE; systemctl reload kiosk",
        "",
        "# Unique to this board and camera: MQTT topics and Home Assistant ids are built from it.",
        f"device_id: {q(device_id)}",
        "# Reports count local days and hours in this zone.",
        f"timezone: {q(timezone)}",
        "camera:",
        f"  source: {q(source)}",
        f"  width: {width}",
        f"  height: {height}",
        f"  fps: {fps:g}",
        "classifier:",
        "  # commercial: its weights and training data allow use in a store; accurate is",
        '  # trained on non-commercial research data (README, "Which model a store should run").',
        f"  model: {model}",
    ]
    if thermal:
        kind, device = thermal
        lines += [
            '# Temperatures are health data: see docs/deploy.md, "Before you put this at a door".',
            "gate:",
            "  mode: thermal",
            "thermal:",
            f"  source: {kind}",
            f"  device: {q(device)}",
        ]
    return "\n".join(lines) + "\n"


def setup_main(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and not args.yes
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"kioskd setup: {out} exists; --force replaces it", file=sys.stderr)
        return EXIT_FAIL
    cameras = list_cameras()
    source = choose_camera(args, cameras, interactive)
    if args.grab:
        print("\n".join(describe_grab(_grab(source, args), args.min_size_px)))
    timezone = args.timezone if args.timezone != "auto" else system_timezone()
    if timezone is None:
        why = "the system has no time zone set; using UTC (--timezone Europe/Berlin, or set it)"
        print(f"kioskd setup: {why}", file=sys.stderr)
        timezone = "UTC"
    device_id = args.device_id
    if device_id == "auto":
        device_id = make_device_id(socket.gethostname(), source, machine_id())
        if interactive:
            device_id = _ask("device id (unique per door)", device_id)
    thermal = choose_thermal(args, cameras, find_i2c_thermal(), interactive)
    text = render_config(device_id, timezone, source, args.model, thermal,
                         (args.width, args.height, args.fps))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.setup")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_config(tmp)
    except ConfigError as exc:
        tmp.unlink()
        print(f"kioskd setup: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    tmp.replace(out)
    thermal_text = f"{thermal[0]} at {thermal[1]}" if thermal else "off"
    print(f"kioskd setup: wrote {out}: device {device_id}, camera {source}, time zone {timezone}, "
          f"model {args.model}, temperature check {thermal_text}")  # fmt: skip
    return EXIT_OK


def thermal_choice(text: str) -> str:
    kind, sep, device = text.partition(":")
    if text in ("none", "auto") or (sep and kind in THERMAL_KINDS and device):
        return text
    raise argparse.ArgumentTypeError(f"expected none, auto or KIND:DEVICE, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    grab = argparse.ArgumentParser(add_help=False)
    g = grab.add_argument_group("test grab")
    g.add_argument("--width", type=int, default=640)
    g.add_argument("--height", type=int, default=480)
    g.add_argument("--fps", type=float, default=15.0)
    g.add_argument("--seconds", type=float, default=3.0, help="how long to grab (default 3)")
    g.add_argument("--min-size-px", type=int, default=DetectorConfig().min_size_px)
    p = argparse.ArgumentParser(prog="kioskd", description="set up kioskd for one door")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("cameras", parents=[grab], help="list cameras; --grab tries one")
    c.add_argument("--grab", metavar="SOURCE", help="grab from it and measure the faces")
    s = sub.add_parser("setup", parents=[grab], help="write the config for this door")
    s.add_argument("--out", default="/etc/kiosk/config.yaml", help="(default %(default)s)")
    s.add_argument("--camera", default="auto", help="device, file or URL (default: the first)")
    s.add_argument("--device-id", default="auto", help="default: <host>-<camera>-<hash>")
    s.add_argument("--timezone", default="auto", help="IANA name (default: the system's)")
    s.add_argument("--model", choices=("commercial", "accurate"), default="commercial")
    kinds = ", ".join(THERMAL_KINDS)
    s.add_argument(
        "--thermal",
        default="auto",
        type=thermal_choice,
        metavar="none|auto|KIND:DEVICE",
        help=f"KIND: {kinds} (default: off; a camera found is named)",
    )
    s.add_argument("--grab", action="store_true", help="test-grab the chosen camera first")
    s.add_argument("--yes", action="store_true", help="ask nothing (also when not on a terminal)")
    s.add_argument("--force", action="store_true", help="replace an existing file")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "cameras":
        return cameras_main(args)
    return setup_main(args)
