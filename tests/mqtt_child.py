"""A process running a Publisher, for tests that kill -9 it (LWT, restart with a backlog).

    python tests/mqtt_child.py --db sqlite:///x.db --port 1883 --device dev --visits 5

Stores ``--visits`` visits (with outbox entries, waking the publisher after each), prints
``stored <id>`` for each and then ``idle``, and runs until killed.
"""

import argparse
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiosk.config import MqttConfig  # noqa: E402
from kiosk.counters import Counters  # noqa: E402
from kiosk.mqtt import Publisher  # noqa: E402
from kiosk.store import Store  # noqa: E402
from kiosk.visit import Visit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--device", default="child")
    ap.add_argument("--visits", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    store = Store(args.db)
    cfg = MqttConfig(enabled=True, port=args.port, reconnect_min_s=0.2, reconnect_max_s=1.0)
    pub = Publisher(cfg, args.device, store, ZoneInfo("UTC"), Counters())
    pub.start()
    for _ in range(args.visits):
        now = datetime.now(UTC)
        v = Visit(
            device_id=args.device,
            started_at=now - timedelta(seconds=2),
            ended_at=now,
            age_group="38-43",
            age_confidence=0.7,
            gender="male",
            gender_confidence=0.95,
            temperature_c=36.5,
            temperature_status="pass",
            frames=8,
            model_version="test",
        )
        store.add_visit(v, outbox=True)
        pub.wake()
        print("stored", v.id, flush=True)
        time.sleep(args.interval)
    print("idle", flush=True)
    while True:
        time.sleep(1)
        print("connected" if pub.connected else "disconnected", flush=True)


if __name__ == "__main__":
    main()
