"""Simulated kiosks for the central tests and the benchmark: each device is a real SQLite
store and the real Publisher (kiosk/mqtt.py), so what reaches the broker is what kioskd sends.

    python tests/sim_kiosks.py --folder DIR --port 1883 --devices 17 --seconds 40 \
        --visits-per-s 1 --check-every 5

Every device stores one visit every 1/visits-per-s seconds (and a check every check-every
visits), with outbox entries, for `seconds`; prints ``stored`` then, and ``drained`` once
every outbox is empty; exits on SIGTERM after stopping the publishers.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiosk.config import MqttConfig  # noqa: E402
from kiosk.counters import Counters  # noqa: E402
from kiosk.labels import AGE_GROUPS, GENDERS  # noqa: E402
from kiosk.mqtt import Publisher  # noqa: E402
from kiosk.store import Store  # noqa: E402
from kiosk.visit import Check, Visit  # noqa: E402

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")


def device_ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(n)]


def fake_visit(device: str, rng: random.Random) -> Visit:
    now = datetime.now(UTC)
    return Visit(
        device_id=device,
        started_at=now - timedelta(seconds=rng.uniform(1, 6)),
        ended_at=now,
        age_group=rng.choice(AGE_GROUPS),
        age_confidence=rng.random(),
        gender=rng.choice(GENDERS),
        gender_confidence=rng.random(),
        temperature_c=rng.uniform(35.5, 37.4),
        temperature_status="pass",
        frames=rng.randint(5, 60),
        model_version="sim-1",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prefix", default="sim")
    ap.add_argument("--devices", type=int, default=17)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--visits-per-s", type=float, default=1.0)
    ap.add_argument("--check-every", type=int, default=5)
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(15)
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = MqttConfig(enabled=True, port=args.port, discovery=False, stats_interval_s=30,
                     reconnect_min_s=0.2, reconnect_max_s=1.0)  # fmt: skip
    kiosks = []
    for i, dev in enumerate(device_ids(args.prefix, args.devices)):
        store = Store(f"sqlite:///{folder / dev}.db")
        pub = Publisher(cfg, dev, store, ZoneInfo(ZONES[i % len(ZONES)]), Counters())
        pub.start()
        kiosks.append((dev, store, pub))
    interval = 1.0 / args.visits_per_s
    end = time.monotonic() + args.seconds
    n = 0
    while time.monotonic() < end and not stop.is_set():
        for dev, store, pub in kiosks:
            store.add_visit(fake_visit(dev, rng), outbox=True)
            if n % args.check_every == 0:
                status = rng.choice(("fail", "unmeasured"))
                temp = rng.uniform(37.6, 39.0) if status == "fail" else None
                store.add_check(Check(dev, datetime.now(UTC), status, temp), outbox=True)
            pub.wake()
        n += 1
        stop.wait(interval)
    print("stored", n * len(kiosks), flush=True)
    while not stop.is_set() and any(store.outbox_depth() for _, store, _ in kiosks):
        stop.wait(0.2)
    print("drained", flush=True)
    stop.wait()
    for _, store, pub in kiosks:
        pub.close(timeout=2)
        store.close()


if __name__ == "__main__":
    main()
