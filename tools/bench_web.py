"""The web page's cost to the frame loop: the real kioskd with nobody on the page, with Today
open, with the live view open, and under hostile clients; then page load times.

`python tools/bench.py --only web` runs it (it is also the last section of the full bench).
Each scenario is one kioskd child playing the demo in a loop at its own 15 fps through the
threaded camera reader, as a live camera delivers it (the reader keeps only the newest frame,
so a loop that falls behind loses frames), pinned to one core with all its threads, the web
server's included; the browser (headless Debian chromium through chromedriver) and the hostile
clients run on the other cores (a Pi has four). Per scenario: fps (frames / --duration), the
share of its core kioskd used and its CPU ms per frame, peak RSS, and for the live view the
frames the page showed a second. Hostile: 16 slowloris connections kept open, 400 MB POSTs
and a flood of bad paths, all at once. Page load: each page opened 10 times on the same
kind of kioskd; the time to the load event and to the first numbers (or frame) drawn, median.
As fast as it decodes instead (`camera.realtime: false`), fps here swung by 30-40 % between
runs of the same scenario while other work shared the machine; paced, a lost frame is a
frame the loop did not take in time.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCENARIOS = ("web off", "nobody on the page", "Today open", "live view open", "hostile clients")
PAGES = ("today", "reports", "health", "live")
BAD_PATHS = ("/../../etc/passwd", "/static/%2e%2e/server.py", "/%00", "/" + "a" * 6000,
             "/reports/range.csv?from=1970-01-01&to=9000-01-01",
             "/live/frame.jpg?after=x")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(work: Path, port: int, web: bool, realtime: bool) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    data = {
        "device_id": "bench",
        "log_level": "INFO",
        "state_dir": str(work / "state"),
        "camera": {"source": "demo", "loop": True, "realtime": realtime},
        "clock": {"trust": "always"},
        "web": {"enabled": web, "port": port, "live_view": True},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Kioskd:
    """kioskd as a child pinned to `cpu`; its log read as it runs, its RSS sampled."""

    def __init__(self, config: Path, seconds: float | None, cpu: int | None) -> None:
        extra = ["--duration", str(seconds)] if seconds else []
        cmd = [sys.executable, "-m", "kiosk.service", "--config", str(config), *extra]
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, preexec_fn=pin, cwd=ROOT)  # fmt: skip
        self.log: list[str] = []
        self.peak_rss_mb = 0.0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.log):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"kioskd never said {text!r}:\n{''.join(self.log)[-3000:]}")
            time.sleep(0.05)

    def sample_rss(self) -> None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        if found:
            self.peak_rss_mb = max(self.peak_rss_mb, int(found[1]) / 1024)

    def frames(self) -> int:
        found = re.search(r"summary: frames=(\d+)", "".join(self.log))
        if found is None:
            raise RuntimeError("no summary line:\n" + "".join(self.log)[-3000:])
        return int(found[1])


def browser():  # -> selenium WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


# Hostile clients ---------------------------------------------------------------------------


def _slowloris(port: int, stop: threading.Event) -> None:
    """16 connections that never finish their request; reopened as soon as they are cut."""
    socks: list[socket.socket] = []
    while not stop.is_set():
        while len(socks) < 16:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                s.sendall(b"GET /today HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                socks.append(s)
            except OSError:
                break
        for s in list(socks):
            try:
                s.sendall(b"X: y\r\n")
            except OSError:
                socks.remove(s)
                s.close()
        stop.wait(0.5)
    for s in socks:
        s.close()


def _huge_posts(port: int, stop: threading.Event) -> None:
    head = (b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 419430400\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")  # fmt: skip
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(head + b"x" * 65536)
                s.recv(100)
        except OSError:
            stop.wait(0.05)


def _bad_paths(port: int, stop: threading.Event) -> None:
    import http.client

    i = 0
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", BAD_PATHS[i % len(BAD_PATHS)])
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            stop.wait(0.05)
        finally:
            conn.close()
        i += 1


# Scenarios ---------------------------------------------------------------------------------


def scenario(name: str, work: Path, seconds: float, cpu: int | None, driver) -> dict:
    port = free_port()
    config = write_config(work / re.sub(r"\W+", "_", name), port, name != "web off", True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    daemon = Kioskd(config, seconds, cpu)
    daemon.wait_for("started: device" if name == "web off" else "web page on")
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    clients: list[threading.Thread] = []
    if name == "Today open":
        driver.get(f"{url}/today")
    elif name == "live view open":
        driver.get(f"{url}/live")
    elif name == "hostile clients":
        for target in (_slowloris, _huge_posts, _bad_paths):
            clients.append(threading.Thread(target=target, args=(port, stop), daemon=True))
            clients[-1].start()
    t0, shown0 = time.monotonic(), _shown(driver) if name == "live view open" else 0
    live_fps = None
    while daemon.proc.poll() is None:
        daemon.sample_rss()
        if name == "live view open" and time.monotonic() - t0 > seconds * 0.8 and live_fps is None:
            live_fps = (_shown(driver) - shown0) / (time.monotonic() - t0)
        time.sleep(0.5)
    stop.set()
    if name in ("Today open", "live view open"):
        driver.get("about:blank")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    frames = daemon.frames()
    return {
        "fps": frames / seconds,
        "frames": frames,
        "cpu_ms_per_frame": cpu_s * 1000 / max(1, frames),
        "core_share": cpu_s / seconds,
        "peak_rss_mb": daemon.peak_rss_mb,
        "live_fps": live_fps,
    }


def _shown(driver) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.shown || 0)"))


def page_loads(work: Path, driver, cpu: int | None, n: int = 10) -> dict[str, dict[str, float]]:
    """Each page opened `n` times on a kioskd playing the demo at its own 15 fps."""
    port = free_port()
    daemon = Kioskd(write_config(work / "pages", port, True, True), None, cpu)
    try:
        daemon.wait_for("web page on")
        time.sleep(3)  # a visit or two in the database
        result: dict[str, dict[str, float]] = {}
        for page in PAGES:
            loads, drawn = [], []
            for _ in range(n):
                driver.get(f"http://127.0.0.1:{port}/{page}")
                loads.append(_wait_ms(driver, "performance.getEntriesByType('navigation')[0]"
                                      ".loadEventEnd"))  # fmt: skip
                if page != "reports":
                    drawn.append(_wait_ms(driver, "performance.getEntriesByName('drawn')[0]"
                                          "?.startTime"))  # fmt: skip
            first = statistics.median(drawn) if drawn else float("nan")
            result[page] = {"load_ms": statistics.median(loads), "drawn_ms": first}
        driver.get("about:blank")
        return result
    finally:
        daemon.proc.terminate()
        daemon.proc.wait(30)


def _wait_ms(driver, expression: str, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {expression} || 0")
        if value:
            return float(value)
        time.sleep(0.01)
    return float("nan")


def start_cost() -> dict[str, float]:
    """What turning the page on costs kioskd's process: Flask imported and the app built."""
    code = (
        "import resource, time; from kiosk import store, report, daystats\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t0 = time.perf_counter()\n"
        "from kiosk.web import app\n"
        "print((time.perf_counter() - t0) * 1000,"
        " (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) / 1024)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=ROOT).stdout.split()  # fmt: skip
    return {"import_ms": float(out[0]), "rss_mb": float(out[1])}


def _median(runs: list[dict]) -> dict:
    """The run with the median fps."""
    return sorted(runs, key=lambda r: r["fps"])[(len(runs) - 1) // 2]


def section(work: Path, cpu: int | None, seconds: float = 20.0, repeat: int = 3) -> dict:
    """Print and return every figure of the web section."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        print("\n(no web section: chromium and chromium-driver are not installed)")
        return {}
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"start": start_cost()}
    mine = os.sched_getaffinity(0)
    if cpu is not None and len(mine) > 1:  # the browser and the clients off kioskd's core
        os.sched_setaffinity(0, mine - {cpu})
    driver = browser()
    try:
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            runs = [
                [scenario(name, Path(tmp), seconds, cpu, driver) for name in SCENARIOS]
                for _ in range(repeat)
            ]  # alternated, so slow spells hit every scenario
            results["scenarios"] = {
                name: _median([r[i] for r in runs]) for i, name in enumerate(SCENARIOS)
            }
            results["pages"] = page_loads(Path(tmp), driver, cpu)
    finally:
        driver.quit()
        os.sched_setaffinity(0, mine)
    print_section(results, cpu)
    return results


def print_section(results: dict, cpu: int | None) -> None:
    s = results["start"]
    print(
        f"\nweb page: Flask and the app add {s['rss_mb']:.1f} MB RSS and import in "
        f"{s['import_ms']:.0f} ms (kioskd imports them only with web.enabled)"
    )
    where = f"pinned to CPU {cpu}" if cpu is not None else "not pinned"
    print(f"kioskd on the demo at its 15 fps, {where}, web threads included:")
    base = results["scenarios"]["nobody on the page"]["fps"]
    head = (
        f"{'fps':>8s}{'vs nobody':>11s}{'% of core':>11s}{'CPU ms/frame':>14s}{'peak RSS MB':>13s}"
    )
    print(f"  {'':22s}{head}")
    for name, r in results["scenarios"].items():
        change = f"{(r['fps'] / base - 1) * 100:+.1f} %" if base else "-"
        live = f"   page showed {r['live_fps']:.1f} frames/s" if r["live_fps"] is not None else ""
        print(f"  {name:22s}{r['fps']:8.2f}{change:>11s}{r['core_share'] * 100:11.1f}"
              f"{r['cpu_ms_per_frame']:14.2f}"
              f"{r['peak_rss_mb']:13.0f}{live}")  # fmt: skip
    print("page load (median of 10, ms):")
    for page, r in results["pages"].items():
        print(
            f"  /{page:10s} load event {r['load_ms']:6.0f}   first numbers/frame drawn "
            f"{r['drawn_ms']:6.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "kiosk-bench")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per scenario (median kept)")
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results = section(args.work, None if args.cpu < 0 else args.cpu, args.seconds, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
