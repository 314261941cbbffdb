"""Soak test: replay the bundled demo at full speed and watch kioskd for leaks.

kioskd runs as in production (file replay looped as fast as the CPU allows, a real mosquitto
receiving every visit, SQLite in WAL mode) while this script samples its resident memory,
open file descriptors and threads from /proc. After a warm-up (allocator pools, SQLite page
cache, LiteRT arenas settle), resident memory may grow by at most 10 MB and the thread count
and the descriptors other than SQLite connections must not change. SQLite connections are
counted apart: SQLAlchemy's pool opens a second one (database + WAL descriptors) the first time
the publisher thread reads while the frame loop writes, which can happen at any time; they must
stay within the pool's size. At the end kioskd must exit 0 and every visit it logged as
committed must be in an intact database and must have reached the broker.

    python -m tools.soak                    # the documented 30-minute run
    python -m tools.soak --duration 120     # the CI version (tests/test_reliability_soak.py)
    python -m tools.soak --duration 1800 --json soak.json

Prints one line per sample and a JSON summary; exits 1 when an assertion fails. Linux only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

COMMITTED = re.compile(r"visit ([0-9a-f-]{36}) committed")
#: SQLAlchemy's QueuePool keeps at most this many connections open (pool_size default).
MAX_DB_CONNECTIONS = 5


@dataclass
class Sample:
    t_s: float
    rss_kb: int
    fds: int
    threads: int
    db_connections: int = 0  # descriptors open on the database file itself


@dataclass
class Result:
    duration_s: float
    warmup_s: float
    samples: list[Sample] = field(default_factory=list)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_growth_mb: float = 0.0
    fds: tuple[int, int] = (0, 0)  # all descriptors, min..max after warm-up
    other_fds: tuple[int, int] = (0, 0)  # without SQLite connections
    db_connections: tuple[int, int] = (0, 0)
    threads: tuple[int, int] = (0, 0)
    frames: int = 0
    fps: float = 0.0
    visits_committed: int = 0
    visits_stored: int = 0
    mqtt_visits_received: int = 0
    exit_code: int | None = None
    integrity: str = ""
    failures: list[str] = field(default_factory=list)


def proc_sample(pid: int, t_s: float, db: Path) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        links = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except FileNotFoundError:  # closed while listing
                continue
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    db_conns = sum(link == str(db) for link in links)
    rss = int(fields["VmRSS"].split()[0])
    return Sample(t_s, rss, len(links), int(fields["Threads"]), db_conns)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = folder / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    if os.geteuid() == 0:
        lines.append(f"user {getpass.getuser()}")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


class VisitCounter:
    """A subscriber counting the visit messages that reach the broker."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.n = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe("kiosk/+/visit", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        self.n += 1

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def soak(duration_s: float, warmup_s: float, interval_s: float, workdir: Path) -> Result:
    result = Result(duration_s, warmup_s)
    broker, port = start_mosquitto(workdir)
    counter = VisitCounter(port)
    cfg = {
        "device_id": "soak",
        "log_level": "INFO",
        "state_dir": str(workdir / "state"),
        "camera": {"source": "demo", "realtime": False, "loop": True},
        "mqtt": {"enabled": True, "port": port, "stats_interval_s": 10},
        "clock": {"trust": "always"},
    }
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    db = (workdir / "state" / "kiosk.db").resolve()
    cmd = [sys.executable, "-m", "kiosk.service", "--config", str(config)]
    cmd += ["--duration", str(duration_s)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_path = workdir / "kioskd.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        t0 = time.monotonic()
        stop = threading.Event()
        try:
            while proc.poll() is None:
                sample = proc_sample(proc.pid, time.monotonic() - t0, db)
                if sample is not None:
                    result.samples.append(sample)
                    print(
                        f"{sample.t_s:7.0f} s  rss {sample.rss_kb / 1024:6.1f} MB  "
                        f"fds {sample.fds:3d} (db connections {sample.db_connections})  "
                        f"threads {sample.threads:3d}",
                        flush=True,
                    )
                stop.wait(interval_s)
            result.exit_code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    time.sleep(1.0)  # the last publishes reach the subscriber
    counter.stop()
    broker.terminate()
    broker.wait(5)
    text = log_path.read_text()
    committed = COMMITTED.findall(text)
    result.visits_committed = len(committed)
    result.mqtt_visits_received = counter.n
    summary = re.search(r"summary: frames=(\d+) fps=([\d.]+)", text)
    if summary:
        result.frames, result.fps = int(summary.group(1)), float(summary.group(2))
    with sqlite3.connect(db) as conn:
        result.integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        ids = {r[0] for r in conn.execute("SELECT id FROM visits")}
    result.visits_stored = len(ids)
    judge(result, set(committed) - ids)
    return result


def judge(r: Result, missing: set[str], max_growth_mb: float = 10.0) -> None:
    # kioskd's --duration starts after its start-up, so samples up to duration_s are all from
    # the running loop, none from the shutdown.
    steady = [s for s in r.samples if r.warmup_s <= s.t_s <= r.duration_s]
    if len(steady) < 3:
        r.failures.append(f"only {len(steady)} samples after the {r.warmup_s:.0f} s warm-up")
        return
    # The start is the median of the first few steady samples (one GC cycle can sit on top).
    r.rss_start_mb = statistics.median(s.rss_kb for s in steady[:3]) / 1024
    r.rss_end_mb = steady[-1].rss_kb / 1024
    r.rss_growth_mb = max(s.rss_kb for s in steady) / 1024 - r.rss_start_mb

    def span(values: list[int]) -> tuple[int, int]:
        return min(values), max(values)

    r.fds = span([s.fds for s in steady])
    r.other_fds = span([s.fds - 2 * s.db_connections for s in steady])  # database + WAL
    r.db_connections = span([s.db_connections for s in steady])
    r.threads = span([s.threads for s in steady])
    if r.rss_growth_mb > max_growth_mb:
        r.failures.append(f"resident memory grew {r.rss_growth_mb:.1f} MB (> {max_growth_mb})")
    if r.other_fds[0] != r.other_fds[1]:
        r.failures.append(f"file descriptors changed: {r.other_fds[0]}..{r.other_fds[1]}")
    if r.db_connections[1] > MAX_DB_CONNECTIONS:
        r.failures.append(f"{r.db_connections[1]} SQLite connections (> {MAX_DB_CONNECTIONS})")
    if r.threads[0] != r.threads[1]:
        r.failures.append(f"threads changed: {r.threads[0]}..{r.threads[1]}")
    if r.exit_code != 0:
        r.failures.append(f"kioskd exited {r.exit_code}")
    if r.integrity != "ok":
        r.failures.append(f"integrity_check: {r.integrity}")
    if missing:
        r.failures.append(f"{len(missing)} committed visits missing from the database")
    if r.visits_committed == 0:
        r.failures.append("no visit was committed")
    if r.mqtt_visits_received < r.visits_committed:
        r.failures.append(f"broker got {r.mqtt_visits_received} of {r.visits_committed} visits")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    ap.add_argument("--warmup", type=float, help="seconds excluded (default: min(120, 25%%))")
    ap.add_argument("--interval", type=float, default=5.0, help="sampling interval, seconds")
    ap.add_argument("--json", type=Path, help="write the full result here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (log, db)")
    args = ap.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(120.0, args.duration * 0.25)
    workdir = Path(tempfile.mkdtemp(prefix="kiosk-soak-"))
    try:
        result = soak(args.duration, warmup, args.interval, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    brief = {k: v for k, v in asdict(result).items() if k != "samples"}
    print(json.dumps(brief, indent=2))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    if args.keep:
        print(f"work folder: {workdir}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
