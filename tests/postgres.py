"""A real PostgreSQL for tests: a fresh database per test, and a TCP proxy in front of the
server that can be stopped (connections refused, open ones cut) and started again.

The server is ``$KIOSK_TEST_PG`` (default postgresql://postgres@127.0.0.1:5432/test, trust
auth); .ci/run installs and starts one where none runs.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import URL, make_url

from tests.broker import free_port

ADMIN_URL = os.environ.get("KIOSK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin():
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (kioskd[central])")
    u = make_url(ADMIN_URL)
    try:
        return psycopg.connect(
            host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
            password=u.password, autocommit=True, connect_timeout=3,
        )  # fmt: skip
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {u.host}:{u.port} ({exc}); .ci/run starts one")


@contextmanager
def fresh_database() -> Iterator[URL]:
    """A new, empty database (dropped afterwards), so parallel runs never meet."""
    name = f"kiosk_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class TcpProxy:
    """127.0.0.1:<port> forwarded to `target`; stop() refuses new connections and cuts the
    open ones, as a database server that went away would."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = threading.Event()

    def start(self) -> TcpProxy:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        self._running.set()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        ls = self._listener
        assert ls is not None
        while self._running.is_set():
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select(1.0):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                s.close()

    def stop(self) -> None:
        self._running.clear()
        if self._listener is not None:
            try:  # wakes the blocked accept() (close alone would leave it listening)
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if self._thread is not None:
            self._thread.join(2)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
