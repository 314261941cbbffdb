"""The web page's server: a long-lived part of kioskd, on threads of the daemon's process.

Flask (routing, Jinja2 templates with autoescaping) runs under a threaded WSGI server built
on the project's bounded listener (kiosk/httplisten.py, as the metrics endpoint): at most
`MAX_CONNECTIONS` at once, `MAX_REQUEST_S` per request from accept to the last byte, 12 kB
of request head and body. Each connection gets a thread; the frame loop never waits for one
(they share nothing but the live view's hand-over and plain counters). The pages read
through their own read-only Store, so no page query can write or hold the writer's lock.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from zoneinfo import ZoneInfo

from kiosk.config import ConfigError, WebConfig, read_secret
from kiosk.health import Health
from kiosk.httplisten import BoundedConnections, CappedRequest, is_loopback
from kiosk.lifecycle import Part
from kiosk.limits import LogEvery, TokenBucket
from kiosk.store import Store
from kiosk.web.auth import Guard
from kiosk.web.live import LiveView

log = logging.getLogger("kioskd")

# A browser opens up to 6 connections to load a page; two viewers at once fit.
MAX_CONNECTIONS = 16
# The first chart loads matplotlib (1-2 s here, longer on a Pi 4).
MAX_REQUEST_S = 15.0
# A page load is about 7 requests, a live viewer 10 a second, Today and Health one every few
# seconds: one live viewer and page loads beside it fit.
REQUESTS_PER_S, REQUESTS_BURST = 25.0, 50
# After refusing one, the accept loop pauses this long: a client that reconnects as fast as it
# is closed would otherwise keep it spinning (45 % of a core here); meanwhile the kernel's
# backlog holds or drops new connections at no cost to kioskd. (Web threads at nice +10 were
# tried and measured worse: a thread holding the GIL while the kernel makes it wait stalls
# the frame loop; docs/web.md.)
REFUSED_PAUSE_S = 0.05


class _Handler(CappedRequest, WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """One line per request would fill the journal of a page that polls."""


class _Server(BoundedConnections, ThreadingMixIn, WSGIServer):
    """At most REQUESTS_PER_S on average: a flood is closed on accept, which costs the daemon
    far less than answering it (measured in docs/web.md)."""

    name = "web"
    daemon_threads = True
    max_connections = MAX_CONNECTIONS
    max_request_s = MAX_REQUEST_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._rate = TokenBucket(REQUESTS_PER_S, REQUESTS_BURST)
        self._flood = LogEvery(log, logging.WARNING)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._rate.take():
            self._flood("web: more than %g requests a second; refusing some", REQUESTS_PER_S)
            self.shutdown_request(request)
            time.sleep(REFUSED_PAUSE_S)
            return
        super().process_request(request, client_address)


def _bind(host: str, port: int, app: Any) -> _Server:
    class Server(_Server):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return make_server(host, port, app, Server, handler_class=_Handler)


def web_password(cfg: WebConfig) -> str | None:
    """The password (environment, file or credential); ConfigError when a non-loopback
    address has none, so kioskd exits 78 naming web.password."""
    password = read_secret(cfg.password_env, cfg.password_file, "web_password", "web.password_file")
    if not password and not is_loopback(cfg.host):
        why = (
            f"web.host {cfg.host} is reachable from the network and needs a password: put it in "
            f"web.password_file, ${cfg.password_env} or the credential web_password"
        )
        raise ConfigError("web.password", why)
    return password or None


class WebServer(Part):
    """kioskd's web page: `start()` binds and serves, `close()` (idempotent) frees the port."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str | None,
        database_url: str,
        device_id: str,
        tz: ZoneInfo,
        health: Callable[[], Health],
        live: LiveView | None,
    ) -> None:
        self.host, self.port = host, port
        self.password = password
        self.database_url = database_url
        self.device_id, self.tz = device_id, tz
        self.health = health
        self.live = live
        self._server: _Server | None = None
        self._store: Store | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls,
        cfg: WebConfig,
        database_url: str,
        device_id: str,
        tz: ZoneInfo,
        health: Callable[[], Health],
    ) -> WebServer:
        """The server of the `web` section; the live view only with `web.live_view`."""
        live = LiveView() if cfg.live_view else None
        password = web_password(cfg)
        return cls(cfg.host, cfg.port, password, database_url, device_id, tz, health, live)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> Self:
        """Open the read-only store, bind and serve on a daemon thread (OSError when the port
        cannot be had). Port 0 picks a free one (see `port`)."""
        if self._server is not None:
            return self
        from kiosk.web.app import Site, create_app  # Flask loads only when the page is on

        self._store = Store(self.database_url, read_only=True, create=False)
        guard = Guard(self.password, loopback_only=self.password is None)
        site = Site(self._store, self.device_id, self.tz, self.health, self.live, guard)
        try:
            self._server = _bind(self.host, self.port, create_app(site))
        except BaseException:
            self._store.close()
            self._store = None
            raise
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="web", daemon=True)
        self._thread.start()
        login = "with a password" if self.password else "no password: this board only"
        live = ", live view on" if self.live is not None else ""
        log.info("web page on %s (%s%s)", self.url, login, live)
        return self

    def close(self) -> None:
        """Stop serving and free the port; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._store is not None:
            self._store.close()
            self._store = None
