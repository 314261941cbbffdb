"""End to end, real parts only: 3 real kioskd processes on the demo (one of them keeping its
own store in PostgreSQL) and 17 simulated kiosks on the real Publisher, 20 devices, publish to
a real mosquitto; kiosk-collect writes to a real PostgreSQL. During the run the collector is
SIGKILLed and restarted, the broker restarted and PostgreSQL refuses connections for 10 s.
At the end every stored visit and check is in PostgreSQL exactly once, field for field."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

pytest.importorskip("psycopg", reason="kioskd[central] is not installed")
pytest.importorskip("alembic", reason="kioskd[central] is not installed")

from sqlalchemy import create_engine, func, select  # noqa: E402

from kiosk.centraldb.query import visit_of  # noqa: E402
from kiosk.centraldb.schema import checks, dead_letters, devices, visits  # noqa: E402
from kiosk.store import CheckRow, Store, check_from_row  # noqa: E402
from tests.broker import Broker, needs_mosquitto, wait_until  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.kioskd import start_kioskd, write_config  # noqa: E402
from tests.postgres import TcpProxy, fresh_database  # noqa: E402
from tests.sim_kiosks import device_ids  # noqa: E402

SIMULATED = 17
REAL_ZONES = ("Europe/Berlin", "America/New_York", "UTC")
KIOSKD_S = 50.0
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def start_collector(tmp_path: Path, port: int, db_url) -> subprocess.Popen:
    cfg = {
        "log_level": "INFO",
        "mqtt": {
            "port": port,
            "client_id": "collect-e2e",
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        },  # fmt: skip
        "database": {"url": db_url.render_as_string(hide_password=False)},
        "ingest": {"batch_wait_s": 0.05, "retry_max_s": 1.0},
    }
    path = tmp_path / "collect.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = (tmp_path / "collect.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "kiosk.central.cli", "--config", str(path)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def kiosk_config(folder: Path, n: int, port: int, store_url: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sections = {
        "device_id": f"door-{n}",
        "timezone": REAL_ZONES[n],
        "camera": {"source": "demo", "realtime": True, "loop": True},
        "mqtt": {
            "enabled": True,
            "port": port,
            "discovery": False,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        },  # fmt: skip
    }
    if store_url:
        sections["store"] = {"url": store_url}
    return write_config(folder, **sections)


def kiosk_records(url: str) -> tuple[list, list]:
    """Every visit and check a kiosk stored; its outbox must be empty (all delivered)."""
    store = Store(url, read_only=url.startswith("sqlite"), create=False)
    try:
        vs = store.visits(*ALL_TIME)
        with store.session() as s:
            cs = [check_from_row(r) for r in s.scalars(select(CheckRow))]
        assert store.outbox_depth() == 0, f"{url}: outbox not drained"
        return vs, cs
    finally:
        store.close()


@needs_mosquitto
@pytest.mark.slow
def test_twenty_kiosks_through_collector_crash_broker_restart_and_database_outage(tmp_path):
    with fresh_database() as central, fresh_database() as kiosk_pg:
        proxy = TcpProxy((central.host, central.port or 5432)).start()
        via_proxy = central.set(host="127.0.0.1", port=proxy.port)
        broker = Broker(tmp_path / "broker", persistence=True).start()
        procs: list[subprocess.Popen] = []
        try:
            collector = start_collector(tmp_path, broker.port, via_proxy)
            engine = create_engine(central)
            assert wait_until(lambda: "session new" in _log(tmp_path), 60), _log(tmp_path)
            time.sleep(0.5)  # its SUBACK
            # 3 real kioskd: the third keeps its own store in PostgreSQL (kioskd[postgres]).
            kiosk_urls = []
            for n in range(3):
                folder = tmp_path / f"door-{n}"
                pg_url = kiosk_pg.render_as_string(hide_password=False) if n == 2 else None
                cfg = kiosk_config(folder, n, broker.port, pg_url)
                kiosk_urls.append(pg_url or f"sqlite:///{folder / 'state' / 'kiosk.db'}")
                procs.append(start_kioskd(cfg, "--duration", str(KIOSKD_S)))
            sim = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "sim_kiosks.py"), "--folder",
                 str(tmp_path / "sim"), "--port", str(broker.port), "--devices", str(SIMULATED),
                 "--seconds", "36", "--visits-per-s", "2", "--check-every", "4"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            procs.append(sim)
            t0 = time.monotonic()

            def at(s: float) -> None:
                time.sleep(max(0.0, t0 + s - time.monotonic()))

            at(8)
            collector.send_signal(signal.SIGKILL)
            collector.wait(10)
            at(10)
            collector = start_collector(tmp_path, broker.port, via_proxy)
            at(17)
            broker.restart()
            at(24)
            proxy.stop()  # PostgreSQL refuses connections for 10 s
            at(34)
            proxy.start()
            for p in procs[:3]:
                out, _ = p.communicate(timeout=KIOSKD_S + 60)
                assert p.returncode == 0, out[-3000:]
            assert sim.stdout is not None
            lines = []
            deadline = time.monotonic() + 60
            while "drained" not in lines and time.monotonic() < deadline:
                lines.append(sim.stdout.readline().strip())
            assert "drained" in lines, lines

            expected_v, expected_c = {}, {}
            urls = kiosk_urls + [f"sqlite:///{tmp_path / 'sim' / d}.db"
                                 for d in device_ids("sim", SIMULATED)]  # fmt: skip
            for url in urls:
                vs, cs = kiosk_records(url)
                expected_v.update({v.id: v for v in vs})
                expected_c.update({c.id: c for c in cs})
            real = sum(1 for v in expected_v.values() if v.device_id.startswith("door-"))
            assert real >= 3, "the demo kiosks stored too few visits"
            assert len(expected_c) > 0

            def all_in() -> bool:
                with engine.connect() as conn:
                    nv = conn.scalar(select(func.count()).select_from(visits))
                    nc = conn.scalar(select(func.count()).select_from(checks))
                return (nv, nc) == (len(expected_v), len(expected_c))

            want = (len(expected_v), len(expected_c))
            assert wait_until(all_in, 60, 0.5), (_counts(engine), want, _log(tmp_path)[-3000:])
            with engine.connect() as conn:
                got_v = {r.id: r for r in conn.execute(select(visits))}
                got_c = {r.id: r for r in conn.execute(select(checks))}
                devs = set(conn.scalars(select(devices.c.device_id)))
                dead = conn.scalar(select(func.count()).select_from(dead_letters))
            assert len(devs) == 20 and dead == 0
            for vid, v in expected_v.items():  # exactly once (the primary key), field for field
                assert visit_of(got_v[vid]._mapping) == dataclasses.replace(
                    v, temperature_c=None, skin_c=None
                )
            for cid, c in expected_c.items():
                r = got_c[cid]
                assert (r.device_id, r.at, r.status, r.clock_synced, r.temperature_c) == (
                    c.device_id, c.at, c.status, c.clock_synced, None)  # fmt: skip
            log = _log(tmp_path)
            assert "cannot write a batch" in log and "session resumed" in log
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(10)
            if collector.poll() is None:
                collector.terminate()
                collector.wait(10)
            broker.stop()
            proxy.stop()


def _log(tmp_path: Path) -> str:
    try:
        return (tmp_path / "collect.log").read_text(errors="replace")
    except OSError:
        return ""


def _counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.scalar(select(func.count()).select_from(visits)) or 0,
                conn.scalar(select(func.count()).select_from(checks)) or 0)  # fmt: skip
