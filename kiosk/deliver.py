"""`kiosk-report nightly`: yesterday's report where the store manager will see it.

Writes the day's CSV, a PNG chart and a one-page HTML summary into ``report.folder`` (a share
the store mounts, or ``<state_dir>/reports``), then, when ``report.email.to`` is set, e-mails
them through SMTP with the standard library. The SMTP password comes from an environment
variable, a file or the systemd credential ``smtp_password``, and is registered with the log
scrubber before it is used, so no error message can carry it. The files are written before
any e-mail is tried: a mail server that is down loses nothing.
"""

from __future__ import annotations

import base64
import html
import io
import smtplib
import socket
import ssl
import sys
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from zoneinfo import ZoneInfo

from kiosk import report
from kiosk.config import ConfigError, EmailConfig, ReportConfig, read_secret
from kiosk.labels import AGE_GROUPS, AGE_SPANS, GENDERS
from kiosk.logsetup import scrub
from kiosk.periods import PeriodCounts, count_periods
from kiosk.store import Store


class DeliveryError(Exception):
    """The files were written, but the e-mail did not go out."""


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    data: bytes
    mime: str  # "text/csv"


def file_names(day: date, device_id: str | None) -> dict[str, str]:
    """Names in the folder; the device id is in them, so doors can share one folder."""
    tail = f"{day.isoformat()}-{device_id}" if device_id else day.isoformat()
    return {
        "csv": f"daily-{tail}.csv",
        "chart": f"chart-{tail}.png",
        "html": f"summary-{tail}.html",
    }


def subject(t: PeriodCounts, device_id: str | None) -> str:
    where = f" at {device_id}" if device_id else ""
    return f"Visitors{where} on {t.bucket.day:%a %Y-%m-%d}: {t.total}"


def summary_html(t: PeriodCounts, device_id: str | None, chart_src: str | None) -> str:
    """One page: the chart and the totals. `chart_src` is a data: URI (file) or cid: (mail)."""
    e = html.escape
    rows = [("visitors", t.total)] + [(g, t.by_gender(g)) for g in GENDERS]
    rows += [(f"age {a} ({s})", t.by_age(a)) for a, s in zip(AGE_GROUPS, AGE_SPANS, strict=True)]
    rows += [("failed temperature checks", t.checks["fail"])]
    rows += [("unmeasured temperature checks", t.checks["unmeasured"])]
    cells = "".join(f"<tr><td>{e(k)}</td><td align=right>{v}</td></tr>" for k, v in rows)
    alt = "visitors by age group and gender"
    img = f'<p><img src="{e(chart_src)}" alt="{alt}"></p>' if chart_src else ""
    return (
        f"<!doctype html><meta charset=utf-8><title>{e(subject(t, device_id))}</title>"
        f"<body style='font-family:sans-serif'><h1>{e(subject(t, device_id))}</h1>"
        f"{img}<table>{cells}</table>"
        "<p>Age groups are the model's estimate; in brackets the ages each one counts. "
        "People whose temperature check failed or could not be measured are counted apart, "
        "not among the visitors.</p></body>\n"
    )


def summary_text(t: PeriodCounts, device_id: str | None, names: list[str], folder: Path) -> str:
    genders = ", ".join(f"{g} {t.by_gender(g)}" for g in GENDERS)
    ages = ", ".join(f"{a}: {t.by_age(a)}" for a in AGE_GROUPS)
    return (
        f"{subject(t, device_id)}\n\n{genders}\nage groups (years) {ages}\n"
        f"temperature checks (not visitors) failed {t.checks['fail']}, "
        f"unmeasured {t.checks['unmeasured']}\n\n"
        f"Attached: {', '.join(names)} (also in {folder}).\n"
    )


def build_message(
    cfg: EmailConfig, t: PeriodCounts, device_id: str | None, files: list[Attachment], folder: Path
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject(t, device_id)
    msg["From"] = cfg.sender or cfg.username
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=socket.gethostname() or "kiosk")
    msg.set_content(summary_text(t, device_id, [f.name for f in files], folder))
    chart = next((f for f in files if f.mime == "image/png"), None)
    cid = make_msgid()
    page_html = summary_html(t, device_id, f"cid:{cid[1:-1]}" if chart else None)
    msg.add_alternative(page_html, subtype="html")
    page = msg.get_body(("html",))
    if chart and page is not None:
        page.add_related(chart.data, "image", "png", cid=cid)
    for f in files:
        maintype, subtype = f.mime.split("/")
        msg.add_attachment(f.data, maintype=maintype, subtype=subtype, filename=f.name)
    return msg


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def read_password(cfg: EmailConfig) -> str | None:
    return read_secret(
        cfg.password_env, cfg.password_file, "smtp_password", "report.email.password_file"
    )


def send(cfg: EmailConfig, password: str | None, msg: EmailMessage) -> None:
    """One SMTP session: TLS as configured, login when a username is set, the message."""
    context = ssl.create_default_context(cafile=cfg.ca_file or None)
    where = f"{cfg.smtp_host}:{cfg.smtp_port}"
    try:
        if cfg.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s)
        with smtp:
            if cfg.security == "starttls":
                smtp.starttls(context=context)
            if cfg.username:
                smtp.login(cfg.username, password or "")
            refused = smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(
            f"{where} refused the login of {cfg.username!r} ({exc.smtp_code}); check the "
            f"password from ${cfg.password_env or '-'}, report.email.password_file or the "
            "smtp_password credential"
        ) from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        hint = ""
        if isinstance(exc, PermissionError) or "not permitted" in str(exc):  # IPAddressDeny=
            hint = " (under systemd: IPAddressAllow= in kiosk-report.service, docs/report.md)"
        raise DeliveryError(f"cannot send through {where}: {scrub(str(exc))}{hint}") from None
    if refused:
        raise DeliveryError(f"{where} refused these recipients: {', '.join(refused)}")


def nightly(
    store: Store, day: date, tz: ZoneInfo, device_id: str | None, cfg: ReportConfig, folder: Path
) -> int:
    """Write the day's files into `folder`, then e-mail them; 0 when all of it worked."""
    (t,) = count_periods(store, [day], tz, "day", device_id)
    names = file_names(day, device_id)
    text = io.StringIO()
    report.write_table(text, report.PERIOD_COLUMNS, report.period_records([t], tz), "csv")
    files = [Attachment(names["csv"], text.getvalue().encode("utf-8"), "text/csv")]
    code = 0
    if cfg.chart:
        png = io.BytesIO()
        try:
            report.render_chart(t, device_id, png)
            files.append(Attachment(names["chart"], png.getvalue(), "image/png"))
        except report.InputError as exc:
            say(f"error: no chart: {exc}")
            code = 1
    chart = next((f.data for f in files if f.mime == "image/png"), None)
    page = summary_html(t, device_id, data_uri(chart) if chart else None).encode("utf-8")
    written = [*files, Attachment(names["html"], page, "text/html")]
    for f in written:
        with report.open_output(str(folder / f.name), binary=True) as out:
            out.write(f.data)
    print(f"kiosk-report: wrote {', '.join(f.name for f in written)} into {folder}")
    if not cfg.email.to:
        return code
    try:
        password = read_password(cfg.email)
    except ConfigError as exc:
        raise report.InputError(f"config {exc}") from None
    try:
        send(cfg.email, password, build_message(cfg.email, t, device_id, files, folder))
    except DeliveryError as exc:
        say(f"error: e-mail not sent: {exc}")
        return 1
    print(f"kiosk-report: e-mailed them to {', '.join(cfg.email.to)}")
    return code


def say(text: str) -> None:
    print(f"kiosk-report: {text}", file=sys.stderr)
