"""Dashboard accounts: `lockerctl user`, password hashing, sessions, CSRF, login rate limiting
and the trail entries of what accounts do. Driven over real HTTP against a dashboard on a real
store (and the real `lockerctl` for the commands)."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
import sqlalchemy as sa
from conftest import SITE
from harness import lockerctl


class Client:
    """A cookie-keeping HTTP client that does not follow redirects."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kw):
            return None

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), self._NoRedirect
        )

    def request(self, path: str, form: dict | None = None, headers: dict | None = None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            resp = self.opener.open(req)
        except urllib.error.HTTPError as e:
            resp = e
        body = resp.read().decode("utf-8", "replace")
        return resp.status, resp.headers, body

    def csrf(self, path: str) -> str:
        status, _, body = self.request(path)
        assert status == 200, (path, status)
        return re.search(r'name="csrf" value="([^"]+)"', body).group(1)

    def login(self, username: str, password: str):
        token = self.csrf("/login")
        return self.request("/login", {"username": username, "password": password, "csrf": token})


# -- the command ---------------------------------------------------------------------------------


def test_user_add_list_remove(db_url):
    out = lockerctl(
        "user",
        "add",
        "olive",
        "--role",
        "office",
        "--person",
        "O001",
        "--password-stdin",
        db=db_url,
        input="correct horse\n",
    )
    assert "olive" in out.stdout
    assert "not on the roster" in out.stderr  # said, not refused: the roster may come later
    lockerctl(
        "user",
        "add",
        "root",
        "--role",
        "admin",
        "--password-stdin",
        db=db_url,
        input="battery staple\n",
    )
    listing = lockerctl("user", "list", db=db_url).stdout
    assert re.search(r"olive\s+office\s+O001", listing)
    assert re.search(r"root\s+admin\s+-", listing)

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        hashes = dict(conn.execute(sa.text("select username, password_hash from users")).all())
    engine.dispose()
    assert "correct horse" not in hashes["olive"]
    assert hashes["olive"].startswith("scrypt$16384$8$1$")
    from lockerctl.accounts import verify_password

    assert verify_password("correct horse", hashes["olive"])
    assert not verify_password("correct horsE", hashes["olive"])

    lockerctl("user", "remove", "olive", db=db_url)
    assert "olive" not in lockerctl("user", "list", db=db_url).stdout
    from lockerctl.store import Store

    with Store.open(db_url) as st:
        acts = [(a["action"], a["detail"].get("username")) for a in st.trail_actions(SITE)]
    assert ("user_add", "olive") in acts and ("user_remove", "olive") in acts


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (["--role", "office"], "short\n", "password too short"),
        (["--role", "janitor"], "long enough\n", "Invalid value for '--role'"),
        (["--role", "office"], "\n", "no password on standard input"),
        (["--role", "office", "--person", "bad id!"], "long enough\n", "person 'bad id!'"),
    ],
)
def test_user_add_refuses_bad_input_in_one_line(db_url, args, stdin, message):
    proc = lockerctl(
        "user", "add", "olive", *args, "--password-stdin", db=db_url, input=stdin, check=False
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "olive" not in lockerctl("user", "list", db=db_url).stdout


def test_user_add_twice_and_bad_names(db_url):
    lockerctl(
        "user",
        "add",
        "olive",
        "--role",
        "office",
        "--password-stdin",
        db=db_url,
        input="long enough\n",
    )
    again = lockerctl(
        "user",
        "add",
        "olive",
        "--role",
        "admin",
        "--password-stdin",
        db=db_url,
        input="long enough\n",
        check=False,
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = lockerctl(
        "user",
        "add",
        "o live",
        "--role",
        "admin",
        "--password-stdin",
        db=db_url,
        input="long enough\n",
        check=False,
    )
    assert bad.returncode == 1 and "username 'o live'" in bad.stderr
    gone = lockerctl("user", "remove", "nobody", db=db_url, check=False)
    assert gone.returncode == 1 and "no user nobody" in gone.stderr


def test_hashes_are_salted_and_rate_limiter_windows():
    from lockerctl.accounts import RateLimiter, hash_password

    assert hash_password("same password") != hash_password("same password")
    now = [1000.0]
    rl = RateLimiter(3, 60, clock=lambda: now[0])
    for _ in range(3):
        assert rl.blocked("k") == 0
        rl.fail("k")
    assert rl.blocked("k") == pytest.approx(60)
    assert rl.blocked("other") == 0
    now[0] += 61
    assert rl.blocked("k") == 0
    rl.fail("k")
    rl.reset("k")
    assert rl.blocked("k") == 0


# -- over HTTP -----------------------------------------------------------------------------------


def test_session_cookie_is_httponly_and_samesite_strict(dash):
    c = Client(dash.url)
    status, headers, _ = c.login("olive", "office-pass-1")
    assert status == 303 and headers["Location"] == "/lockers"
    cookie = [v for v in headers.get_all("Set-Cookie") if v.startswith("cl_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert c.request("/lockers")[0] == 200
    # the store keeps only a hash of the token
    token = cookie.split(";")[0].split("=", 1)[1]
    with dash.store.engine.connect() as conn:
        stored = conn.execute(sa.text("select token_hash from web_sessions")).scalars().all()
    assert token not in stored and len(stored) == 1


def test_every_form_needs_the_csrf_token(dash):
    c = Client(dash.url)
    c.login("root", "admin-pass-1")
    before = len(dash.actions())
    for path, form in [
        ("/open", {"scope": "bay", "locker": "L1", "bay": "1", "reason": "x", "confirm": "yes"}),
        (
            "/grants",
            {
                "person": "P001",
                "from": "2030-01-01T10:00",
                "until": "2030-01-02T10:00",
                "reason": "x",
            },
        ),
        ("/admin/users", {"username": "eve", "role": "admin", "new_password": "eve-password"}),
        ("/admin/lockers", {"id": "L9", "bays": "4", "board": "sim"}),
        ("/alerts/ack", {"alert": "offline:L2"}),
        ("/logout", {}),
    ]:
        for token in (None, "forged-token"):
            sent = dict(form, **({"csrf": token} if token else {}))
            status, _, body = c.request(path, sent)
            assert status == 403 and "CSRF" in body, (path, token)
    assert dash.sent == []
    assert len(dash.actions()) == before
    assert c.request("/lockers")[0] == 200  # still signed in: logout was refused too


def test_login_attempts_are_rate_limited(dash):
    c = Client(dash.url)
    for _ in range(5):
        status, _, body = c.login("olive", "wrong password")
        assert status == 401 and "Wrong username or password" in body
    status, _, body = c.login("olive", "office-pass-1")  # right, but too late
    assert status == 429 and "Too many failed sign-ins" in body
    assert c.request("/lockers")[0] == 303
    # another account is not locked out by olive's failures
    assert Client(dash.url).login("hana", "slt-pass-123")[0] == 303
    failed = dash.actions("login_failed")
    assert len(failed) == 5 and {a["detail"]["username"] for a in failed} == {"olive"}


def test_login_form_token_must_match_and_cross_site_login_is_refused(dash):
    c = Client(dash.url)
    c.csrf("/login")  # sets the login cookie
    status, _, _ = c.request(
        "/login", {"username": "olive", "password": "office-pass-1", "csrf": "not-the-one"}
    )
    assert status == 403
    fresh = Client(dash.url)
    status, _, _ = fresh.request(
        "/login",
        {"username": "olive", "password": "office-pass-1"},
        headers={"Origin": "http://evil.example"},
    )
    assert status == 403
    # a script (no form token, no Origin) may still sign in with the two fields, also after
    # fetching the form
    scripted = Client(dash.url)
    scripted.request("/login")
    status, headers, _ = scripted.request(
        "/login", {"username": "olive", "password": "office-pass-1"}
    )
    assert status == 303 and headers["Location"] == "/lockers"
    status, headers, _ = Client(dash.url).request(
        "/login", {"username": "olive", "password": "office-pass-1"}
    )
    assert status == 303 and headers["Location"] == "/lockers"


def test_anonymous_requests_get_only_the_login_page(dash):
    c = Client(dash.url)
    for path in (
        "/",
        "/lockers",
        "/alerts",
        "/grants",
        "/trail",
        "/trail.csv",
        "/admin/users",
        "/admin/device.json?locker=L1",
        "/open/sent?ref=x",
    ):
        status, headers, _ = c.request(path)
        assert (status, headers["Location"]) == (303, "/login"), path
    assert c.request("/api/lockers")[0] == 401
    assert c.request("/open", {"scope": "staff", "reason": "x", "confirm": "yes"})[0] == 403
    assert dash.sent == []
    status, _, body = c.request("/login")
    assert status == 200 and 'name="username"' in body and 'name="password"' in body
    head = urllib.request.Request(dash.url + "/login", method="HEAD")
    with urllib.request.urlopen(head) as resp:
        assert resp.status == 200 and resp.read() == b""


def test_logout_and_removed_users_end_sessions(dash):
    c = Client(dash.url)
    c.login("olive", "office-pass-1")
    token = c.csrf("/lockers")
    assert c.request("/logout", {"csrf": token})[0] == 303
    assert c.request("/lockers")[0] == 303
    c.login("olive", "office-pass-1")
    assert c.request("/lockers")[0] == 200
    from lockerctl.accounts import Accounts

    Accounts(dash.store, SITE).remove_user("olive", actor="test")
    assert c.request("/lockers")[0] == 303
    assert [a["actor"] for a in dash.actions("logout")] == ["web:olive"]


def test_alert_acknowledgement_is_recorded_once_with_the_account(dash):
    c = Client(dash.url)
    c.login("olive", "office-pass-1")
    status, _, body = c.request("/alerts")
    keys = re.findall(r'name="alert" value="([^"]+)"', body)
    assert "clock:L2" in keys  # L2 reports an untrusted clock
    assert any(k.startswith("event:") for k in keys)  # door_forced, policy_flag
    token = c.csrf("/alerts")
    assert c.request("/alerts/ack", {"alert": "clock:L2", "csrf": token})[0] == 303
    assert c.request("/alerts/ack", {"alert": "clock:L2", "csrf": token})[0] == 303
    _, _, body = c.request("/alerts")
    assert "clock:L2" not in re.findall(r'name="alert" value="([^"]+)"', body)
    assert "by olive" in body
    acks = dash.actions("alert_ack")
    assert [(a["actor"], a["detail"]["alert"]) for a in acks] == [("web:olive", "clock:L2")]
