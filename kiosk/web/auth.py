"""Who may see the pages: the Host check, the password login, and CSRF on every POST.

* Bound to loopback without a password, only requests naming a loopback host are served, so a
  web page elsewhere cannot read this one through DNS rebinding.
* With a password every page but the login needs the session cookie (signed with a key made
  at start, so a restart logs everyone out; HttpOnly, SameSite=Strict). Logins are rate-limited.
* Every POST (login, logout) carries the session's CSRF token and, when the browser sends one,
  an Origin of this server.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import Request, session

from kiosk.limits import TokenBucket

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# A person mistypes a few times; a script trying passwords gets one try a second.
LOGIN_RATE_PER_S, LOGIN_BURST = 1.0, 5


def host_name(header: str) -> str:
    """The host part of a Host header ("[::1]:8080" -> "::1")."""
    return urlsplit(f"//{header}").hostname or ""


class Guard:
    """The rules above for one server; `password` None means no login (loopback only)."""

    def __init__(self, password: str | None, loopback_only: bool) -> None:
        self.password = password
        self.loopback_only = loopback_only
        self.logins = TokenBucket(LOGIN_RATE_PER_S, LOGIN_BURST)

    def host_allowed(self, request: Request) -> bool:
        return not self.loopback_only or host_name(request.host) in LOOPBACK_NAMES

    def signed_in(self) -> bool:
        return self.password is None or session.get("auth") is True

    def check_password(self, given: str) -> bool:
        if self.password is None or not self.logins.take():
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.password.encode("utf-8"))

    @staticmethod
    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return str(session["csrf"])

    @staticmethod
    def csrf_ok(request: Request) -> bool:
        expected = session.get("csrf")
        given = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
        if not expected or not hmac.compare_digest(str(expected), given):
            return False
        origin = request.headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == request.host
