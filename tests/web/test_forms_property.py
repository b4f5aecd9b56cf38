"""Hypothesis drives every form and every query parameter of the dashboard's pages, signed in as
each role (and signed out), with arbitrary input, against the real `lockerctl serve --http`
over real sockets: every answer is 2xx, 3xx or 4xx, never a 500, and serve's log never shows
a traceback.

The budget is small in `make test` (LOCKER_FORM_EXAMPLES examples per page and method, 10 by
default); raise it to search longer: `LOCKER_FORM_EXAMPLES=5000 .venv/bin/python -m pytest
tests/web/test_forms_property.py`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import uuid

import pytest
from conftest import ACCOUNTS, ROSTER
from harness import Broker, Serve, free_port, lockerctl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_bounds import read_response

# examples per page and method
EXAMPLES = int(os.environ.get("LOCKER_FORM_EXAMPLES", "10"))
ROLES = [None] + [u for u, _, _, _ in ACCOUNTS]  # None: not signed in
PASSWORDS = {u: pw for u, _, _, pw in ACCOUNTS}

# Every page's inputs: (method, path, fields). POST fields are the form's; GET ones the query's.
# `/logout` is left out (it would end the session the other examples use).
TARGETS = [
    ("POST", "/login", ["username", "password", "csrf"]),
    ("GET", "/login", []),
    ("GET", "/", []),
    ("GET", "/lockers", []),
    ("GET", "/api/lockers", []),
    ("GET", "/api/events", []),
    ("GET", "/api/state", []),
    ("GET", "/alerts", []),
    ("GET", "/api/alerts", []),
    ("POST", "/alerts/ack", ["alert"]),
    ("GET", "/open", ["locker", "bay", "scope"]),
    ("POST", "/open", ["scope", "reason", "locker", "bay", "confirm"]),
    ("GET", "/open/sent", ["ref"]),
    ("GET", "/api/open", ["ref"]),
    ("GET", "/grants", []),
    ("POST", "/grants", ["person", "from", "until", "reason", "locker"]),
    ("POST", "/grants/revoke", ["id"]),
    ("GET", "/consents", []),
    ("POST", "/consents", ["person", "until", "reason"]),
    ("POST", "/consents/end", ["person"]),
    ("POST", "/consents/approvers", ["person"]),
    ("POST", "/consents/approvers/remove", ["person"]),
    ("GET", "/trail", ["from", "to", "locker", "person", "page"]),
    ("GET", "/trail.csv", ["from", "to", "locker", "person"]),
    ("GET", "/trail.xlsx", ["from", "to", "locker", "person"]),
    ("GET", "/admin/roster", []),
    ("POST", "/admin/roster", ["roster"]),  # multipart, a file
    ("GET", "/admin/roster.csv", []),
    ("GET", "/admin/timetable", []),
    ("POST", "/admin/timetable", ["toml"]),
    ("GET", "/admin/lockers", []),
    ("POST", "/admin/lockers", ["id", "bays", "board"]),
    ("GET", "/admin/device.json", ["locker"]),
    ("GET", "/admin/users", []),
    ("POST", "/admin/users", ["username", "role", "new_password", "person"]),
    ("POST", "/admin/users/remove", ["username"]),
    ("GET", "/account/tokens", []),
    ("POST", "/account/tokens", ["label", "username"]),
    ("POST", "/account/tokens/revoke", ["id"]),
    ("GET", "/api/v1/lockers", []),
    ("GET", "/api/v1/alerts", []),
    ("GET", "/api/v1/trail", ["from", "to", "locker", "person", "page"]),
    ("GET", "/api/v1/events", ["after", "limit"]),
    ("GET", "/api/v1/grants", []),
    ("GET", "/api/docs", []),
]

# Values a form of this dashboard means something by, and the edges of what it takes.
MEANINGFUL = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "4",
    "65",
    "9" * 40,
    "1e309",
    "nan",
    "L1",
    "L9",
    "P001",
    "H001",
    "S001",
    "yes",
    "bay",
    "locker",
    "staff",
    "sim",
    "esp32",
    "office",
    "slt",
    "admin",
    "2026-09-10",
    "9999-12-31",
    "0001-01-01",
    "2026-02-30",
    "2030-01-01T10:00",
    "2026-03-29T01:30",
    "2030-01-01T10:00+14:00",
    "offline:L1",
    "event:1",
    "config:L1",
    "timezone = 'Europe/London'",
    "a" * 300,
    "\x00",
    "\x1b[2J",
    '=HYPERLINK("http://x")',
    "é" * 10,
    "\ud7ff",
]

values = st.one_of(
    st.sampled_from(MEANINGFUL),
    st.text(max_size=40),
    st.from_regex(r"[0-9:T+-]{0,25}", fullmatch=True),
)
dates = st.one_of(
    st.sampled_from(["2026-09-10", "9999-12-31", "0001-01-01", "2026-02-30", "1999-12-31"]),
    st.dates().map(lambda d: d.isoformat()),
    values,
)
datetimes = st.one_of(
    st.sampled_from(
        ["2030-01-01T10:00", "2026-03-29T01:30", "2026-10-25T01:30", "9999-12-31T23:59"]
    ),
    st.datetimes().map(lambda d: d.isoformat(timespec="minutes")),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    values,
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(-3, 70).map(str),
    values,
)
BY_FIELD = {
    "from": dates,
    "to": dates,
    "page": numbers,
    "bay": numbers,
    "bays": numbers,
    "id": st.one_of(numbers, values),
    "after": numbers,
    "limit": numbers,
}
POST_BY_FIELD = {"from": datetimes, "until": datetimes}


toml_docs = st.one_of(
    values,
    st.builds(
        lambda tz, home, rel, unc: (
            f'timezone = "{tz}"\nhome_time = "{home}"\ny6_release_minutes = {rel}\n'
            f"uncollected_after_minutes = {unc}\n"
            'contact = [["08:45", "15:15"]]\nterms = [["2026-09-03", "2026-10-23"]]\nclosed = []\n'
        ),
        st.sampled_from(["Europe/London", "UTC", "Mars/Base", ""]),
        st.sampled_from(["15:25", "25:00", "08:00", "x"]),
        st.sampled_from(["10", "-1", "900", "99999999999999999999", "1.5"]),
        st.sampled_from(["60", "0", "99999999999999999999", "-5"]),
    ),
)
roster_files = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.tuples(values, values, st.sampled_from(["pupil", "staff", "slt", "x"]), values),
        max_size=4,
    ).map(
        lambda rows: (
            "person_id,name,role,year,walk_home,card_uid\n"
            + ROSTER.split("\n", 1)[1]
            + "".join(f"{p},{n},{r},{y},no,04{i:06X}\n" for i, (p, n, r, y) in enumerate(rows))
        ).encode("utf-8", "surrogatepass")
    ),
)


class Site:
    def __init__(self, port, serve):
        self.port, self.serve = port, serve
        self.sessions: dict[str, tuple[str, str]] = {}

    def request(self, method, path, body=b"", headers=None, source="127.0.0.1"):
        import socket

        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        headers = dict(headers or {})
        if method == "POST":
            headers["Content-Length"] = str(len(body))
        lines += [f"{k}: {v}" for k, v in headers.items()]
        with socket.create_connection(
            ("127.0.0.1", self.port), timeout=60, source_address=(source, 0)
        ) as s:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            return read_response(s)

    def sign_in(self, username):
        body = urllib.parse.urlencode(
            {"username": username, "password": PASSWORDS[username]}
        ).encode()
        status, h, _ = self.request(
            "POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 303, (username, status)
        cookie = re.search(r"cl_session=([^;]+)", h["set-cookie"]).group(1)
        status, _, page = self.request(
            "GET", "/lockers", headers={"Cookie": f"cl_session={cookie}"}
        )
        csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
        self.sessions[username] = (f"cl_session={cookie}", csrf)

    def session(self, role):
        if role is None:
            return None, ""
        cookie, csrf = self.sessions[role]
        # still signed in? (an example may have removed or changed the account)
        status, _, _ = self.request("GET", "/api/state", headers={"Cookie": cookie})
        if status != 200:
            self.sign_in(role)
            cookie, csrf = self.sessions[role]
        return cookie, csrf


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forms")
    db_url = f"sqlite:///{tmp / 'lockers.db'}"
    broker = Broker(tmp).start()
    serve = None
    try:
        (tmp / "roster.csv").write_text(ROSTER)
        lockerctl("roster", "import", tmp / "roster.csv", db=db_url)
        lockerctl("locker", "add", "L1", "--bays", 4, "--broker", broker.address, db=db_url)
        for username, role, person, password in ACCOUNTS:
            lockerctl(
                "user",
                "add",
                username,
                "--role",
                role,
                "--person",
                person,
                "--password-stdin",
                db=db_url,
                input=password + "\n",
            )
        port = free_port()
        serve = Serve(tmp, db_url, broker, http_port=port).start()
        s = Site(port, serve)
        for username, _, _, _ in ACCOUNTS:
            s.sign_in(username)
        yield s
    finally:
        if serve is not None:
            serve.kill()
        broker.kill()


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode("utf-8", "surrogatepass")
            + b"\r\n"
        )
    for name, (filename, data) in files.items():
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@pytest.mark.parametrize("target", TARGETS, ids=[f"{m} {p}" for m, p, _ in TARGETS])
@given(role=st.sampled_from(ROLES), data=st.data())
def test_any_input_to_any_form_is_answered_without_a_server_error(site, target, role, data):
    method, path, fields = target
    cookie, csrf = site.session(role)
    seen = len(site.serve.process.output())
    sent = {}
    files = {}
    for name in fields:
        if not data.draw(st.booleans(), label=f"send {name}") and name != "roster":
            continue
        if name == "roster":
            files[name] = (
                data.draw(values, label="filename"),
                data.draw(roster_files, label=name),
            )
        elif name == "toml":
            sent[name] = data.draw(toml_docs, label=name)
        elif method == "POST" and name in POST_BY_FIELD:
            sent[name] = data.draw(POST_BY_FIELD[name], label=name)
        else:
            sent[name] = data.draw(BY_FIELD.get(name, values), label=name)
    headers = {"Cookie": cookie} if cookie else {}
    # sign-in attempts come from their own address, so that they cannot use up the limits of
    # the address the sessions were made from
    source = "127.0.0.77" if path == "/login" else "127.0.0.1"
    if method == "POST":
        if csrf and data.draw(st.booleans(), label="with the csrf token"):
            sent.setdefault("csrf", csrf)
        if files:
            body, ctype = multipart(sent, files)
        else:
            body = urllib.parse.urlencode(
                {k: v.encode("utf-8", "surrogatepass") for k, v in sent.items()}
            ).encode()
            ctype = "application/x-www-form-urlencoded"
        status, _, _ = site.request(
            method, path, body, dict(headers, **{"Content-Type": ctype}), source
        )
    else:
        query = urllib.parse.urlencode(
            {k: v.encode("utf-8", "surrogatepass") for k, v in sent.items()}
        )
        status, _, _ = site.request(
            method, path + ("?" + query if query else ""), b"", headers, source
        )
    assert 200 <= status < 500, (method, path, role, sent, status)
    log = site.serve.process.output()[seen:]
    assert "Traceback" not in log, (method, path, role, sent, log[-1500:])
