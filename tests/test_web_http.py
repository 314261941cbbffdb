"""The web server at the HTTP level: binding, the password, CSRF, the Host check, hostile
clients, and that no page or API carries a face image outside the live view. A real server on
a real socket, over a real SQLite file; kioskd itself for the exit codes and the log."""

from __future__ import annotations

import http.client
import os
import re
import resource
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import cv2
import pytest

from kiosk.config import EX_CONFIG, ConfigError, DetectorConfig, WebConfig
from kiosk.focus import FocusedDetector
from kiosk.frames import Frame, demo_video_path
from kiosk.gate import OffGate
from kiosk.health import Health
from kiosk.track import Tracker
from kiosk.web import server as web_server
from kiosk.web.server import WebServer
from tests.broker import free_port
from tests.kioskd import run_kioskd, write_config

TZ = ZoneInfo("Europe/Berlin")
JPEG_MAGIC = b"\xff\xd8\xff"
PASSWORD = "correct horse battery"


def health() -> Health:
    return Health("0.1.0", "kiosk-1", 12.0, "streaming", 15.0, None, False, False, None, True,
                  10**9, "accurate-v1", 0)  # fmt: skip


def make_server(db_path, password: str | None = None, live: bool = False) -> WebServer:
    cfg = WebConfig(enabled=True, port=0, live_view=live, password_env="")
    server = WebServer.from_config(cfg, f"sqlite:///{db_path}", "kiosk-1", TZ, health)
    server.password = password
    return server


@pytest.fixture
def web(store, db_path) -> Iterator[WebServer]:
    with make_server(db_path) as server:
        yield server


def get(server: WebServer, path: str, headers: dict | None = None, method: str = "GET",
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def demo_frame() -> Frame:
    cap = cv2.VideoCapture(str(demo_video_path()))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 60)
    ok, image = cap.read()
    cap.release()
    assert ok
    return Frame(image, 60, time.monotonic(), datetime.now(UTC))


def offer_demo_frame(server: WebServer) -> None:
    """What kioskd's frame loop does while a viewer looks: one real frame through a real
    detector and tracker, handed over."""
    assert server.live is not None
    frame = demo_frame()
    detector = FocusedDetector.from_config(DetectorConfig())
    tracker = Tracker()
    tracker.update(detector.detect(frame.image, []), frame.t_mono, frame.t_wall)
    server.live.offer(frame, detector, tracker.tracks, OffGate())


def test_binds_loopback_by_default_and_a_network_address_needs_a_password(
    db_path, store, monkeypatch
):
    server = WebServer.from_config(
        WebConfig(enabled=True, port=0), f"sqlite:///{db_path}", "k", TZ, health
    )
    with server:
        assert server._server is not None
        assert server._server.server_address[0] == "127.0.0.1"
    server.close()  # idempotent
    monkeypatch.delenv("KIOSK_WEB_PASSWORD", raising=False)
    open_to_all = WebConfig(enabled=True, host="0.0.0.0", port=0)
    with pytest.raises(ConfigError) as err:
        WebServer.from_config(open_to_all, f"sqlite:///{db_path}", "k", TZ, health)
    assert err.value.key == "web.password"
    monkeypatch.setenv("KIOSK_WEB_PASSWORD", PASSWORD)
    server = WebServer.from_config(open_to_all, f"sqlite:///{db_path}", "k", TZ, health)
    assert server.password == PASSWORD


def test_kioskd_exits_78_naming_web_password_and_never_logs_it(tmp_path):
    open_to_all = {"enabled": True, "host": "0.0.0.0", "port": free_port(), "password_env": ""}
    r = run_kioskd(write_config(tmp_path, web=open_to_all))
    assert r.returncode == EX_CONFIG, r.stderr
    assert "web.password:" in r.stderr
    missing = {**open_to_all, "password_file": str(tmp_path / "nope")}
    r = run_kioskd(write_config(tmp_path, web=missing))
    assert r.returncode == EX_CONFIG and "web.password_file:" in r.stderr, r.stderr
    secret = tmp_path / "web_password"
    secret.write_text(PASSWORD + "\n")
    cfg = write_config(
        tmp_path, log_level="DEBUG", web={**open_to_all, "password_file": str(secret)}
    )
    r = run_kioskd(cfg, "--max-frames", "20")
    assert r.returncode == 0, r.stderr
    assert "web page on http://0.0.0.0:" in r.stderr and "with a password" in r.stderr
    assert PASSWORD not in r.stderr


def _csrf_and_cookie(server: WebServer) -> tuple[str, str]:
    status, headers, body = get(server, "/login")
    assert status == 200
    token = re.search(rb'name="csrf" value="([^"]+)"', body)
    assert token is not None
    return token.group(1).decode(), headers["set-cookie"].split(";")[0]


def _login(server: WebServer, password: str, token: str, cookie: str, **extra: str):
    form = f"csrf={token}&password={password.replace(' ', '+')}".encode()
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded", **extra}
    return get(server, "/login", headers, "POST", form)


def test_password_login_and_csrf(store, db_path):
    with make_server(db_path, password=PASSWORD) as server:
        assert get(server, "/today")[0] == 302
        assert get(server, "/api/today")[0] == 401
        assert get(server, "/api/health")[0] == 401
        token, cookie = _csrf_and_cookie(server)
        assert _login(server, PASSWORD, "forged", cookie)[0] == 403  # wrong CSRF token
        assert _login(server, PASSWORD, token, "kiosk_session=forged")[0] == 403  # no session
        evil = {"Origin": "http://evil.example"}
        assert _login(server, PASSWORD, token, cookie, **evil)[0] == 403
        assert _login(server, "guess", token, cookie)[0] == 403
        status, headers, _ = _login(server, PASSWORD, token, cookie)
        assert status == 303 and headers["location"] == "/today"
        assert "httponly" in headers["set-cookie"].lower()
        assert "samesite=strict" in headers["set-cookie"].lower()
        session = {"Cookie": headers["set-cookie"].split(";")[0]}
        assert get(server, "/api/today", session)[0] == 200
        assert get(server, "/today", session)[0] == 200
        # No state-changing GET; a POST without the token is refused.
        assert get(server, "/logout", session)[0] == 405
        assert get(server, "/logout", session, "POST", b"")[0] == 403
        assert get(server, "/api/today", session, "POST", b"")[0] in (403, 405)


def test_logins_are_rate_limited(store, db_path):
    with make_server(db_path, password=PASSWORD) as server:
        token, cookie = _csrf_and_cookie(server)
        for _ in range(8):
            _login(server, "guess", token, cookie)
        # The right password right after a burst of guesses is refused too (1 a second).
        assert _login(server, PASSWORD, token, cookie)[0] == 403
        time.sleep(1.1)
        assert _login(server, PASSWORD, token, cookie)[0] == 303


def test_loopback_server_refuses_foreign_host_names(web):
    assert get(web, "/api/today", {"Host": "evil.example"})[0] == 421
    assert get(web, "/api/today", {"Host": f"attacker.example:{web.port}"})[0] == 421
    assert get(web, "/api/today", {"Host": f"localhost:{web.port}"})[0] == 200
    assert get(web, "/api/today", {"Host": f"[::1]:{web.port}"})[0] == 200


def test_api_today_counts_the_store(web, store, make_visit, make_check):
    now = datetime.now(UTC)
    for age, gender in (("25-32", "female"), ("25-32", "male"), ("60-100", "female")):
        store.add_visit(make_visit(now, age=age, gender=gender))
    store.add_visit(make_visit(now, device="other-door"))  # another device's: not counted
    store.add_check(make_check(now, "fail"))
    store.add_check(make_check(now, "unmeasured", temperature_c=None))
    status, headers, body = get(web, "/api/today")
    assert status == 200 and headers["content-type"] == "application/json"
    import json

    data = json.loads(body)
    assert data["visitors"] == 3
    assert data["gender"] == {"female": 2, "male": 1}
    assert data["age_gender"]["25-32"] == {"female": 1, "male": 1}
    assert data["age_gender"]["60-100"] == {"female": 1, "male": 0}
    assert list(data["age_gender"]) == ["0-2", "4-6", "8-12", "15-20", "25-32", "38-43",
                                        "48-53", "60-100"]  # fmt: skip
    assert (data["failed_checks"], data["unmeasured_checks"]) == (1, 1)
    assert data["timezone"] == "Europe/Berlin"
    status, _, body = get(web, "/api/health")
    assert json.loads(body)["camera"] == "streaming"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_hostile_clients_are_cut_off_and_the_server_lives(store, db_path, monkeypatch):
    monkeypatch.setattr(web_server._Server, "max_request_s", 2.0)
    with make_server(db_path) as server:
        rss0 = _rss_mb()
        # A 400 MB body, announced: refused before it is read.
        t0 = time.monotonic()
        huge = {
            "Content-Length": str(400 * 2**20),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        conn = socket.create_connection(("127.0.0.1", server.port))
        head = "".join(f"{k}: {v}\r\n" for k, v in huge.items())
        conn.sendall(f"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
        conn.sendall(b"x" * 65536)
        reply = conn.recv(200)
        conn.close()
        assert reply.startswith(b"HTTP/1.0 413") or reply.startswith(b"HTTP/1.0 403"), reply
        assert time.monotonic() - t0 < 3
        # Endless headers: read up to the 12 kB budget only (the rest is never buffered), and
        # answered at once.
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        t0 = time.monotonic()
        conn.sendall(b"GET /today HTTP/1.1\r\n" + b"X-Junk: " + b"a" * 60000 + b"\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.0 ")
        assert time.monotonic() - t0 < 2
        conn.close()
        # Slowloris: every slot taken by a client that never finishes; all are cut off.
        slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        t0 = time.monotonic()
        for s in slow:
            s.sendall(b"GET /today HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for s in slow:
            s.settimeout(6)
            try:
                s.recv(100)
            except OSError:
                pass
        assert time.monotonic() - t0 < 2.0 + 3, "slow clients were not cut off"
        for s in slow:
            s.close()
        # Bad paths: refused, never a server error.
        for path in ("/../../etc/passwd", "/static/../app.py", "/static/%2e%2e/server.py",
                     "/%00", "/" + "a" * 7000, "/api/today/../../..", "/live/frame.jpg",
                     "/static/", "/reports/range.csv?from=2026-13-01&to=x",
                     "/reports/range.csv?from=2026-02-01&to=2026-01-01",
                     "/reports/range.csv?from=1970-01-01&to=9000-01-01",
                     "/reports/daily.csv?date=%ff%fe", "/reports/daily.csv?by=week"):  # fmt: skip
            status, _, body = get(server, path)
            assert status in (400, 404, 414, 431), (path, status)
            assert b"Traceback" not in body
        assert get(server, "/api/today")[0] == 200
        assert _rss_mb() - rss0 < 20


def test_no_face_image_outside_the_live_view(store, db_path, make_visit):
    store.add_visit(make_visit(datetime.now(UTC)))
    pages = ["/", "/today", "/reports", "/health", "/api/today", "/api/today/page",
             "/api/health", "/login", "/static/kiosk.css", "/static/today.js",
             "/reports/daily.csv", f"/reports/daily.csv?date={datetime.now(TZ).date()}",
             "/reports/range.csv?from=2026-01-01&to=2026-01-31"]  # fmt: skip
    with make_server(db_path) as server:
        assert get(server, "/live")[0] == 404
        assert get(server, "/live/frame.jpg")[0] == 404
        for path in pages:
            status, headers, body = get(server, path)
            assert "image/jpeg" not in headers.get("content-type", ""), path
            assert JPEG_MAGIC not in body, path
    with make_server(db_path, live=True) as server:
        offer_demo_frame(server)
        status, headers, body = get(server, "/live/frame.jpg?after=0")
        assert status == 200 and body.startswith(JPEG_MAGIC)
        assert headers["cache-control"] == "no-store"
        for path in pages:
            _, headers, body = get(server, path)
            assert JPEG_MAGIC not in body and "image/jpeg" not in headers.get("content-type", "")


def test_live_view_hands_over_only_while_asked(store, db_path, caplog):
    with make_server(db_path, live=True) as server:
        live = server.live
        assert live is not None and not live.wanted  # nobody looking: the loop skips it
        with caplog.at_level("INFO", logger="kioskd"):
            assert get(server, "/live")[0] == 200
        assert "live view opened from 127.0.0.1" in caplog.text
        assert not live.wanted  # the page itself hands nothing over; its frames do
        assert get(server, "/live/frame.jpg?after=0")[0] == 204  # no frame came within 2 s
        assert live.wanted
        offer_demo_frame(server)
        status, headers, body = get(server, "/live/frame.jpg?after=0")
        assert status == 200
        import json

        meta = json.loads(headers["x-live"])
        assert meta["detection"] == "full" and meta["faces"], meta
        live.viewer_timeout_s = 0.2
        time.sleep(0.3)
        assert not live.wanted


def test_overlay_draws_a_real_thermal_frame_registered_and_beside(shared_data, tmp_path):
    """A Lepton 3.5 kiosk frame (heated reference disc in view) over a demo frame: blended in
    through a homography, or in the corner without one; the reference is marked."""
    from pathlib import Path

    import numpy as np

    from kiosk.detect import Box
    from kiosk.thermal.convert import rotate
    from kiosk.thermal.measure import FaceThermometer, MeasureSettings, ReferenceTracker
    from kiosk.thermal.sources import load_recording
    from kiosk.web import overlay
    from kiosk.web.live import Face, Snapshot, ThermalView

    frames = load_recording(shared_data / "thermal/feverscreen_lepton35/testr.npz")
    thermometer = FaceThermometer(MeasureSettings(), ReferenceTracker("auto", 36.6))
    for celsius in frames[:10]:  # the auto reference locks after a few frames
        celsius = rotate(celsius, 1)
        thermometer.prepare(celsius)
    disc = thermometer.reference.disc
    assert disc is not None
    image = demo_frame().image
    h = np.array([[120 / 640, 0, 0], [0, 160 / 480, 0], [0, 0, 1]])
    shots = Path(os.environ.get("KIOSK_WEB_SCREENSHOTS", tmp_path))
    for name, homography in (("registered", h), ("beside", None)):
        view = ThermalView(celsius, homography, disc, thermometer.reference.last_reading_c)
        snapshot = Snapshot(1, image, [Face(3, Box(250, 100, 130, 130), 36.4, "ok")], None, 60,
                            "full", [], "moving", view)  # fmt: skip
        drawn = overlay.draw(snapshot)
        assert drawn.shape == image.shape and not np.shares_memory(drawn, image)
        changed = np.abs(drawn.astype(int) - image.astype(int)).sum(axis=2) > 30
        if homography is not None:
            assert changed.mean() > 0.5  # the whole frame is covered by the thermal view
        else:
            assert changed[: 160 * 640 // 3 // 120, -640 // 3 :].mean() > 0.5  # top right
            assert changed[300:, :300].mean() < 0.2
        assert cv2.imwrite(str(shots / f"overlay-{name}.png"), drawn)


def test_the_web_package_imports_no_collector_and_the_daemon_no_flask():
    """kiosk/web/ stands beside the central collector, never on it; Flask loads only when
    kioskd turns the page on (a lazy import in kiosk/service.py)."""
    from tests.test_layout import KIOSK, imports

    for path in (KIOSK / "web").rglob("*.py"):
        assert not {i for i in imports(path) if i.startswith("kiosk.central")}, path
    import ast

    tree = ast.parse((KIOSK / "service.py").read_text())
    top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names} | {
        n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module
    }
    assert not {m for m in top if m.startswith(("flask", "kiosk.web"))}, top


def test_a_request_flood_is_closed_on_accept(store, db_path, monkeypatch):
    monkeypatch.setattr(web_server, "REQUESTS_PER_S", 5.0)
    monkeypatch.setattr(web_server, "REQUESTS_BURST", 10)
    with make_server(db_path) as server:
        answered = 0
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                s.sendall(b"GET /nope HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                try:
                    answered += s.recv(20).startswith(b"HTTP/1.0 404")
                except ConnectionResetError:
                    pass
        # The burst, and what refilled meanwhile (each refusal pauses the accept loop 50 ms).
        assert 10 <= answered < 30, answered
        time.sleep(0.5)
        assert get(server, "/api/health")[0] == 200
