"""The pages and the JSON API (Flask routes); the server around them is kiosk/web/server.py.

Every GET only reads. The only POSTs are login and logout, both CSRF-checked. No response but
the live view's frame ever carries an image of the entrance; the live routes exist only with
`web.live_view`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, session
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from kiosk import __version__
from kiosk.days import local_day, yesterday
from kiosk.health import Health, health_payload
from kiosk.limits import LogEvery
from kiosk.report import InputError, parse_day
from kiosk.store import Store
from kiosk.web import overlay
from kiosk.web.auth import Guard
from kiosk.web.live import LiveView, Snapshot
from kiosk.web.reports import BadRequest, Download, chart_png, counts_csv
from kiosk.web.today import page_payload, today, totals_payload

log = logging.getLogger("kioskd")

MAX_BODY_BYTES = 4096  # a login form
# How long a live frame request waits for the next camera frame before answering 204.
LIVE_WAIT_S = 2.0
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
OPEN_ENDPOINTS = ("login", "login_post", "static")


@dataclass(frozen=True, slots=True)
class Site:
    """What the pages read: the store (read-only), where and when, the daemon's health."""

    store: Store
    device_id: str
    tz: ZoneInfo
    health: Callable[[], Health]
    live: LiveView | None
    guard: Guard


def create_app(site: Site) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.urandom(32),
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_BODY_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="kiosk_session",
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # age groups in their order
    _guards(app, site)
    _pages(app, site)
    _api(app, site)
    _reports(app, site)
    if site.live is not None:
        _live(app, site, site.live)
    _errors(app)
    return app


def _guards(app: Flask, site: Site) -> None:
    guard = site.guard
    failed_login = LogEvery(log, logging.WARNING)  # a password-guessing script: a line a minute

    @app.before_request
    def check() -> Any:
        if not guard.host_allowed(request):
            abort(421)  # Misdirected Request: a name that is not this board's loopback
        if request.method == "POST" and not guard.csrf_ok(request):
            abort(403)
        if request.endpoint not in OPEN_ENDPOINTS and not guard.signed_in():
            if request.path.startswith("/api/") or request.path.startswith("/live/"):
                abort(401)
            return redirect("/login")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.context_processor
    def common() -> dict[str, Any]:
        return {
            "device_id": site.device_id,
            "timezone": str(site.tz),
            "live_enabled": site.live is not None,
            "login_enabled": guard.password is not None,
            "csrf_token": guard.csrf_token,
            "version": __version__,
        }

    @app.get("/login")
    def login() -> Any:
        if guard.password is None:
            return redirect("/today")
        return render_template("login.html", failed=False)

    @app.post("/login")
    def login_post() -> Any:
        if guard.check_password(request.form.get("password", "")):
            session.clear()
            session["auth"] = True
            return redirect("/today", 303)
        failed_login("web: failed login from %s", request.remote_addr)
        return render_template("login.html", failed=True), 403

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect("/login", 303)


def _pages(app: Flask, site: Site) -> None:
    @app.get("/")
    def index() -> Any:
        return redirect("/today")

    @app.get("/today")
    def today_page() -> str:
        return render_template("today.html", page="today")

    @app.get("/health")
    def health_page() -> str:
        return render_template("health.html", page="health")

    @app.get("/reports")
    def reports_page() -> str:
        return render_template(
            "reports.html",
            page="reports",
            yesterday=yesterday(site.tz),
            today=local_day(datetime.now(UTC), site.tz),
        )


def _api(app: Flask, site: Site) -> None:
    @app.get("/api/today")
    def api_today() -> Response:
        return jsonify(totals_payload(today(site.store, site.device_id, site.tz)))

    @app.get("/api/today/page")
    def api_today_page() -> Response:
        return jsonify(page_payload(today(site.store, site.device_id, site.tz)))

    @app.get("/api/health")
    def api_health() -> Response:
        return jsonify(health_payload(site.health()))


def _day_arg(name: str, default: date | None = None) -> date:
    text = request.args.get(name)
    if text is None and default is not None:
        return default
    try:
        return parse_day(text or "")
    except argparse.ArgumentTypeError as exc:
        abort(Response(f"{name}: {exc}\n", 400, mimetype="text/plain"))


def _by_arg() -> str:
    by = request.args.get("by", "day")
    if by not in ("day", "hour"):
        abort(Response("by: must be day or hour\n", 400, mimetype="text/plain"))
    return by


def _download(made: Download) -> Response:
    response = Response(made.body, mimetype=made.mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{made.filename}"'
    return response


def _reports(app: Flask, site: Site) -> None:
    @app.get("/reports/daily.csv")
    def daily_csv() -> Response:
        day = _day_arg("date", yesterday(site.tz))
        return _download(counts_csv(site.store, day, day, _by_arg(), site.tz, site.device_id))

    @app.get("/reports/range.csv")
    def range_csv() -> Response:
        first, last = _day_arg("from"), _day_arg("to")
        try:
            made = counts_csv(site.store, first, last, _by_arg(), site.tz, site.device_id)
        except BadRequest as exc:
            abort(Response(f"{exc}\n", 400, mimetype="text/plain"))
        return _download(made)

    @app.get("/reports/chart.png")
    def chart() -> Response:
        day = _day_arg("date", yesterday(site.tz))
        try:
            made = chart_png(site.store, day, site.tz, site.device_id)
        except InputError as exc:  # matplotlib (the chart extra) is not installed
            abort(Response(f"{exc}\n", 503, mimetype="text/plain"))
        if request.args.get("inline"):
            return Response(made.body, mimetype=made.mimetype)
        return _download(made)


def live_meta(snapshot: Snapshot) -> dict[str, Any]:
    """What the live page prints beside the frame."""
    thermal = snapshot.thermal
    return {
        "seq": snapshot.seq,
        "detection": snapshot.detection,
        "motion": snapshot.motion,
        "faces": [
            {"track": f.track_id, "w": f.box.w, "temperature_c": f.temperature_c,
             "reading": f.reading}
            for f in snapshot.faces
        ],
        "thermal": None if thermal is None else (
            "registered" if thermal.homography is not None else "beside (not registered)"
        ),
        "reference_c": None if thermal is None else thermal.reference_c,
        "min_size_px": snapshot.min_size_px,
        "roi": snapshot.roi is not None,
    }  # fmt: skip


def _live(app: Flask, site: Site, live: LiveView) -> None:
    @app.get("/live")
    def live_page() -> str:
        live.opened(request.remote_addr or "?")
        return render_template("live.html", page="live")

    @app.get("/live/frame.jpg")
    def live_frame() -> Response:
        try:
            after = int(request.args.get("after", "0"))
        except ValueError:
            abort(400)
        snapshot = live.next_snapshot(after, LIVE_WAIT_S)
        if snapshot is None:
            return Response(status=204)
        response = Response(overlay.jpeg(overlay.draw(snapshot)), mimetype="image/jpeg")
        response.headers["X-Live"] = json.dumps(live_meta(snapshot), separators=(",", ":"))
        return response


def _errors(app: Flask) -> None:
    failures = LogEvery(log, logging.ERROR)

    @app.errorhandler(SQLAlchemyError)
    def database(exc: SQLAlchemyError) -> tuple[str, int]:
        failures("web: database read failed: %s", exc.__class__.__name__)
        return "the database is busy or unreadable; try again\n", 503

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            return exc
        failures("web: %s %s failed: %r", request.method, request.path, exc)
        return "internal error (logged)\n", 500
