"""A real mosquitto broker for tests: a temp config, a free loopback port, start/stop/restart.

Usage::

    from tests.broker import Broker, Subscriber, needs_mosquitto

    @needs_mosquitto
    def test_x(tmp_path):
        with Broker(tmp_path) as broker:
            with Subscriber(broker.port, ["kiosk/#"]) as sub:
                ...
                sub.wait_for(lambda msgs: len(msgs) >= 1, timeout=5)

Also: ``add_user`` (a mosquitto password file, via mosquitto_passwd when present, else the
same PBKDF2-SHA512 hash written here) and ``make_tls_files`` (a CA, a server certificate for
localhost/127.0.0.1 and a client certificate, via the ``cryptography`` package).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest


def _find_mosquitto() -> str | None:
    for candidate in (os.environ.get("MOSQUITTO", ""), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mosquitto")


MOSQUITTO = _find_mosquitto()
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None,
    reason="mosquitto is not installed (apt-get install -y mosquitto; .ci/run installs it)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_folder(cls, folder: Path) -> TlsFiles:
        return cls(
            ca=folder / "ca.crt",
            server_cert=folder / "server.crt",
            server_key=folder / "server.key",
            client_cert=folder / "client.crt",
            client_key=folder / "client.key",
        )


def make_tls_files(folder: Path, hostname: str = "localhost") -> TlsFiles:
    """A throwaway CA, a server cert (SAN hostname + 127.0.0.1) and a client cert; made with
    the ``cryptography`` package when it is installed, else with the openssl CLI."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if not shutil.which("openssl"):
            pytest.skip("neither the cryptography package nor the openssl CLI is available")
        return _make_tls_files_openssl(folder, hostname)
    return _make_tls_files_cryptography(folder, hostname)


def _make_tls_files_openssl(folder: Path, hostname: str) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles.in_folder(folder)
    ca_key = folder / "ca.key"

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    def ec_key(path: Path) -> None:
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))

    ec_key(ca_key)
    ca_ext = folder / "ca.ext"
    ca_ext.write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[v3_ca]\nbasicConstraints=critical,CA:TRUE\n"
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier=hash\n"
    )
    run("req", "-x509", "-new", "-key", str(ca_key), "-subj", "/CN=kiosk test CA", "-days", "1",
        "-config", str(ca_ext), "-extensions", "v3_ca", "-out", str(files.ca))  # fmt: skip

    def leaf(cn: str, key: Path, cert: Path, ext: str) -> None:
        ec_key(key)
        csr = cert.with_suffix(".csr")
        run("req", "-new", "-key", str(key), "-subj", f"/CN={cn}", "-out", str(csr))
        extfile = cert.with_suffix(".ext")
        extfile.write_text(
            "basicConstraints=critical,CA:FALSE\nauthorityKeyIdentifier=keyid\n" + ext
        )
        ca = ("-CA", str(files.ca), "-CAkey", str(ca_key), "-CAcreateserial")
        run("x509", "-req", "-in", str(csr), *ca, "-days", "1", "-extfile", str(extfile),
            "-out", str(cert))  # fmt: skip

    leaf(hostname, files.server_key, files.server_cert,
         f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{hostname},IP:127.0.0.1\n")  # fmt: skip
    leaf("kiosk-client", files.client_key, files.client_cert, "extendedKeyUsage=clientAuth\n")
    return files


def _make_tls_files_cryptography(folder: Path, hostname: str) -> TlsFiles:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("kiosk test CA"))
        .issuer_name(name("kiosk test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage, sans: list[x509.GeneralName] | None):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, b.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(
        hostname,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = leaf("kiosk-client", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    files = TlsFiles.in_folder(folder)
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    write_key(server_key, files.server_key)
    write_key(client_key, files.client_key)
    return files


def add_user(password_file: Path, username: str, password: str) -> None:
    """Add a user to a mosquitto password file."""
    tool = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if os.access("/usr/bin/mosquitto_passwd", os.X_OK) else None
    )
    if tool:
        args = [tool, "-b"] + ([] if password_file.exists() else ["-c"])
        subprocess.run(
            [*args, str(password_file), username, password],
            check=True,
            capture_output=True,
            timeout=10,
        )
        return
    # mosquitto 2.x "$7$" format: PBKDF2-HMAC-SHA512, 101 iterations, base64 salt and hash.
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    line = (
        f"{username}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )
    with password_file.open("a") as f:
        f.write(line + "\n")


class Broker:
    """A mosquitto on 127.0.0.1:<free port>, configured from a temp file under ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        password_file: Path | None = None,
        tls: TlsFiles | None = None,
        require_client_cert: bool = False,
        port: int | None = None,
        persistence: bool = False,
    ) -> None:
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.folder / f"mosquitto-{self.port}.conf"
        self.log = self.folder / f"mosquitto-{self.port}.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if password_file else 'true'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.folder}/",
            f"persistence_file mosquitto-{self.port}.db",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would switch to the "mosquitto" user and lose access to the
            # test's private temp files.
            lines.append(f"user {getpass.getuser()}")
        if password_file:
            lines.append(f"password_file {password_file}")
        if tls:
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                f"require_certificate {'true' if require_client_cert else 'false'}",
            ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self._logf = None

    def start(self, timeout: float = 5.0) -> Broker:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=self._logf, stderr=subprocess.STDOUT
        )

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        if not wait_until(listening, timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}:\n{self.log_text()}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._logf:
            self._logf.close()
            self._logf = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Subscriber:
    """A paho client that records every message on some topics (with its retain flag)."""

    def __init__(
        self,
        port: int,
        topics: Iterable[str],
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        client_id: str = "",
        clean_session: bool = True,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.port = port
        self.topics = list(topics)
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
        )
        # Reconnect quickly when a test restarts the broker (a persistent session, with
        # clean_session=False and a broker with persistence, keeps what arrives meanwhile).
        self.client.reconnect_delay_set(0.1, 0.5)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(
                ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key)
            )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append(msg)

    def start(self, timeout: float = 5.0) -> Subscriber:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("subscriber did not get a SUBACK")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def on(self, topic: str) -> list:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def payloads(self, topic: str) -> list[str]:
        return [m.payload.decode() for m in self.on(topic)]

    def wait_for(self, pred: Callable[[Subscriber], object], timeout: float = 5.0) -> bool:
        return wait_until(lambda: pred(self), timeout)
