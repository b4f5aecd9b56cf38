"""Urgent alerts by e-mail, end to end: real mosquitto, the real firmware on the MicroPython unix
port, a real `lockerctl serve --smtp`, and a real SMTP server (aiosmtpd) in the test.

A forced door is one e-mail (locker, bay, time, plain words, a link to the alert) within 10 s; a
second forced door on the same bay within 10 minutes sends nothing more; a mail server that
does not answer (a socket that accepts and says nothing) or is down does not hold up ingest,
and the message goes out once it is back; a restart of serve sends nothing twice. A server
that wants STARTTLS and a login: a wrong password holds up no event, the log and every dashboard
page say why; with the right one the message goes out once.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from harness import Broker, Serve, SimLocker, free_port, lockerctl, wait_for

pytestmark = pytest.mark.slow
aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

ROSTER = """person_id,name,role,year,walk_home,card_uid
P001,Pia Pupil,pupil,6,yes,04A1B2C3
S001,Sam Staff,staff,,no,04B1B2C3
"""


class Inbox:
    """aiosmtpd's handler: every message the server accepted."""

    def __init__(self):
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes, policy

        msg = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.rcpt_tos, msg))
        return "250 OK"


def smtp_server(port: int, inbox: Inbox):
    c = aiosmtpd_controller.Controller(inbox, hostname="127.0.0.1", port=port)
    c.start()
    return c


class Silent:
    """A mail server that accepts connections and never says anything (a hung server)."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.held: list = []
        self.accepted = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.sock.close()
        self._t.join(5)
        for c in self.held:
            c.close()


def door_events(store, kind="door_forced"):
    return [r for r in store.events("school") if r.type == kind]


def test_forced_door_is_mailed_once_and_smtp_trouble_never_delays_ingest(tmp_path):
    from lockerctl.store import Store
    from lockerctl.store import alerts as store_alerts

    db = f"sqlite:///{tmp_path / 'lockers.db'}"
    broker = Broker(tmp_path).start()
    smtp_port = free_port()
    inbox = Inbox()
    controller = smtp_server(smtp_port, inbox)
    locker = serve = silent = None
    try:
        (tmp_path / "roster.csv").write_text(ROSTER)
        lockerctl("roster", "import", tmp_path / "roster.csv", db=db)
        import json

        device = json.loads(
            lockerctl("locker", "add", "L1", "--bays", 4, "--broker", broker.address, db=db).stdout
        )
        device["data_dir"] = str(tmp_path / "data-L1")
        locker = SimLocker(tmp_path, "L1", broker=broker, device=device).start()
        locker.clock(int(time.time()))
        extra = [
            "--smtp",
            f"127.0.0.1:{smtp_port}",
            "--alert-to",
            "office@school.example,head@school.example",
            "--smtp-from",
            "lockers@school.example",
            "--dashboard-url",
            "https://lockers.school.example",
        ]
        serve = Serve(tmp_path, db, broker, extra=extra).start()
        wait_for(lambda: locker.state()["config"] is not None, timeout=30, what="config")
        store = Store.open(db)

        # 1. a forced door: one e-mail within 10 s
        assert locker.door(3, "open") == {"ok": True}  # bay 3 is locked and empty: forced
        wait_for(lambda: len(inbox.messages) == 1, timeout=10, what="the door_forced e-mail")
        rcpt, msg = inbox.messages[0]
        assert sorted(rcpt) == ["head@school.example", "office@school.example"]
        assert msg["From"] == "lockers@school.example"
        assert "Door forced open" in msg["Subject"] and "L1, bay 3" in msg["Subject"]
        body = msg.get_content()
        assert "Locker: L1, bay 3" in body
        assert "When: " in body
        (forced,) = door_events(store)
        link = "https://lockers.school.example/alerts?kind=door_forced&locker=L1"
        assert f"{link}#alert-event-{forced.id}" in body
        locker.door(3, "close")

        # 2. the same bay forced again within 10 minutes: folded, no second message
        locker.door(3, "open")
        wait_for(lambda: len(door_events(store)) == 2, timeout=10, what="the second door_forced")
        wait_for(
            lambda: store_alerts.outbox(store, "school")[0].repeats == 1,
            timeout=10,
            what="the second forced door folded into the first message",
        )
        assert len(inbox.messages) == 1
        locker.door(3, "close")

        # 3. a mail server that hangs, then is down: ingest goes on; the mail waits, then goes
        controller.stop(no_assert=True)
        silent = Silent(smtp_port)
        locker.door(2, "open")  # bay 2 forced: another alert
        wait_for(silent.accepted.is_set, timeout=10, what="the mailer at the hung server")
        # while the mailer waits on the hung server, the locker's events keep arriving
        locker.door(2, "close")
        reply = locker.tap("04A1B2C3")
        assert reply["result"] == "granted", reply
        locker.door(reply["bay"], "open")
        locker.door(reply["bay"], "close")
        wait_for(
            lambda: any(r.type == "deposit" for r in store.events("school")),
            timeout=10,
            what="the deposit stored while the mail server hangs",
        )
        assert len(inbox.messages) == 1
        status = store_alerts.mail_status(store, "school")
        assert status["queued"] == 1
        silent.close()
        silent = None  # now nothing listens: connection refused
        wait_for(
            lambda: store_alerts.mail_status(store, "school")["failing"],
            timeout=30,
            what="the failure recorded for the dashboard",
        )
        controller = smtp_server(smtp_port, inbox)
        wait_for(lambda: len(inbox.messages) == 2, timeout=90, what="the mail once back")
        _, msg = inbox.messages[1]
        assert "L1, bay 2" in msg["Subject"]
        assert store_alerts.mail_status(store, "school")["queued"] == 0

        # 4. a restart of serve sends nothing again, and a new alert still goes out once
        serve.stop()
        serve = Serve(tmp_path, db, broker, extra=extra).start()
        locker.door(4, "open")
        wait_for(lambda: len(inbox.messages) == 3, timeout=15, what="bay 4's e-mail")
        assert "L1, bay 4" in inbox.messages[2][1]["Subject"]
        locker.door(4, "close")
        subjects = [m["Subject"] for _, m in inbox.messages]
        assert len(subjects) == len(set(subjects))  # nothing sent twice
        store.close()
    finally:
        if silent is not None:
            silent.close()
        controller.stop(no_assert=True)
        if serve is not None:
            serve.kill()
        if locker is not None:
            locker.kill()
        broker.kill()


class LoginInbox(Inbox):
    """An Inbox behind a login: the password `right`, over TLS only (the server's rules)."""

    def __init__(self):
        super().__init__()
        self.logins: list = []

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        ok = auth_data.login == b"lockers" and auth_data.password == b"right"
        self.logins.append(ok)
        return AuthResult(success=ok, handled=False)


def test_starttls_login_and_a_wrong_password_that_delays_nothing(tmp_path):
    """`serve --smtp-starttls --smtp-ca --smtp-user --smtp-password-file` against aiosmtpd that
    takes mail only over STARTTLS after a login: with a wrong password the locker's events are
    stored as ever, the log and every dashboard page say why the e-mail is waiting; with the
    right one (serve restarted) it goes out once, over TLS."""
    import json
    import os
    import ssl
    import urllib.parse
    import urllib.request
    from http.cookiejar import CookieJar

    from lockerctl.broker import make_ca, make_server_cert
    from lockerctl.store import Store
    from lockerctl.store import alerts as store_alerts

    ca_key, ca_cert = make_ca("school")
    key, cert = make_server_cert(ca_key, ca_cert, ["localhost", "127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(ca_cert)
    (tmp_path / "smtp.pem").write_bytes(cert)
    (tmp_path / "smtp.key").write_bytes(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "smtp.pem", tmp_path / "smtp.key")
    smtp_port, inbox = free_port(), LoginInbox()
    controller = aiosmtpd_controller.Controller(
        inbox, hostname="127.0.0.1", port=smtp_port, tls_context=context,
        require_starttls=True, auth_required=True, auth_require_tls=True,
        authenticator=inbox.authenticate,
    )  # fmt: skip
    controller.start()
    password = tmp_path / "smtp-password"
    password.write_text("wrong\n")
    os.chmod(password, 0o600)
    db = f"sqlite:///{tmp_path / 'lockers.db'}"
    broker = Broker(tmp_path).start()
    locker = serve = None
    try:
        (tmp_path / "roster.csv").write_text(ROSTER)
        lockerctl("roster", "import", tmp_path / "roster.csv", db=db)
        lockerctl("user", "add", "root", "--role", "admin", "--password-stdin", db=db,
                  input="admin-pass-1\n")  # fmt: skip
        device = json.loads(
            lockerctl("locker", "add", "L1", "--bays", 4, "--broker", broker.address, db=db).stdout
        )
        device["data_dir"] = str(tmp_path / "data-L1")
        locker = SimLocker(tmp_path, "L1", broker=broker, device=device).start()
        locker.clock(int(time.time()))
        http_port = free_port()
        extra = [
            "--smtp", f"127.0.0.1:{smtp_port}", "--alert-to", "office@school.example",
            "--smtp-from", "lockers@school.example", "--smtp-starttls",
            "--smtp-ca", str(tmp_path / "ca.pem"), "--smtp-user", "lockers",
            "--smtp-password-file", str(password),
        ]  # fmt: skip
        serve = Serve(tmp_path, db, broker, http_port=http_port, extra=extra).start()
        wait_for(lambda: locker.state()["config"] is not None, timeout=30, what="config")
        store = Store.open(db)

        assert locker.door(3, "open") == {"ok": True}  # forced
        wait_for(lambda: len(door_events(store)) == 1, timeout=10, what="the forced door stored")
        wait_for(
            lambda: store_alerts.mail_status(store, "school")["failing"],
            timeout=15,
            what="the refused login recorded",
        )
        assert "535" in store_alerts.mail_status(store, "school")["error"]
        assert inbox.messages == [] and inbox.logins and not any(inbox.logins)
        # meanwhile the locker's events are stored as ever
        locker.door(3, "close")
        reply = locker.tap("04A1B2C3")
        assert reply["result"] == "granted", reply
        locker.door(reply["bay"], "open")
        locker.door(reply["bay"], "close")
        wait_for(
            lambda: any(r.type == "deposit" for r in store.events("school")),
            timeout=10,
            what="the deposit stored while the mail server refuses the login",
        )
        log = (tmp_path / "serve.log").read_text(errors="replace")
        assert "not sent (try 1)" in log and "535" in log
        # every dashboard page says so
        base = f"http://127.0.0.1:{http_port}"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        page = opener.open(base + "/login").read().decode()
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"username": "root", "password": "admin-pass-1", "csrf": csrf}
        opener.open(base + "/login", urllib.parse.urlencode(form).encode()).read()
        page = opener.open(base + "/lockers").read().decode()
        assert 'id="mail-trouble"' in page and "535" in page

        # the right password: the waiting message goes out, once, over TLS
        serve.stop()
        password.write_text("right\n")
        serve = Serve(tmp_path, db, broker, http_port=http_port, extra=extra).start()
        wait_for(lambda: len(inbox.messages) == 1, timeout=30, what="the e-mail, logged in")
        assert "L1, bay 3" in inbox.messages[0][1]["Subject"]
        assert inbox.logins[-1] is True
        wait_for(
            lambda: store_alerts.mail_status(store, "school")["queued"] == 0,
            timeout=10,
            what="the message marked sent",
        )
        page = opener.open(base + "/lockers").read().decode()
        assert 'id="mail-trouble"' not in page
        store.close()
    finally:
        controller.stop(no_assert=True)
        if serve is not None:
            serve.kill()
        if locker is not None:
            locker.kill()
        broker.kill()
