"""kiosk-watch: live visits, status and today's statistics from the broker, in a terminal.

    kiosk-watch --config /etc/kiosk/config.yaml      # broker, auth and TLS from the config
    kiosk-watch --host 192.168.1.10 --device shop-1  # or on the command line
    kiosk-watch --json                               # raw messages, one JSON object a line

It only subscribes (``<prefix>/<device>/status``, ``.../visit``, ``.../stats``); retained
status and stats are shown at once, then each visit as it arrives.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from kiosk.config import EX_CONFIG, ConfigError, MqttConfig, load_config
from kiosk.mqttclient import make_client, read_password
from kiosk.wire import topics


def _local(iso: str | None, tz: ZoneInfo | None) -> str:
    if not iso:
        return "-"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return t.astimezone(tz).strftime("%H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, _ = divmod(s, 60)
    return f"{d}d{h}h" if d else f"{h}h{m:02d}m"


def format_message(topic: str, payload: bytes, tz: ZoneInfo | None) -> str:
    """One human line for a kiosk message."""
    parts = topic.split("/")
    device, kind = (parts[-2], parts[-1]) if len(parts) >= 3 else ("?", topic)
    now = datetime.now(tz).strftime("%H:%M:%S")
    text = payload.decode("utf-8", "replace")
    if kind == "status":
        return f"{now} {device} {text}"
    try:
        data = json.loads(text)
    except ValueError:
        return f"{now} {device} {kind}: {text}"
    if kind == "visit":
        temp = data.get("temperature_status", "?")
        if data.get("temperature_c") is not None:
            temp += f" {data['temperature_c']:.1f} C"
        return (
            f"{_local(data.get('ended_at'), tz)} {device} visit: {data.get('gender')} "
            f"{data.get('age_group')} ({data.get('gender_confidence', 0) * 100:.0f}% / "
            f"{data.get('age_confidence', 0) * 100:.0f}%), temperature {temp}"
        )
    if kind == "check":
        return f"{_local(data.get('at'), tz)} {device} check: {data.get('status')}"
    if kind == "stats":
        g = data.get("gender", {})
        ages = " ".join(f"{k}:{v}" for k, v in data.get("age_groups", {}).items())
        last = data.get("last_visit") or {}
        last_s = (
            f"{last.get('gender')} {last.get('age_group')} at {_local(last.get('at'), tz)}"
            if last
            else "none"
        )
        fps = data.get("fps")
        return (
            f"{now} {device} today ({data.get('date')}): {data.get('visitors')} visitors "
            f"({g.get('female', 0)} female, {g.get('male', 0)} male) | {ages} | "
            f"failed checks {data.get('failed_checks')}, unmeasured "
            f"{data.get('unmeasured_checks')} | last visit {last_s} | "
            f"{'-' if fps is None else f'{fps:.1f}'} fps, up {_duration(data.get('uptime_s'))}"
        )
    return f"{now} {device} {kind}: {text}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="kiosk-watch", description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", help="kioskd YAML config: broker, auth, TLS, prefix, tz")
    ap.add_argument("--host", help="broker host (default 127.0.0.1)")
    ap.add_argument("--port", type=int, help="broker port (default 1883)")
    ap.add_argument("--prefix", help="topic prefix (default kiosk)")
    ap.add_argument("--device", default=None, help="device id, or + for all (default: all)")
    ap.add_argument("--username", help="broker user; the password comes from the environment "
                    "variable named by --password-env or from --password-file")  # fmt: skip
    ap.add_argument("--password-env", help="environment variable with the password")
    ap.add_argument("--password-file", help="file with the password")
    ap.add_argument("--tls", action="store_true", help="connect over TLS")
    ap.add_argument("--ca-file", help="CA certificate for TLS")
    ap.add_argument("--timezone", help="show times in this zone (default: config or local)")
    ap.add_argument("--json", action="store_true", help="print raw topic and payload")
    ap.add_argument("--count", type=int, help="exit after this many visit messages")
    ap.add_argument("--timeout", type=float, help="exit after this many seconds")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tz: ZoneInfo | None = None
    device = args.device or "+"
    try:
        if args.config:
            full = load_config(args.config)
            cfg = full.mqtt
            tz = full.tz
            device = args.device or full.device_id
        else:
            cfg = MqttConfig()
        overrides = {
            k: v
            for k, v in {
                "host": args.host,
                "port": args.port,
                "prefix": args.prefix,
                "username": args.username,
                "password_env": args.password_env,
                "password_file": args.password_file,
                "ca_file": args.ca_file,
            }.items()
            if v is not None
        }
        if args.tls:
            overrides["tls"] = True
        cfg = replace(cfg, **overrides)
        if args.timezone:
            tz = ZoneInfo(args.timezone)
        password = read_password(cfg) if cfg.username else None
    except ConfigError as exc:
        print(f"kiosk-watch: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except (ValueError, KeyError) as exc:
        print(f"kiosk-watch: {exc}", file=sys.stderr)
        return 2

    client = make_client(cfg, f"kiosk-watch-{os.getpid()}", password)
    watched = topics(cfg.prefix, device)
    done = threading.Event()
    failed: list[str] = []
    visits = 0

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            failed.append(f"broker {cfg.host}:{cfg.port} refused the connection: {reason_code}")
            done.set()
            return
        client.subscribe([(topic, 1) for topic in watched.values()])

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        kinds = ",".join(watched)
        print(f"# watching {cfg.prefix}/{device}/{{{kinds}}} on {cfg.host}:{cfg.port}", flush=True)

    def on_message(client, userdata, msg) -> None:
        nonlocal visits
        if args.json:
            text = msg.payload.decode("utf-8", "replace")
            line = {"topic": msg.topic, "retain": bool(msg.retain), "payload": text}
            print(json.dumps(line), flush=True)
        else:
            print(format_message(msg.topic, msg.payload, tz), flush=True)
        if msg.topic.endswith("/visit"):
            visits += 1
            if args.count and visits >= args.count:
                done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    try:
        client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
    except OSError as exc:
        print(f"kiosk-watch: cannot connect to {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while not done.wait(0.2):
            if deadline and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    client.disconnect()
    client.loop_stop()
    if failed:
        print(f"kiosk-watch: {failed[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
