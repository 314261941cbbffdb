"""kiosk-collect benchmark, real parts only: mosquitto, PostgreSQL and kiosk-collect as its own
process, all on this machine.

    python tools/bench_collect.py                      # all three parts
    python tools/bench_collect.py --only ingest --visits 60000
    python tools/bench_collect.py --only report --report-visits 10000000

1. ingest: the collector's steady-state rate. A backlog of --visits visit messages (built by
   kiosk/wire.py, QoS 1) waits in the broker for the collector's persistent session; then
   the collector starts and drains it. The rate is taken between 10 % and 90 % committed.
2. latency: --rate visits/s from 10 simulated kiosks (a real SQLite store and the real
   Publisher each) for --seconds; latency is PostgreSQL's clock_timestamp() at the insert
   (the commit follows within the transaction) minus the time the kiosk's commit returned.
3. report: --report-visits visits from 1,000 devices over 30 days in 4 time zones, made by
   generate_series inside PostgreSQL (not through MQTT), then VACUUM ANALYZE; the daily
   report (all devices, summed; and per device) timed in process and as the CLI.

PostgreSQL is $KIOSK_TEST_PG (default postgresql://postgres@127.0.0.1:5432/test); each part
uses a fresh database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from kiosk.centraldb import migrate  # noqa: E402
from kiosk.centraldb.query import CentralDB, Selection  # noqa: E402
from kiosk.centraldb.schema import visits  # noqa: E402
from kiosk.config import MqttConfig  # noqa: E402
from kiosk.counters import Counters  # noqa: E402
from kiosk.mqtt import Publisher  # noqa: E402
from kiosk.reportcentral import central_periods, central_records  # noqa: E402
from kiosk.store import Store  # noqa: E402
from kiosk.wire import Sender, encode, visit_payload  # noqa: E402
from tests.broker import Broker, wait_until  # noqa: E402
from tests.postgres import fresh_database  # noqa: E402
from tests.sim_kiosks import fake_visit  # noqa: E402

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")
SETTINGS = {"batch_max": 1000, "batch_wait_s": 0.1, "receive_max": 4000}


def start_collector(folder: Path, port: int, url, client_id: str) -> subprocess.Popen:
    cfg = {
        "log_level": "WARNING",
        "mqtt": {
            "port": port,
            "client_id": client_id,
            "receive_max": SETTINGS["receive_max"],
            "reconnect_min_s": 0.2,
        },  # fmt: skip
        "database": {"url": url.render_as_string(hide_password=False)},
        "ingest": {"batch_max": SETTINGS["batch_max"], "batch_wait_s": SETTINGS["batch_wait_s"]},
    }
    path = folder / "collect.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen(
        [sys.executable, "-m", "kiosk.central.cli", "--config", str(path)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def stored(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(visits)) or 0


def session_ready(engine, port: int, client_id: str) -> None:
    """Wait until the collector's schema and subscription exist (then its session does)."""
    probe = f"probe-{client_id}"
    got = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=probe)
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not got.is_set():
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT to_regclass('visits')")).scalar():
                    got.set()
        except Exception:  # the database is being created
            pass
        time.sleep(0.2)
    time.sleep(1.0)  # the SUBACK follows the migration
    c.disconnect()
    c.loop_stop()


def bench_ingest(n: int, work: Path) -> dict:
    with fresh_database() as url, Broker(work / "ingest") as broker:
        engine = create_engine(url)
        col = start_collector(work, broker.port, url, "bench-ingest")
        session_ready(engine, broker.port, "bench-ingest")
        col.terminate()  # a clean stop: the broker keeps its session and queues for it
        col.wait(20)
        sender = Sender("Europe/Berlin", "0.1.0")
        import random

        rng = random.Random(1)
        payloads = [encode(visit_payload(fake_visit(f"dev-{i % 1000:04d}", rng), False,
                                         sender)) for i in range(n)]  # fmt: skip
        topics = [f"kiosk/dev-{i % 1000:04d}/visit" for i in range(n)]
        loader = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             protocol=mqtt.MQTTv5)  # fmt: skip
        loader.max_inflight_messages_set(1000)
        loader.max_queued_messages_set(0)
        loader.connect("127.0.0.1", broker.port)
        loader.loop_start()
        t = time.monotonic()
        for k in range(0, n, 20_000):  # paho's packet ids wrap at 65,535: 20,000 at a time
            chunk = zip(topics[k : k + 20_000], payloads[k : k + 20_000], strict=True)
            for info in [loader.publish(tp, p, qos=1) for tp, p in chunk]:
                info.wait_for_publish(120)
        load_s = time.monotonic() - t
        loader.disconnect()
        loader.loop_stop()
        col = start_collector(work, broker.port, url, "bench-ingest")
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 600:
            k = stored(engine)
            samples.append((time.monotonic(), k))
            if k >= n:
                break
            time.sleep(0.25)
        col.terminate()
        col.wait(20)
        engine.dispose()
    lo = next(s for s in samples if s[1] >= 0.1 * n)
    hi = next(s for s in samples if s[1] >= 0.9 * n)
    rate = (hi[1] - lo[1]) / (hi[0] - lo[0])
    total_s = samples[-1][0] - t0
    return {"visits": n, "stored": samples[-1][1], "rate_per_s": rate,
            "drain_s_incl_start": total_s, "backlog_load_s": load_s}  # fmt: skip


def bench_latency(rate: float, seconds: float, work: Path) -> dict:
    kiosks = 10
    with fresh_database() as url, Broker(work / "latency") as broker:
        engine = create_engine(url)
        col = start_collector(work, broker.port, url, "bench-latency")
        session_ready(engine, broker.port, "bench-latency")
        cfg = MqttConfig(enabled=True, port=broker.port, discovery=False, stats_interval_s=60)
        import random

        rng = random.Random(2)
        devs = []
        for i in range(kiosks):
            store = Store(f"sqlite:///{work / f'lat-{i}.db'}")
            pub = Publisher(cfg, f"lat-{i:02d}", store, ZoneInfo(ZONES[i % 4]), Counters())
            pub.start()
            devs.append((f"lat-{i:02d}", store, pub))
        committed: dict[str, float] = {}
        step = kiosks / rate
        t_next = time.monotonic()
        end = t_next + seconds
        while time.monotonic() < end:
            for dev, store, pub in devs:
                v = fake_visit(dev, rng)
                store.add_visit(v, outbox=True)
                committed[v.id] = time.time()
                pub.wake()
            t_next += step
            time.sleep(max(0.0, t_next - time.monotonic()))
        wait_until(lambda: stored(engine) >= len(committed), 60, 0.2)
        with engine.connect() as conn:
            rows = conn.execute(select(visits.c.id, visits.c.ingested_at)).all()
        for _, store, pub in devs:
            pub.close(timeout=2)
            store.close()
        col.terminate()
        col.wait(20)
        engine.dispose()
    lat = sorted(at.timestamp() - committed[i] for i, at in rows if i in committed)
    q = statistics.quantiles(lat, n=100)
    return {"rate_per_s": rate, "seconds": seconds, "sent": len(committed), "stored": len(lat),
            "p50_s": q[49], "p95_s": q[94], "max_s": lat[-1]}  # fmt: skip


GENERATE = """
INSERT INTO visits (id, device_id, started_at, ended_at, age_group, age_confidence, gender,
                    gender_confidence, temperature_c, temperature_status, frames, model_version,
                    clock_synced, timezone)
SELECT md5(i::text), 'dev-' || lpad((i % 1000)::text, 4, '0'), t, t + interval '4 s',
       (ARRAY['0-2','4-6','8-12','15-20','25-32','38-43','48-53','60-100'])[1 + (i / 7) % 8],
       0.8, (ARRAY['female','male'])[1 + (i / 3) % 2], 0.9, NULL, 'pass', 12, 'bench-1', true,
       (ARRAY['Europe/Berlin','America/New_York','Asia/Tokyo','UTC'])[1 + (i % 1000) % 4]
FROM generate_series(0, :n - 1) AS i,
     LATERAL (SELECT timestamptz '2026-05-01 00:00+00' + (i::float8 / :n) * interval '30 days'
              AS t) AS s
"""


def bench_report(n: int, day: date) -> dict:
    with fresh_database() as url:
        engine = create_engine(url)
        migrate.upgrade(engine)
        t = time.monotonic()
        with engine.begin() as conn:
            conn.execute(text(GENERATE), {"n": n})
        gen_s = time.monotonic() - t
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE visits"))
            conn.execute(text(
                "INSERT INTO devices SELECT DISTINCT device_id, now(), now(), now(), 'bench-1', "
                "'0.1.0', timezone FROM visits WHERE started_at < '2026-05-02'"))  # fmt: skip
            size = conn.execute(text("SELECT pg_total_relation_size('visits')")).scalar()
        engine.dispose()
        db = CentralDB(url.render_as_string(hide_password=False))
        timings = {}
        for label, per_device in (("all_devices_summed", False), ("per_device", True)):
            runs = []
            for _ in range(3):
                t = time.monotonic()
                periods = list(central_periods(db, [day], "day", Selection(), None, per_device))
                rows = list(central_records(periods, per_device))
                runs.append(time.monotonic() - t)
            timings[label] = {"best_s": min(runs), "runs_s": runs, "rows": len(rows),
                              "visits": sum(p.counts.total for p in periods)}  # fmt: skip
        db.close()
        t = time.monotonic()
        cli = subprocess.run(
            [sys.executable, "-m", "kiosk.report", "daily", "--db",
             url.render_as_string(hide_password=False), "--all-devices", "--date",
             day.isoformat()], capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        timings["cli_wall_s"] = time.monotonic() - t
        assert cli.returncode == 0, cli.stderr
    return {"visits": n, "generate_s": gen_s, "bytes_per_visit": size / n, "day": day.isoformat(),
            **timings}  # fmt: skip


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    mq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"{os.cpu_count()} cores, {cpu}; {pg}; {mq}; Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--only", choices=("ingest", "latency", "report"))
    ap.add_argument("--visits", type=int, default=60_000, help="ingest backlog")
    ap.add_argument("--rate", type=float, default=100.0, help="latency: visits per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="latency: how long")
    ap.add_argument("--report-visits", type=int, default=10_000_000)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"collector settings: {SETTINGS}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "ingest"):
            print("ingest:", bench_ingest(args.visits, work), flush=True)
        if args.only in (None, "latency"):
            print("latency:", bench_latency(args.rate, args.seconds, work), flush=True)
        if args.only in (None, "report"):
            print("report:", bench_report(args.report_visits, date(2026, 5, 16)), flush=True)


if __name__ == "__main__":
    main()
