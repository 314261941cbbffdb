"""Issue 13 against the real kioskd: a subprocess, a real SQLite file, a real mosquitto on a
free loopback port. Each test is one hostile input or fault; docs/reliability.md maps them."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from kiosk.config import EX_CONFIG
from kiosk.store import Store
from tests.broker import Broker, Subscriber, free_port, needs_mosquitto
from tests.kioskd import run_kioskd, write_config
from tests.reliability import RunningKioskd, fill, small_filesystem
from tools.make_demo import ENTER_S, Appearance, render, write_video

LOOP = {"source": "demo", "loop": True, "realtime": False}  # a visit every ~2.5 s
SECRETS = ("camPa55word", "mqttPa55word", "dbPa55word")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def db_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM visits")}


@pytest.fixture(scope="module")
def visitor_clip(tmp_path_factory):
    """8 s of one person standing in front of the kiosk."""
    path = tmp_path_factory.mktemp("clips") / "visitor.mp4"
    write_video(path, render((Appearance("hopper", -ENTER_S, 60.0, 320, 130),), 8.0))
    return path


# -- 1. a malformed external-gate decision on MQTT ---------------------------------------


@needs_mosquitto
def test_bad_mqtt_decision_does_not_stop_later_ones(tmp_path, visitor_clip):
    topic = "door/screening"
    with Broker(tmp_path) as broker:
        cfg = write_config(
            tmp_path,
            camera={"source": str(visitor_clip), "realtime": True},
            gate={"mode": "external", "mqtt_topic": topic},
            mqtt={"enabled": False, "host": "127.0.0.1", "port": broker.port},
        )
        kioskd = RunningKioskd(cfg)
        assert kioskd.wait_for("started", timeout=60), kioskd.text
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        time.sleep(1.0)  # the gate subscribes after its CONNACK
        for body in (b'{"status": "pass", "temperature_c": [36.6]}', b'{"status": {}}'):
            pub.publish(topic, body, qos=1).wait_for_publish(5)
        pub.publish(topic, b'{"status": "pass", "temperature_c": 36.6}', qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        assert kioskd.finish(60) == 0, kioskd.text
    with sqlite3.connect(tmp_path / "state" / "kiosk.db") as conn:
        rows = conn.execute("SELECT temperature_status, temperature_c FROM visits").fetchall()
    assert rows == [("pass", 36.6)], kioskd.text
    assert "temperature_c must be a number" in kioskd.text


# -- 2. a hostile 400 MB POST to the external-gate HTTP listener ----------------------------


def hostile_post(port: int, head: bytes, total: int = 400 * 1024 * 1024) -> bytes:
    """Send `head` then up to `total` bytes of body; return the reply (if any)."""
    chunk = b"0" * (1024 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        try:
            for _ in range(total // len(chunk)):
                s.sendall(chunk)
        except OSError:
            pass  # the listener closed the connection: what it should do
        try:
            return s.recv(4096)
        except OSError:
            return b""


def test_hostile_400mb_posts_do_not_grow_memory(tmp_path, capsys):
    port = free_port()
    cfg = write_config(
        tmp_path,
        camera={"source": "demo", "loop": True, "realtime": True},
        gate={"mode": "external", "http_port": port, "unmeasured_passes": True},
    )
    kioskd = RunningKioskd(cfg)
    try:
        assert kioskd.wait_for("started", timeout=60), kioskd.text
        time.sleep(2.0)  # past start-up allocations
        before = rss_kb(kioskd.proc.pid)
        heads = [
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 419430400\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\n",  # headers that never end
        ]
        replies = [hostile_post(port, head) for head in heads]
        peak = max(before, rss_kb(kioskd.proc.pid))
        time.sleep(0.5)
        after = rss_kb(kioskd.proc.pid)
        with capsys.disabled():
            print(
                f"\nRSS before {before} kB, after four 400 MB POSTs {after} kB (+{after - before})"
            )
        assert (after - before) <= 20 * 1024 and (peak - before) <= 20 * 1024
        assert [r.split(b" ")[1] for r in replies[:3]] == [b"411", b"413", b"411"]
        ok = hostile_post(port, b"POST / HTTP/1.0\r\nContent-Length: 4\r\n\r\npass", total=0)
        assert b" 202 " in ok
        kioskd.proc.send_signal(signal.SIGTERM)
        assert kioskd.finish() == 0, kioskd.text
    finally:
        kioskd.kill()


def one_more_visit_then_stop(kioskd: RunningKioskd) -> None:
    n = len(kioskd.committed())
    assert kioskd.wait_for("committed", n=n + 1, timeout=60), kioskd.text
    kioskd.proc.send_signal(signal.SIGTERM)
    assert kioskd.finish() == 0, kioskd.text


# -- 3. the database file deleted while kioskd runs -----------------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced by another file"])
def test_database_deleted_while_running_loses_nothing(tmp_path, how):
    cfg = write_config(tmp_path, camera=LOOP)
    db = tmp_path / "state" / "kiosk.db"
    kioskd = RunningKioskd(cfg)
    try:
        assert kioskd.wait_for("committed", timeout=90), kioskd.text
        if how == "deleted":
            db.unlink()
        else:  # a restore from a backup: another kiosk database renamed over it
            other = tmp_path / "backup.db"
            Store(f"sqlite:///{other}").close()
            os.replace(other, db)
        assert kioskd.wait_for(f"was {how} while kioskd ran", timeout=30), kioskd.text
        one_more_visit_then_stop(kioskd)
    finally:
        kioskd.kill()
    saved = list(db.parent.glob("kiosk.db.*.orphaned"))
    assert len(saved) == 1, kioskd.text
    stored = db_ids(db) | db_ids(saved[0])
    assert set(kioskd.committed()) <= stored
    assert db_ids(db), "visits after the deletion went to the new file"


# -- 4. SIGHUP and SIGUSR2 -------------------------------------------------------------------


@needs_mosquitto
def test_sighup_restarts_gracefully_and_sigusr2_is_ignored(tmp_path):
    with Broker(tmp_path) as broker, Subscriber(broker.port, ["kiosk/#"]) as sub:
        cfg = write_config(
            tmp_path, camera=LOOP, mqtt={"enabled": True, "port": broker.port, "discovery": False}
        )
        kioskd = RunningKioskd(cfg)
        try:
            assert kioskd.wait_for("committed", timeout=90), kioskd.text
            pid = kioskd.proc.pid
            kioskd.proc.send_signal(signal.SIGUSR2)
            assert kioskd.wait_for("SIGUSR2: ignored", timeout=10), kioskd.text
            kioskd.proc.send_signal(signal.SIGHUP)
            assert kioskd.wait_for(r"kioskd \S+ started", n=2, timeout=90), kioskd.text
            assert kioskd.proc.poll() is None and kioskd.proc.pid == pid
            status = "kiosk/test-kiosk/status"
            assert sub.wait_for(
                lambda s: s.payloads(status)[-3:] == ["online", "offline", "online"], 20
            )
            # A config broken before the next SIGHUP: logged, and this run goes on.
            good = cfg.read_text()
            cfg.write_text(good + "camera: 3\n")
            kioskd.proc.send_signal(signal.SIGHUP)
            assert kioskd.wait_for("keeps running with the old config", timeout=20), kioskd.text
            cfg.write_text(good)
            one_more_visit_then_stop(kioskd)
        finally:
            kioskd.kill()
    assert set(kioskd.committed()) == db_ids(tmp_path / "state" / "kiosk.db")
    assert kioskd.count(r"kioskd \S+ started") == 2


# -- 5/6/9 and config: whatever passes --check-config starts; the rest exits 78 -------------


@pytest.mark.parametrize(
    "sections, key",
    [
        ({"store": {"retention_days": 1_000_000}}, "store.retention_days"),
        ({"mqtt": {"keepalive_s": 100_000}}, "mqtt.keepalive_s"),
        ({"device_id": "d" * 70_000}, "device_id"),
        ({"device_id": "kö"}, "device_id"),
        ({"gate": {"mode": "external", "mqtt_topic": "a#b"}}, "gate.mqtt_topic"),
        ({"store": {"url": "mysql://kiosk:dbPa55word@127.0.0.1/kiosk"}}, "store.url"),
        ({"store": {"url": "not a url"}}, "store.url"),
        ({"store": {"url": "postgresql+pg8000://kiosk:dbPa55word@127.0.0.1/test"}}, "store.url"),
        ({"camera": {"fps": 1.0e300}}, "camera.fps"),
    ],
)
def test_bad_values_exit_78_naming_the_key(tmp_path, sections, key):
    url = sections.get("store", {}).get("url", "")
    driver = {"mysql": "MySQLdb", "postgresql+pg8000": "pg8000"}.get(url.split(":")[0])
    if driver and importlib.util.find_spec(driver):
        pytest.skip(f"{driver} is installed here: the URL is not a bad one")
    cfg = write_config(tmp_path, **sections)
    for args in (("--check-config",), ()):
        r = run_kioskd(cfg, *args, timeout=60)
        assert r.returncode == EX_CONFIG, (args, r.stderr)
        assert f"{key}:" in r.stderr and "Traceback" not in r.stderr
        assert "dbPa55word" not in r.stderr + r.stdout


def test_yaml_duplicate_key_and_unquoted_off(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("device_id: a\ngate:\n  mode: off\ncamera: {source: demo}\ndevice_id: b\n")
    r = run_kioskd(path, "--check-config")
    assert r.returncode == EX_CONFIG and "key 'device_id' appears twice" in r.stderr
    assert "line 5" in r.stderr
    path.write_text("gate:\n  mode: off\ncamera:\n  fps: 1.0e1\n")
    assert run_kioskd(path, "--check-config").returncode == 0


@needs_mosquitto
def test_every_value_at_its_bound_starts(tmp_path):
    """The largest accepted values of the keys that used to crash at run time, together."""
    with Broker(tmp_path) as broker:
        cfg = write_config(
            tmp_path,
            device_id="d" * 64,
            camera={**LOOP, "stall_timeout_s": 3600, "reconnect_max_s": 3600},
            store={"retention_days": 36_500},
            tracker={"max_gap_s": 3600},
            gate={"mode": "external", "mqtt_topic": "door/+/decision/#", "match_window_s": 600},
            mqtt={
                "enabled": True,
                "port": broker.port,
                "keepalive_s": 65535,
                "prefix": "p" * 200,
                "reconnect_max_s": 3600,
                "stats_interval_s": 86400,
            },
        )
        r = run_kioskd(cfg, "--max-frames", "200", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "mqtt: connected" in r.stderr and "Traceback" not in r.stderr


# -- 8. a camera file OpenCV cannot open ------------------------------------------------------


@pytest.mark.parametrize("realtime", [True, False])
def test_undecodable_camera_file_exits_78(tmp_path, realtime):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    truncated = tmp_path / "cut.mp4"
    demo = Path(__file__).resolve().parents[1] / "kiosk" / "demo" / "demo.mp4"
    truncated.write_bytes(demo.read_bytes()[:4000])
    for bad in (text, truncated):
        cfg = write_config(tmp_path, camera={"source": str(bad), "realtime": realtime})
        r = run_kioskd(cfg, timeout=60)
        assert r.returncode == EX_CONFIG, r.stderr
        assert f"camera.source: {bad}" in r.stderr and "Traceback" not in r.stderr


# -- 10. a database file the service user cannot write ----------------------------------------


def make_unwritable(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not available here")


def test_unwritable_database_exits_78_before_ready(tmp_path):
    cfg = write_config(tmp_path)
    assert run_kioskd(cfg, "--max-frames", "5").returncode == 0
    db = tmp_path / "state" / "kiosk.db"
    make_unwritable(db)
    try:
        r = run_kioskd(cfg, "--max-frames", "5", timeout=60)
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)
        db.chmod(0o644)
    assert r.returncode == EX_CONFIG, r.stderr
    assert "readonly database" in r.stderr and "Traceback" not in r.stderr
    assert "started" not in r.stderr


@pytest.mark.parametrize(
    "state_dir, url",
    [
        ("/dev/null/state", ""),  # state_dir under a file
        ("", "sqlite:////"),  # the root directory as the database
        ("", "sqlite:///{tmp}/foreign.db"),  # somebody else's SQLite file
    ],
)
def test_bad_storage_exits_78_in_one_line(tmp_path, state_dir, url):
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    sections = {"store": {"url": url.format(tmp=tmp_path)}}
    if state_dir:
        sections["state_dir"] = state_dir
    r = run_kioskd(write_config(tmp_path, **sections), "--max-frames", "5", timeout=60)
    assert r.returncode == EX_CONFIG, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "/state" in r.stderr or str(tmp_path) in r.stderr or "/ is a directory" in r.stderr
    with sqlite3.connect(foreign) as conn:
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"invoices"}


def test_full_disk_at_start_exits_78_in_one_line(tmp_path):
    with small_filesystem(tmp_path / "fs") as mnt:
        if mnt is None:
            pytest.skip("cannot loop-mount a filesystem image here (needs root and /dev/loop*)")
        state = mnt / "state"
        state.mkdir()
        fill(mnt)
        r = run_kioskd(write_config(tmp_path, state_dir=str(state)), "--max-frames", "5")
    assert r.returncode == EX_CONFIG, r.stderr
    assert "kiosk.db" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "No space left on device" in r.stderr or "disk is full" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- camera trouble is a warning ----------------------------------------------------------


def test_stream_stuck_connecting_is_a_warning(tmp_path):
    silent = socket.socket()  # accepts the TCP connection, never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/stream"
    cfg = write_config(tmp_path, camera={"source": url, "stall_timeout_s": 1})
    kioskd = RunningKioskd(cfg)
    try:
        assert kioskd.wait_for("WARNING kiosk.frames: camera .* still connecting after", timeout=60)
        kioskd.proc.send_signal(signal.SIGTERM)
        assert kioskd.finish() == 0, kioskd.text
    finally:
        kioskd.kill()
        silent.close()


# -- two kioskd on one database ------------------------------------------------------------


def test_second_kioskd_on_one_database_exits_78(tmp_path):
    cfg = write_config(tmp_path, camera={**LOOP, "realtime": True})
    first = RunningKioskd(cfg)
    try:
        assert first.wait_for("started", timeout=60), first.text
        second = run_kioskd(cfg, "--max-frames", "5", timeout=60)
        assert second.returncode == EX_CONFIG, second.stderr
        assert f"in use by another kioskd (pid {first.proc.pid})" in second.stderr
        first.proc.send_signal(signal.SIGTERM)
        assert first.finish() == 0
    finally:
        first.kill()
    assert run_kioskd(cfg, "--max-frames", "5", timeout=60).returncode == 0  # lock released


# -- secrets and journald -----------------------------------------------------------------


@needs_mosquitto
def test_no_secret_reaches_the_log_and_levels_reach_journald(tmp_path):
    from tests.broker import add_user

    passwd = tmp_path / "passwd"
    add_user(passwd, "kiosk", "mqttPa55word")
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    with Broker(tmp_path, password_file=passwd) as broker:
        cfg = write_config(
            tmp_path,
            log_level="DEBUG",
            camera={
                "source": f"rtsp://admin:camPa55word@127.0.0.1:{free_port()}/stream",
                "stall_timeout_s": 1,
                "reconnect_max_s": 1,
            },  # fmt: skip
            mqtt={"enabled": True, "port": broker.port, "username": "kiosk"},
        )
        env = {
            **os.environ,
            "KIOSK_MQTT_PASSWORD": "mqttPa55word",
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = ["python", "-m", "kiosk.service", "--config", str(cfg), "--duration", "6"]
        proc = subprocess.Popen(cmd, stderr=write_end, stdout=write_end, env=env)
        os.close(write_end)
        with os.fdopen(read_end, errors="replace") as f:
            log = f.read()
        assert proc.wait(60) == 0, log
    # kioskd's own lines; OpenCV and LiteRT write a few straight to the descriptor.
    lines = [
        line for line in log.splitlines() if re.search(r"(DEBUG|INFO|WARNING|ERROR) \S+: ", line)
    ]
    assert len(lines) > 10 and all(re.match(r"<[2-7]>[A-Z]", line) for line in lines), log
    assert any(line.startswith("<4>") and "camera" in line for line in lines), log
    assert "mqtt: connected" in log and "rtsp://admin:***@" in log
    for secret in SECRETS:
        assert secret not in log
    # A config error comes before logging is set up: an error all the same.
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    cfg.write_text(cfg.read_text() + "bogus: 1\n")
    subprocess.run(cmd, stderr=write_end, env=env, timeout=60)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        assert f.read().startswith("<3>kioskd: config error: bogus: unknown key")


# -- Home Assistant `online` flood -----------------------------------------------------------


@needs_mosquitto
def test_home_assistant_online_flood_is_coalesced(tmp_path):
    with Broker(tmp_path) as broker, Subscriber(broker.port, ["homeassistant/sensor/#"]) as sub:
        cfg = write_config(
            tmp_path, camera={**LOOP, "realtime": True}, mqtt={"enabled": True, "port": broker.port}
        )
        kioskd = RunningKioskd(cfg)
        try:
            assert kioskd.wait_for("mqtt: connected", timeout=60), kioskd.text
            assert sub.wait_for(lambda s: len(s.messages) > 0, 10)
            time.sleep(1.0)
            per_round = len(sub.messages)
            flood = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            flood.connect("127.0.0.1", broker.port)
            flood.loop_start()
            for _ in range(5000):
                flood.publish("homeassistant/status", "online", qos=0)
            flood.loop_stop()
            flood.disconnect()
            time.sleep(3.0)
            kioskd.proc.send_signal(signal.SIGTERM)
            assert kioskd.finish() == 0, kioskd.text
        finally:
            kioskd.kill()
    resends = len(sub.messages) // per_round - 1
    assert 1 <= resends <= 2, resends
    assert kioskd.count("Home Assistant is online") <= 2, kioskd.count("Home Assistant is online")
