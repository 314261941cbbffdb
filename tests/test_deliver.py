"""`kiosk-report nightly` against a real SMTP server (aiosmtpd, STARTTLS with a certificate
made here, AUTH): the files land in the configured folder, the e-mail carries them, the
password comes from a systemd-style credential and reaches no output."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import socket
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kiosk.store import Store
from tests.conftest import new_visit

aiosmtpd = pytest.importorskip("aiosmtpd", reason="the test extra's aiosmtpd is not installed")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse 7"
TZ = ZoneInfo("Europe/Berlin")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"door-a@store.example", PASSWORD.encode(),
    )  # fmt: skip
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def smtp_server(certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=_authenticate, auth_require_tls=True,
        # smtplib tries LOGIN after a refused PLAIN, and aiosmtpd 1.4 then waits for a
        # username that smtplib already sent: offer PLAIN only.
        auth_exclude_mechanism=["LOGIN"],
    )  # fmt: skip
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _door(tmp_path: Path, port: int, cert: Path) -> tuple[Path, Path, datetime]:
    """A database with yesterday's visits and a config for the nightly report."""
    state, share = tmp_path / "state", tmp_path / "share"
    yesterday = datetime.now(TZ).date() - timedelta(days=1)
    noon = datetime.combine(yesterday, datetime.min.time(), tzinfo=TZ).replace(hour=12)
    store = Store(f"sqlite:///{state / 'kiosk.db'}")
    for i, (age, gender) in enumerate([("8-12", "female"), ("25-32", "male"), ("25-32", "male")]):
        at = (noon + timedelta(minutes=i)).astimezone(UTC)
        store.add_visit(new_visit(at, age, gender, "door-a"))
    store.close()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"device_id: door-a\ntimezone: Europe/Berlin\nstate_dir: {state}\n"
        f"report:\n  folder: {share}\n  email:\n"
        "    to: [manager@store.example, owner@store.example]\n"
        f"    smtp_host: 127.0.0.1\n    smtp_port: {port}\n    ca_file: {cert}\n"
        "    username: door-a@store.example\n    password_env: KIOSK_TEST_NO_SUCH_VAR\n"
        "    timeout_s: 10\n"
    )
    return config, share, noon


def _nightly(config: Path, credentials: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    return subprocess.run(
        [sys.executable, "-m", "kiosk.report", "nightly", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip


def test_nightly_writes_the_folder_and_mails_the_files(tmp_path, smtp_server, certificate):
    inbox, port = smtp_server
    config, share, noon = _door(tmp_path, port, certificate[0])
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "smtp_password").write_text(PASSWORD + "\n")

    r = _nightly(config, creds)
    assert r.returncode == 0, r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    day = noon.date().isoformat()
    names = {f"daily-{day}-door-a.csv", f"chart-{day}-door-a.png", f"summary-{day}-door-a.html"}
    assert {p.name for p in share.iterdir()} == names
    csv_file = (share / f"daily-{day}-door-a.csv").read_bytes()
    assert (share / f"chart-{day}-door-a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (share / f"summary-{day}-door-a.html").read_text()

    assert len(inbox.messages) == 1
    sender, recipients, raw = inbox.messages[0]
    assert sender == "door-a@store.example"
    assert recipients == ["manager@store.example", "owner@store.example"]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == f"Visitors at door-a on {noon:%a} {day}: 3"
    attached = {p.get_filename(): p.get_content() for p in msg.iter_attachments()}
    assert attached[f"daily-{day}-door-a.csv"].encode() == csv_file
    assert attached[f"chart-{day}-door-a.png"][:4] == b"\x89PNG"
    body = msg.get_body(("plain",)).get_content()
    assert "female 1, male 2" in body and str(share) in body
    html = msg.get_body(("html",))
    assert "cid:" in html.get_content()


def test_a_refused_login_fails_the_unit_but_keeps_the_files(tmp_path, smtp_server, certificate):
    inbox, port = smtp_server
    config, share, _ = _door(tmp_path, port, certificate[0])
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "smtp_password").write_text("wrong password 8\n")

    r = _nightly(config, creds)
    assert r.returncode == 1
    assert "refused the login of 'door-a@store.example'" in r.stderr
    assert "wrong password 8" not in r.stdout + r.stderr
    assert len(list(share.iterdir())) == 3 and inbox.messages == []


def test_no_password_over_plain_smtp(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "report:\n  email:\n    to: [m@store.example]\n    smtp_host: relay\n"
        "    security: none\n    username: door@store.example\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "kiosk.service", "--check-config", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 78
    assert "report.email.security: a password is never sent without TLS" in r.stderr
