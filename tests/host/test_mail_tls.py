"""E-mail through a mail server that wants STARTTLS and a login, a real aiosmtpd server with a
certificate made here (from a CA made here, trusted with `--smtp-ca`): the message goes out over
TLS with AUTH PLAIN and with AUTH LOGIN; a wrong password, an untrusted certificate or no
STARTTLS leave it queued with the reason for the dashboard and the log (the next try waits)."""

from __future__ import annotations

import logging
import ssl
import time

import pytest
from harness import free_port
from lockerctl.mailer import AlertMailer, MailSettings, note
from lockerctl.store import Store
from lockerctl.store import alerts as store_alerts

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")

SITE = "school"
USER, PASSWORD = "lockers", "correct horse battery"


def make_certs(tmp_path):
    """(ca.pem, cert.pem, key.pem): a CA made here (the project's own PKI helpers, as for the
    broker and the dashboard) and the mail server's certificate for 127.0.0.1."""
    from lockerctl.broker import make_ca, make_server_cert

    ca_key, ca_cert = make_ca("school")
    key, cert = make_server_cert(ca_key, ca_cert, ["localhost", "127.0.0.1"])
    paths = tmp_path / "ca.pem", tmp_path / "smtp.pem", tmp_path / "smtp.key"
    for path, data in zip(paths, (ca_cert, cert, key), strict=True):
        path.write_bytes(data)
    return paths


class Inbox:
    def __init__(self):
        self.messages: list = []
        self.logins: list = []  # (mechanism, user, over TLS)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content, session.ssl is not None))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        self.logins.append((mechanism, auth_data.login.decode(), session.ssl is not None, ok))
        return aiosmtpd_smtp.AuthResult(success=ok, handled=False)  # the server says 535


@pytest.fixture
def tls_server(tmp_path):
    """start(exclude=[mechanisms]) -> (port, inbox, the CA to trust): a server that takes mail
    only after STARTTLS and a login."""
    ca, cert, key = make_certs(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    started = []

    def start(exclude=()):
        port, inbox = free_port(), Inbox()
        c = aiosmtpd_controller.Controller(
            inbox,
            hostname="127.0.0.1",
            port=port,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=inbox.authenticate,
            auth_exclude_mechanism=list(exclude),
        )
        c.start()
        started.append(c)
        return port, inbox, ca

    yield start
    for c in started:
        c.stop(no_assert=True)


@pytest.fixture
def store(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    yield s
    s.close()


def queue_one(store) -> int:
    message = {"fold_key": "door_forced|L1|3", "alert": "event:1", "kind": "door_forced",
               "locker_id": "L1", "bay": 3, "subject": "[classlocker school] Door forced open",
               "body": "Door forced open\n\nLocker: L1, bay 3",
               "recipients": "office@school.example"}  # fmt: skip
    with store._write() as conn:
        return store_alerts.enqueue(conn, SITE, message, int(time.time()))


def mailer(store, port, cert, password=PASSWORD, starttls=True) -> AlertMailer:
    settings = MailSettings(
        "127.0.0.1", port, ["office@school.example"], "lockers@school.example",
        starttls=starttls, user=USER, password=password, cafile=str(cert) if cert else None,
    )  # fmt: skip
    return AlertMailer(store, SITE, settings)


@pytest.mark.parametrize("mechanism, exclude", [("PLAIN", ["LOGIN"]), ("LOGIN", ["PLAIN"])])
def test_starttls_and_login(store, tls_server, mechanism, exclude):
    port, inbox, cert = tls_server(exclude)
    queue_one(store)
    assert mailer(store, port, cert).send_due(int(time.time())) == 1
    (rcpt, content, over_tls), = inbox.messages  # fmt: skip
    assert rcpt == ["office@school.example"] and over_tls
    assert b"Locker: L1, bay 3" in content
    assert inbox.logins == [(mechanism, USER, True, True)]
    status = store_alerts.mail_status(store, SITE)
    assert status["queued"] == 0 and status["last_sent"] is not None


def test_a_wrong_password_is_a_note_and_a_log_line_and_is_tried_again(store, tls_server, caplog):
    port, inbox, cert = tls_server()
    queue_one(store)
    now = int(time.time())
    with caplog.at_level(logging.WARNING, logger="lockerctl.mail"):
        assert mailer(store, port, cert, password="wrong").send_due(now) == 0
    assert inbox.messages == [] and [x[3] for x in inbox.logins] == [False]
    status = store_alerts.mail_status(store, SITE)
    assert status["queued"] == 1 and status["failing"] and status["attempts"] == 1
    assert "535" in status["error"]
    line = note(status, "Europe/London")
    assert "1 e-mail waiting since" in line and "the mail server did not take them" in line
    assert "535" in line and "retrying" in line
    assert any("not sent (try 1)" in r.getMessage() and "535" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    # waits before the next try; then, with the right password, it goes
    assert mailer(store, port, cert).send_due(now) == 0
    assert mailer(store, port, cert).send_due(now + 3) == 1
    assert len(inbox.messages) == 1
    assert store_alerts.mail_counts(store, SITE) == {
        "queued": 0, "sent": 1, "failed": 1, "failing": 0, "oldest": None,
    }  # fmt: skip


def test_an_untrusted_certificate_or_no_starttls_sends_nothing(store, tls_server):
    port, inbox, cert = tls_server()
    queue_one(store)
    now = int(time.time())
    # the system's CAs do not know the test's CA: refused, never sent in clear
    assert mailer(store, port, None).send_due(now) == 0
    assert "CERTIFICATE_VERIFY_FAILED" in store_alerts.mail_status(store, SITE)["error"]
    # without --smtp-starttls the server will not take a login in clear
    assert mailer(store, port, cert, starttls=False).send_due(now + 100) == 0
    assert store_alerts.mail_status(store, SITE)["failing"]
    assert inbox.messages == [] and inbox.logins == []
