"""E-mail for urgent alerts, and SLT's daily review, from `lockerctl serve --smtp HOST:PORT
--alert-to ADDR[,ADDR...]` (docs/monitoring.md).

`AlertMailer` is a thread of the serve process, with its own store connection; the ingest runs
in a process of its own, so a mail server that is down or slow never holds up an event. Every
second it
1. looks for urgent alerts the host learnt of since its last look (`alerts.URGENT_EVENTS`
   among the events received since `store_alerts.SCAN_BEHIND` seconds before its previous
   look and not yet in `mail_seen`, likewise new `ingest_refusals` rows, urgent conditions
   that began: offline in school hours, clock not set) and queues one message for each in the
   store's `mail_outbox`, in the same transaction that records them as seen
   (`store/alerts.py`): a restart neither loses nor repeats one. It does not follow ids: with
   several ingest workers (`serve --workers`) an event can commit after one with a higher
   id. An alert of the same kind, locker and bay as one queued in the last 10 minutes is
   folded into it (its `repeats` grows; no second message);
2. at `--review-at HH:MM` on a school day, queues the day's review (`review.py`) once;
3. sends what is due, oldest first, one SMTP session per message (STARTTLS and login when
   configured). A failure (refused, timed out after 10 s, rejected) leaves the message queued
   and tries it again after 2, 4, 8... seconds, at most `MAX_BACKOFF` apart; the dashboard
   shows the queue and the last error (`store_alerts.mail_status`, `note`).

Messages name no one: "a pupil" or "a staff member" (e-mail leaves the school's systems); the
link goes to the alert on the dashboard (`--dashboard-url`). The review names pupils: it goes
to `--review-to` (SLT), which defaults to `--alert-to`.

A message is marked sent after the server accepted it: a crash between the two sends it again
at the next start (at least once, never lost).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import smtplib
import socket
import ssl
import stat
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from . import alerts, words
from .display import format_ts
from .store import alerts as store_alerts

log = logging.getLogger("lockerctl.mail")

MAX_BACKOFF = 60  # seconds between tries of a message the server did not take
SMTP_TIMEOUT = 10.0
PASSWORD_ENV = "LOCKER_SMTP_PASSWORD"
_ADDRESS = re.compile(r"^[^@\s,<>\"]{1,64}@[A-Za-z0-9.-]{1,253}$")
_SCAN_LIMIT = 500


class MailSettingsError(ValueError):
    """A mail option that cannot be used: the message is one line for the user."""


@dataclass
class MailSettings:
    host: str
    port: int
    to: list[str]
    sender: str
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    cafile: str | None = None
    dashboard_url: str | None = None
    review_at: tuple[int, int] | None = None
    review_to: list[str] = field(default_factory=list)
    timeout: float = SMTP_TIMEOUT


def parse_addresses(text: str, option: str) -> list[str]:
    """ "a@school.uk,b@school.uk" -> the addresses; MailSettingsError for one that is not a plain
    address (no names, no angle brackets, no spaces or line ends)."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if not _ADDRESS.match(part):
            raise MailSettingsError(f"{option}: {part!r} is not an e-mail address")
        out.append(part)
    if not out:
        raise MailSettingsError(f"{option}: give at least one e-mail address")
    return out


def parse_hhmm(text: str, option: str) -> tuple[int, int]:
    m = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", (text or "").strip())
    if not m:
        raise MailSettingsError(f"{option}: expected a time of day HH:MM, not {text!r}")
    return int(m.group(1)), int(m.group(2))


def load_password(path: str | None) -> str | None:
    """The SMTP password: the first line of `path` (which must not be readable by others:
    0600 or stricter), else `$LOCKER_SMTP_PASSWORD`, else None."""
    if path is None:
        return os.environ.get(PASSWORD_ENV) or None
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            line = f.readline(1025).rstrip("\r\n")
    except FileNotFoundError:
        raise MailSettingsError(f"--smtp-password-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MailSettingsError(f"--smtp-password-file {path}: cannot read it ({e})") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise MailSettingsError(
            f"--smtp-password-file {path}: readable by others (chmod 600 {path})"
        )
    if not line:
        raise MailSettingsError(f"--smtp-password-file {path}: empty")
    return line


# -- messages --------------------------------------------------------------------------------


def alert_link(base: str | None, a: alerts.Alert) -> str:
    if not base:
        return ""
    query = urlencode({"kind": a.kind, "locker": a.locker})
    return f"{base.rstrip('/')}/alerts?{query}#alert-{quote(a.key.replace(':', '-'))}"


def alert_message(a: alerts.Alert, site: str, timezone: str, base: str | None) -> dict:
    """subject and body of the e-mail for one urgent alert."""
    where = a.locker + (f", bay {a.bay}" if a.bay is not None else "")
    subject = f"[classlocker {site}] {a.title}: {where}"
    lines = [a.title, "", f"Locker: {where}"]
    received = a.received_at if a.received_at is not None else a.when
    if received is not None:
        lines.append(f"When: {format_ts(received, timezone, 'seconds')}")
        if a.ts is not None and abs(a.ts - received) > 60:
            lines.append(f"  (the locker's own clock said {format_ts(a.ts, timezone, 'seconds')})")
    who = a.who(show_names=False)
    if who:
        lines.append(f"Who: {who}")
    if a.detail:
        lines.append(f"Detail: {a.detail}")
    link = alert_link(base, a)
    if link:
        lines += ["", f"See it on the dashboard: {link}"]
    lines += [
        "",
        f"An urgent alert from the phone lockers of {site}. The same alert on the same locker "
        "and bay within 10 minutes is not sent again.",
    ]
    return {
        "fold_key": f"{a.kind}|{a.locker}|{a.bay if a.bay is not None else ''}",
        "alert": a.key,
        "kind": a.kind,
        "locker_id": a.locker,
        "bay": a.bay,
        "subject": subject[:300],
        "body": "\n".join(lines),
    }


def build_email(row, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = row.subject
    msg["From"] = sender
    msg["To"] = ", ".join(row.recipients.split(","))
    msg["Date"] = formatdate(row.created_at, localtime=False)
    msg["Message-ID"] = make_msgid(f"classlocker.{row.id}")
    msg["X-Classlocker-Alert"] = row.alert or row.kind
    body = row.body
    if row.repeats:
        body += (
            f"\n\nThe same alert came {row.repeats} more time"
            f"{'s' if row.repeats != 1 else ''} before this message could be sent."
        )
    msg.set_content(body)
    return msg


def note(status: dict, timezone: str) -> str | None:
    """One line for the dashboard when e-mail is not going out, else None."""
    if not status.get("queued"):
        return None
    since = format_ts(status["oldest"], timezone, "minutes") if status.get("oldest") else "?"
    n = status["queued"]
    text = f"{n} e-mail{'s' if n != 1 else ''} waiting since {since}"
    if status.get("failing"):
        text += f"; the mail server did not take them: {status['error']} (retrying)"
    return text


# -- the mailer ------------------------------------------------------------------------------


class AlertMailer:
    poll_interval = 1.0

    def __init__(self, store, site: str, settings: MailSettings):
        self.store = store
        self.site = site
        self.settings = settings
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AlertMailer:
        self._thread = threading.Thread(target=self._run, name="alert-mailer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SMTP_TIMEOUT + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            try:
                self.scan(now)
            except Exception as e:
                log.error("alert e-mail: looking for alerts failed: %s", _line(e))
            try:
                self.send_due(int(time.time()))
            except Exception as e:
                log.error("alert e-mail: sending failed: %s", _line(e))
            self._stop.wait(self.poll_interval)

    # 1. and 2.: queue

    def scan(self, now: float) -> int:
        """Queues a message for each urgent alert that began since the last scan (and the
        review when it is due); returns how many were queued."""
        site, st = self.site, self.store
        timezone = st.timezone(site)
        conditions = [a for a in alerts.condition_alerts(st, site, now) if a.urgent]
        review = self._review_due(now)
        queued = 0
        recipients = ",".join(self.settings.to)
        with st.transaction() as conn:
            m = store_alerts.marks(conn, site)
            since = m.get("looked_at", int(now)) - store_alerts.SCAN_BEHIND
            new_events = self._new_events(conn, since)
            new_refusals = self._new_refusals(conn, since)
            full = max(len(new_events), len(new_refusals)) >= _SCAN_LIMIT
            found = new_events + new_refusals
            store_alerts.mark_seen(conn, site, [(a.key, a.received_at or now) for a in found])
            if "looked_at" not in m:  # first start: what happened before is not news
                found = []
            if not full:  # else the rest next time, from the same point
                store_alerts.set_mark(
                    conn, site, "looked_at", max(int(now), m.get("looked_at", 0))
                )
            store_alerts.prune_seen(conn, site, since - store_alerts.SCAN_BEHIND)
            mailed = store_alerts.conditions_mailed(conn, site)
            active = {a.key: a for a in conditions}
            found += [a for k, a in active.items() if k not in mailed]
            store_alerts.set_conditions_mailed(
                conn, site, [k for k in active if k not in mailed], mailed - set(active), int(now)
            )
            for a in found:
                message = alert_message(a, site, timezone, self.settings.dashboard_url)
                message["recipients"] = recipients
                if store_alerts.enqueue(conn, site, message, int(now)) is not None:
                    queued += 1
            if review is not None:
                day, message = review
                message["recipients"] = ",".join(self.settings.review_to or self.settings.to)
                store_alerts.enqueue(conn, site, message, int(now))
                store_alerts.set_mark(conn, site, "review_day", day)
                queued += 1
        return queued

    def _new_events(self, conn, since: int) -> list[alerts.Alert]:
        rows = store_alerts.unseen_events(
            conn, self.site, since, alerts.URGENT_EVENTS, _SCAN_LIMIT
        )
        return [
            alerts.Alert(
                f"event:{r.id}",
                r.ts if r.ts is not None else r.sort_ts,
                r.locker_id,
                r.type,
                alerts.EVENT_ALERTS[r.type],
                r.bay,
                r.person,
                r.name,
                words.reason_words(r.reason),
                ts=r.ts,
                received_at=r.received_at,
                role=r.role,
            )
            for r in rows
        ]

    def _new_refusals(self, conn, since: int) -> list[alerts.Alert]:
        rows = store_alerts.unseen_refusals(conn, self.site, since, _SCAN_LIMIT)
        return [
            alerts.Alert(
                f"refused:{x.id}",
                x.last_at,
                x.locker_id,
                f"refused_{x.kind}",
                words.alert_words(f"refused_{x.kind}"),
                detail=x.detail,
                received_at=x.first_at,
            )
            for x in rows
        ]

    def _review_due(self, now: float):
        """(day as YYYYMMDD, message) when the daily review should be queued now, else None."""
        at = self.settings.review_at
        if at is None:
            return None
        from . import review

        row = self.store.timetable(self.site)
        cal = alerts.calendar(row, now)
        timezone = self.store.timezone(self.site)
        local = dt.datetime.fromtimestamp(now, ZoneInfo(timezone))
        day = local.year * 10000 + local.month * 100 + local.day
        if (local.hour, local.minute) < at:
            return None
        school_day = cal.is_school_day(int(now)) if row is not None else local.weekday() < 5
        if not school_day:
            return None
        with self.store.reading() as conn:
            if store_alerts.marks(conn, self.site).get("review_day", 0) >= day:
                return None
        data = review.daily_review(self.store, self.site, local.date())
        subject, body = review.as_text(data, self.site, self.settings.dashboard_url)
        return day, {
            "fold_key": f"review|{local.date().isoformat()}",
            "alert": "",
            "kind": "review",
            "locker_id": None,
            "bay": None,
            "subject": subject,
            "body": body,
        }

    # 3.: send

    def send_due(self, now: int) -> int:
        sent = 0
        for row in store_alerts.due(self.store, self.site, now):
            if self._stop.is_set():
                break
            try:
                self._send(row)
            except (OSError, smtplib.SMTPException, ssl.SSLError, UnicodeError) as e:
                backoff = min(MAX_BACKOFF, 2 ** min(row.attempts + 1, 10))
                error = _line(e) or type(e).__name__
                store_alerts.mark_failed(self.store, row.id, error, now + backoff)
                log.warning(
                    "alert e-mail %d not sent (try %d): %s; next try in %d s",
                    row.id,
                    row.attempts + 1,
                    error,
                    backoff,
                )
                break  # the server is down or refusing: the others wait for it too
            store_alerts.mark_sent(self.store, row.id, int(time.time()))
            self.sent += 1
            sent += 1
            log.info("alert e-mail %d sent: %s", row.id, row.subject)
        return sent

    def _send(self, row) -> None:
        s = self.settings
        msg = build_email(row, s.sender)
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout, local_hostname=_hostname()) as smtp:
            smtp.ehlo()
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=s.cafile))
                smtp.ehlo()
            if s.user:
                _login(smtp, s.user, s.password or "")
            smtp.send_message(msg, from_addr=s.sender, to_addrs=row.recipients.split(","))


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """Logs in with the first mechanism the server offers of CRAM-MD5, PLAIN, LOGIN, and only
    that one: `smtplib.SMTP.login` tries the next after a refusal, so a wrong password would
    cost two or three failed logins per try (and lock the account sooner where the mail
    server counts them), and some servers stop answering after the first refusal.
    SMTPAuthenticationError when refused, SMTPNotSupportedError when none is offered."""
    smtp.ehlo_or_helo_if_needed()
    offered = smtp.esmtp_features.get("auth", "").upper().split()
    for mechanism in ("CRAM-MD5", "PLAIN", "LOGIN"):
        if mechanism in offered:
            smtp.user, smtp.password = user, password
            method = getattr(smtp, "auth_" + mechanism.lower().replace("-", "_"))
            smtp.auth(mechanism, method)
            return
    raise smtplib.SMTPNotSupportedError(
        "the mail server offers no login this program can use (CRAM-MD5, PLAIN or LOGIN)"
        if offered
        else "the mail server offers no login (AUTH) on this connection"
    )


def _hostname() -> str:
    name = socket.getfqdn() or "localhost"
    return name if name.isascii() else "localhost"


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]
