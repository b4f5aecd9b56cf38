"""The dashboard over HTTPS (`lockerctl serve --http ... --http-cert FILE --http-key FILE`): the
real service with a certificate signed by a CA made for the test, a TLS client that trusts only
that CA, Debian's chromium, and the one-line refusals of unusable certificate files."""

from __future__ import annotations

import http.client
import re
import ssl
import urllib.parse

import pytest
from conftest import PASSWORDS, SITE
from harness import Broker, Serve, free_port, lockerctl


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from lockerctl.broker import make_ca, make_server_cert

    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca(SITE)
    key, cert = make_server_cert(ca_key, ca_cert, ["localhost", "127.0.0.1"])
    (d / "ca.crt").write_bytes(ca_cert)
    (d / "dash.crt").write_bytes(cert)
    (d / "dash.key").write_bytes(key)
    (d / "other.crt").write_bytes(make_ca("elsewhere")[1])
    return d


@pytest.fixture(scope="module")
def https_serve(tmp_path_factory, pki):
    tmp = tmp_path_factory.mktemp("https")
    db = f"sqlite:///{tmp / 'lockers.db'}"
    lockerctl("locker", "add", "L1", "--bays", 4, db=db)
    lockerctl(
        "user",
        "add",
        "olive",
        "--role",
        "office",
        "--password-stdin",
        db=db,
        input=PASSWORDS["olive"] + "\n",
    )
    broker = Broker(tmp).start()
    port = free_port()
    extra = ("--http-cert", str(pki / "dash.crt"), "--http-key", str(pki / "dash.key"))
    serve = Serve(tmp, db, broker, http_port=port, extra=extra).start()
    yield port
    serve.stop()
    broker.kill()


def _get(port, ca, path="/login", method="GET", body=None, headers=None):
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read().decode("utf-8", "replace")
    conn.close()
    return resp, data


def test_login_over_https_gets_a_secure_cookie_and_hsts(https_serve, pki):
    resp, body = _get(https_serve, pki / "ca.crt")
    assert resp.status == 200 and "Sign in" in body
    assert resp.getheader("Strict-Transport-Security") == "max-age=31536000"
    login_cookie = resp.getheader("Set-Cookie").split(";")[0]
    assert "; Secure" in resp.getheader("Set-Cookie")
    csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    form = urllib.parse.urlencode(
        {"username": "olive", "password": PASSWORDS["olive"], "csrf": csrf}
    )
    resp, _ = _get(
        https_serve,
        pki / "ca.crt",
        method="POST",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": login_cookie,
        },
    )
    assert resp.status == 303, resp.status
    session = [v for v in resp.headers.get_all("Set-Cookie") if v.startswith("cl_session=")][0]
    assert "Secure" in session and "HttpOnly" in session and "SameSite=Strict" in session


def test_a_client_that_does_not_trust_the_certificate_is_refused(https_serve, pki):
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(https_serve, pki / "other.crt")


def test_plain_http_on_the_https_port_gets_no_page(https_serve):
    conn = http.client.HTTPConnection("127.0.0.1", https_serve, timeout=10)
    try:
        conn.request("GET", "/login")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.getresponse()
    finally:
        conn.close()


def test_chromium_signs_in_over_https(https_serve, pki, browser):
    ctx = browser.new_context(ignore_https_errors=True)  # the test CA is not in chromium's store
    try:
        page = ctx.new_page()
        page.goto(f"https://127.0.0.1:{https_serve}/login")
        page.fill("#username", "olive")
        page.fill("#password", PASSWORDS["olive"])
        page.click("button[type=submit]")
        page.wait_for_url("**/lockers")
        cookies = {c["name"]: c for c in ctx.cookies()}
        assert cookies["cl_session"]["secure"] and cookies["cl_session"]["httpOnly"]
    finally:
        ctx.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--http-cert", "{pki}/dash.crt"), "--http-cert and --http-key go together"),
        (("--http-cert", "{pki}/nope.crt", "--http-key", "{pki}/dash.key"), "nope.crt: no such"),
        (
            ("--http-cert", "{pki}/dash.crt", "--http-key", "{pki}/ca.crt"),
            "are not a PEM certificate and its private key",
        ),
    ],
)
def test_unusable_certificate_files_are_one_line_errors(tmp_path, pki, args, message):
    argv = [a.format(pki=pki) for a in args]
    proc = lockerctl(
        "serve",
        "--http",
        f"127.0.0.1:{free_port()}",
        *argv,
        "--broker",
        "127.0.0.1:9",
        db=f"sqlite:///{tmp_path / 'x.db'}",
        check=False,
        timeout=30,
    )
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
