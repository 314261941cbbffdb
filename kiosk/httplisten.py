"""HTTP listeners that a hostile client cannot use to exhaust the daemon: the external gate's
(`BoundedHTTPServer`) and, through the two mixins, the metrics endpoint's.

Bounds, per connection: the request head and body together (`MAX_REQUEST_BYTES`, read through a
capped reader, so neither a 64 kB request line nor a hundred long headers are buffered), a
`Content-Length` that must be a plain number no larger than the body limit (a missing, negative
or non-numeric one is refused before anything is read), and a deadline for the whole request
(`MAX_REQUEST_S`; a slow client is cut off by the accept loop, no timer thread). In all: at most
`MAX_CONNECTIONS` at once; more are closed on accept. One request per connection (HTTP/1.0).
Errors inside a handler are logged (rate-limited), never printed or raised into the daemon.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kiosk.limits import LogEvery

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
# Request line and headers of any real client fit in 2 kB; 8 kB leaves room.
MAX_HEAD_BYTES = 8192
MAX_REQUEST_BYTES = MAX_HEAD_BYTES + MAX_BODY_BYTES
MAX_REQUEST_S = 5.0
MAX_CONNECTIONS = 8

#: A handler gets the body and returns (HTTP status, JSON reply).
BodyHandler = Callable[[bytes], tuple[int, dict[str, Any]]]


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _CappedReader:
    """The connection's read side with a byte budget: once spent, reads return b''."""

    def __init__(self, raw: Any, budget: int) -> None:
        self._raw, self._left = raw, budget

    def readline(self, limit: int = -1) -> bytes:
        n = self._left if limit < 0 else min(limit, self._left)
        line = self._raw.readline(n) if n > 0 else b""
        self._left -= len(line)
        return line

    def read(self, size: int) -> bytes:
        n = min(size, self._left)
        data = self._raw.read(n) if n > 0 else b""
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._raw.close()


def parse_length(value: str | None) -> int | None:
    """Content-Length as a byte count, or None when it is missing or not a plain number."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 9:
        return None
    return int(value.strip())


class CappedRequest:
    """Handler mixin: the connection's read side is capped at MAX_REQUEST_BYTES."""

    rfile: Any

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        self.rfile = _CappedReader(self.rfile, MAX_REQUEST_BYTES)


class BoundedConnections:
    """Server mixin (before a ThreadingMixIn server): at most `max_connections` at once, more
    closed on accept; each cut off `max_request_s` after it was accepted, by the accept loop."""

    name = "http"
    max_connections = MAX_CONNECTIONS
    max_request_s = MAX_REQUEST_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._active: dict[socket.socket, float] = {}
        self._active_lock = threading.Lock()
        self._errors = LogEvery(log, logging.WARNING)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = len(self._active) >= self.max_connections
            if not full:
                self._active[request] = time.monotonic()
        if full:
            self._errors("%s: more than %d connections at once; one refused", self.name,
                         self.max_connections)  # fmt: skip
            self.shutdown_request(request)
            return
        request.settimeout(self.max_request_s)
        super().process_request(request, client_address)  # type: ignore[misc]

    def shutdown_request(self, request: Any) -> None:
        with self._active_lock:
            self._active.pop(request, None)
        super().shutdown_request(request)  # type: ignore[misc]

    def service_actions(self) -> None:
        """From the accept loop (every 0.5 s): cut off requests past their deadline."""
        now = time.monotonic()
        with self._active_lock:
            late = [s for s, t0 in self._active.items() if now - t0 > self.max_request_s]
        for sock in late:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        self._errors("%s: request from %s failed: %r", self.name, client_address[0], exc)


class _Handler(CappedRequest, BaseHTTPRequestHandler):
    server: BoundedHTTPServer

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        if self.headers.get("Transfer-Encoding"):
            self._reply(411, {"error": "send the body with a Content-Length, not chunked"})
            return
        length = parse_length(self.headers.get("Content-Length"))
        if length is None:
            self._reply(411, {"error": "Content-Length must be a number of bytes"})
            return
        if length > MAX_BODY_BYTES:
            self._reply(413, {"error": f"body too large (at most {MAX_BODY_BYTES} bytes)"})
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self._reply(400, {"error": "body shorter than Content-Length"})
            return
        self._reply(*self.server.on_body(body))

    def _reply(self, code: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug(f"{self.server.name}: " + fmt, *args)


class BoundedHTTPServer(BoundedConnections, ThreadingHTTPServer):
    """POST bodies go to `on_body` on a worker thread; see the module docstring for bounds."""

    daemon_threads = True

    def __init__(self, host: str, port: int, name: str, on_body: BodyHandler) -> None:
        self.name, self.on_body = name, on_body
        super().__init__((host, port), _Handler)

    def start(self) -> int:
        """Serve on a daemon thread; returns the port (useful with port 0)."""
        threading.Thread(target=self.serve_forever, name=self.name, daemon=True).start()
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()
