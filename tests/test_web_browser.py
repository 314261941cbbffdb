"""The web page in a real browser (Debian's chromium through chromedriver, via selenium) on the
real kioskd playing the demo, against the real SQLite file it writes.

Every number the pages show is compared with the database's, Today is watched while the demo
commits a visit, and each page is saved as a screenshot (in $KIOSK_WEB_SCREENSHOTS, else the
test's tmp folder) to be looked at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kiosk.days import day_bucket, hour_buckets, local_day
from kiosk.labels import AGE_GROUPS, GENDERS
from kiosk.store import Store
from tests.broker import free_port, wait_until
from tests.conftest import new_check, new_visit
from tests.kioskd import write_config
from tests.reliability import RunningKioskd

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
    reason="chromium and chromium-driver are not installed (apt; .ci/run installs them)",
)
TZ = "America/New_York"
DEVICE = "door-1"


def seed(db: Path, tz: ZoneInfo) -> None:
    """Visits on earlier days (the trend, yesterday's report) and today's failed and
    unmeasured checks (the demo runs with the gate off, so it makes none)."""
    store = Store(f"sqlite:///{db}")
    now = datetime.now(UTC)
    today = local_day(now, tz)
    try:
        for back, n in ((1, 7), (2, 3), (5, 11), (12, 4)):
            start = day_bucket(today - timedelta(days=back), tz).start
            for i in range(n):
                age, gender = AGE_GROUPS[(i + back) % 8], GENDERS[i % 2]
                at = start + timedelta(hours=9, minutes=7 * i)
                store.add_visit(new_visit(at, age=age, gender=gender, device=DEVICE))
        store.add_check(new_check(now - timedelta(seconds=5), "fail", device=DEVICE))
        store.add_check(new_check(now - timedelta(seconds=4), "unmeasured", device=DEVICE,
                                  temperature_c=None))  # fmt: skip
    finally:
        store.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[str, Path, RunningKioskd]]:
    tmp = tmp_path_factory.mktemp("web")
    port = free_port()
    config = write_config(
        tmp,
        device_id=DEVICE,
        timezone=TZ,
        camera={"source": "demo", "realtime": True, "loop": True},
        web={"enabled": True, "port": port, "live_view": True},
    )
    db = tmp / "state" / "kiosk.db"
    db.parent.mkdir(parents=True)
    seed(db, ZoneInfo(TZ))
    daemon = RunningKioskd(config)
    try:
        assert daemon.wait_for("web page on", timeout=90), daemon.text
        yield f"http://127.0.0.1:{port}", config, daemon
    finally:
        daemon.proc.terminate()
        daemon.finish()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1700", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("KIOSK_WEB_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screens")
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_today(config: Path) -> dict:
    """Today's numbers as the database has them, for the page to be compared with."""
    store = Store(f"sqlite:///{config.parent / 'state' / 'kiosk.db'}", read_only=True)
    tz = ZoneInfo(TZ)
    try:
        day = day_bucket(local_day(datetime.now(UTC), tz), tz)
        counts = store.visit_counts(day.start, day.end, DEVICE)
        checks = store.check_counts(day.start, day.end, DEVICE)
        buckets = hour_buckets(day.day, tz)
        edges = [b.start for b in buckets] + [buckets[-1].end]
        hours = store.visit_counts_binned(edges, DEVICE)
        days = [day.day - timedelta(days=n) for n in range(6, -1, -1)]
        per_day = [sum(store.visit_counts(*_bounds(d, tz), DEVICE).values()) for d in days]
    finally:
        store.close()
    per_hour = [sum(n for (i, _, _), n in hours.items() if i == h) for h in range(len(buckets))]
    return {
        "visitors": sum(counts.values()),
        "female": sum(n for (_, g), n in counts.items() if g == "female"),
        "male": sum(n for (_, g), n in counts.items() if g == "male"),
        "failed": checks.get("fail", 0),
        "unmeasured": checks.get("unmeasured", 0),
        "table": {a: [counts.get((a, g), 0) for g in GENDERS] for a in AGE_GROUPS},
        "per_hour": per_hour,
        "week": per_day,
    }


def _bounds(day, tz):
    b = day_bucket(day, tz)
    return b.start, b.end


def page_today(driver) -> dict:
    text = {k: driver.find_element(By.ID, k).text for k in
            ("visitors", "female", "male", "failed", "unmeasured")}  # fmt: skip
    rows = driver.find_elements(By.CSS_SELECTOR, "#agegender tbody tr")
    table = {}
    for row in rows:
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        if cells[0] in AGE_GROUPS:
            table[cells[0]] = [int(cells[1]), int(cells[2])]
    per_hour = driver.execute_script(
        "return window.lastToday.hours.map(h => h.visitors.female + h.visitors.male)"
    )
    week = driver.execute_script("return window.lastToday.trend.slice(-7).map(d => d.visitors)")
    bars = driver.execute_script("return document.querySelectorAll('#hours rect').length")
    return {
        **{k: int(v) for k, v in text.items()},
        "table": table,
        "per_hour": per_hour,
        "week": week,
        "bars": bars,
    }


def updated(driver) -> str:
    return driver.find_element(By.ID, "updated").text


def stable_comparison(driver, config: Path, tries: int = 6) -> tuple[dict, dict]:
    """The page's numbers and the database's at a moment when no visit was committed between
    reading the database, the page's next refresh, and reading the database again."""
    for _ in range(tries):
        before = db_today(config)
        shown = updated(driver)
        assert wait_until(lambda shown=shown: updated(driver) != shown, 15), "no refresh"
        page = page_today(driver)
        after = db_today(config)
        if before == after:
            return page, after
    pytest.fail("the database changed at every refresh")


def load_ms(driver) -> float:
    return driver.execute_script(
        "const t = performance.getEntriesByType('navigation')[0];"
        "return t.loadEventEnd - t.startTime"
    )


def test_today_shows_the_database_numbers_and_updates_without_reload(site, browser, shots):
    url, config, daemon = site
    browser.get(f"{url}/today")
    assert wait_until(lambda: browser.find_element(By.ID, "visitors").text.isdigit(), 15)
    first_load_ms = load_ms(browser)
    page, db = stable_comparison(browser, config)
    bars = page.pop("bars")
    assert page == {**db, "table": db["table"]}, (page, db)
    assert db["failed"] == 1 and db["unmeasured"] == 1 and sum(db["week"][:-1]) == 7 + 3 + 11
    assert bars >= 1
    browser.save_screenshot(str(shots / "today.png"))
    # A visit is committed by the demo: the page follows without a reload.
    marker = browser.execute_script("window.notReloaded = 1; return 1")
    seen = int(browser.find_element(By.ID, "visitors").text)
    target = db["visitors"] + 1
    assert wait_until(lambda: db_today(config)["visitors"] >= target, 60), daemon.text[-2000:]
    assert wait_until(lambda: int(browser.find_element(By.ID, "visitors").text) >= target, 15)
    assert browser.execute_script("return window.notReloaded") == marker
    assert int(browser.find_element(By.ID, "visitors").text) > seen
    latest = browser.find_elements(By.CSS_SELECTOR, "#latest tbody tr")
    assert 1 <= len(latest) <= 10
    assert first_load_ms < 2000, first_load_ms  # the target (300 ms) is measured by bench


def test_reports_downloads_are_kiosk_reports_bytes(site, browser, shots, tmp_path):
    url, config, _ = site
    yesterday = local_day(datetime.now(UTC), ZoneInfo(TZ)) - timedelta(days=1)
    first = yesterday - timedelta(days=12)
    cases = {
        f"daily.csv?date={yesterday}&by=hour": ["daily", "--date", str(yesterday), "--by", "hour"],
        f"range.csv?from={first}&to={yesterday}&by=day": [
            "range", "--from", str(first), "--to", str(yesterday)],
        f"chart.png?date={yesterday}": ["chart", "--date", str(yesterday)],
    }  # fmt: skip
    for query, args in cases.items():
        out = tmp_path / query.split("?")[0]
        cli = [
            sys.executable,
            "-m",
            "kiosk.report",
            *args,
            "--config",
            str(config),
            "--out",
            str(out),
        ]
        r = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        with urllib.request.urlopen(f"{url}/reports/{query}", timeout=30) as resp:
            body = resp.read()
            assert "attachment" in resp.headers["Content-Disposition"]
        assert body == out.read_bytes(), query
    browser.get(f"{url}/reports")
    chart = browser.find_element(By.CSS_SELECTOR, "img.chartimg")
    assert wait_until(lambda: browser.execute_script("return arguments[0].naturalWidth", chart), 30)
    assert browser.find_element(By.ID, "daily-date").get_attribute("value") == str(yesterday)
    browser.save_screenshot(str(shots / "reports.png"))


def test_health_page_shows_the_daemon(site, browser, shots):
    url, _, _ = site
    browser.get(f"{url}/health")
    assert wait_until(lambda: browser.find_element(By.ID, "camera").text == "streaming", 15)
    assert browser.find_element(By.ID, "mqtt").text == "off"
    assert browser.find_element(By.ID, "clock").text.startswith("trusted")
    assert browser.find_element(By.ID, "model").text.startswith("accurate-")
    assert float(browser.find_element(By.ID, "fps").text) > 5
    browser.save_screenshot(str(shots / "health.png"))


def test_live_view_streams_only_while_open_and_says_so(site, browser, shots):
    url, _, daemon = site
    opened = daemon.count("live view opened")
    browser.get(f"{url}/live")
    assert wait_until(lambda: daemon.count("live view opened") == opened + 1, 5)
    assert "LIVE" in browser.find_element(By.ID, "banner").text

    def shown() -> int:
        return int(browser.execute_script("return document.body.dataset.shown || 0"))

    assert wait_until(lambda: shown() > 3, 15)
    t0, n0 = time.monotonic(), shown()
    time.sleep(4)
    fps = (shown() - n0) / (time.monotonic() - t0)
    assert fps >= 5, fps
    assert wait_until(lambda: "#" in browser.find_element(By.ID, "faces").text, 20)
    browser.save_screenshot(str(shots / "live.png"))
    browser.get(f"{url}/today")  # leaving the page ends the hand-over


# Visible 640x480 onto the Lepton's 120x160 (upright): the overlay drawn through a homography.
SCALE_TO_LEPTON = [[120 / 640, 0.0, 0.0], [0.0, 160 / 480, 0.0], [0.0, 0.0, 1.0]]


def test_live_view_with_a_thermal_camera(tmp_path, browser, shots, shared_data):
    """The thermal gate replaying a real Lepton 3.5 kiosk recording (heated reference disc in
    view) beside a clip of one visitor: the live view blends the thermal frame in through the
    homography, marks the reference and gives the face's reading."""
    from tools.make_demo import ENTER_S, Appearance, render, write_video

    clip = tmp_path / "visitor.mp4"
    write_video(clip, render((Appearance("hopper", -ENTER_S, 60.0, 320, 130),), 8.0))
    port = free_port()
    config = write_config(
        tmp_path,
        camera={"source": str(clip), "realtime": True, "loop": True},
        gate={"mode": "thermal"},
        thermal={
            "source": "replay",
            "device": str(shared_data / RECORDING),
            "rotate": 1,
            "reference_c": 36.6,
            "homography": SCALE_TO_LEPTON,
        },  # fmt: skip
        web={"enabled": True, "port": port, "live_view": True},
    )
    daemon = RunningKioskd(config)
    try:
        assert daemon.wait_for("web page on", timeout=90), daemon.text
        browser.get(f"http://127.0.0.1:{port}/live")
        assert wait_until(lambda: browser.find_element(By.ID, "thermal").text == "registered", 20)
        assert wait_until(lambda: "°C" in browser.find_element(By.ID, "reference").text, 20)
        faces = browser.find_element(By.ID, "faces")
        assert wait_until(
            lambda: "#" in faces.text and ("°C" in faces.text or "(" in faces.text), 20
        )
        browser.save_screenshot(str(shots / "live-thermal.png"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as r:
            assert b'"thermal":"streaming"' in r.read()
        browser.get(f"http://127.0.0.1:{port}/today")
    finally:
        daemon.proc.terminate()
        daemon.finish()


RECORDING = "thermal/feverscreen_lepton35/testr.npz"
