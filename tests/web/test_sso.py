"""Sign-in with the school's accounts, end to end: chromium, a real `lockerctl serve --http
--oidc-*` on mosquitto, and a real OpenID Connect provider on this machine
(`oidc-provider-mock`: discovery, JWKS, RS256-signed ID tokens, its own authorization page where
the test types the account's subject; an unknown subject gets the claim `email` = the subject).
"""

from __future__ import annotations

import re
import urllib.parse

import pytest
from conftest import SITE, login
from harness import Broker, Serve, free_port, lockerctl

oidc_provider_mock = pytest.importorskip("oidc_provider_mock")

CLIENT_ID = "classlocker-dashboard"


class SSO:
    def __init__(self, url, issuer, db_url, serve):
        self.url, self.issuer, self.db_url, self.serve = url, issuer, db_url, serve

    def actions(self, action: str) -> list[dict]:
        """The trail's actions named `action`, newest first."""
        from lockerctl.store import Store

        store = Store.open(self.db_url)
        try:
            return [a for a in store.trail_actions(SITE, limit=1000) if a["action"] == action]
        finally:
            store.close()


@pytest.fixture(scope="module")
def sso(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sso")
    db_url = f"sqlite:///{tmp / 'lockers.db'}"
    secret = tmp / "oidc-secret"
    secret.write_text("a-client-secret-from-the-provider\n")
    secret.chmod(0o600)
    lockerctl(
        "user",
        "add",
        "root",
        "--role",
        "admin",
        "--password-stdin",
        db=db_url,
        input="admin-pass-1\n",
    )
    lockerctl("user", "add", "Hana.Head@School.example", "--role", "slt", "--sso", db=db_url)
    lockerctl("user", "add", "olive@school.example", "--role", "office", "--sso", db=db_url)
    broker = Broker(tmp).start()
    serve = None
    try:
        with oidc_provider_mock.run_server_in_thread(require_nonce=True) as provider:
            issuer = f"http://localhost:{provider.server_port}"
            port = free_port()
            serve = Serve(
                tmp,
                db_url,
                broker,
                http_port=port,
                extra=[
                    "--oidc-issuer",
                    issuer,
                    "--oidc-client-id",
                    CLIENT_ID,
                    "--oidc-client-secret-file",
                    str(secret),
                ],
            ).start()
            yield SSO(f"http://127.0.0.1:{port}", issuer, db_url, serve)
    finally:
        if serve is not None:
            serve.kill()
        broker.kill()


def sign_in_at_provider(page, sso, subject: str, tampered: str = "") -> None:
    """From the login page through the provider's authorization page as `subject` (with
    `tampered`: once that parameter of the authorization request has been rewritten)."""
    page.goto(sso.url + "/login")
    page.get_by_role("link", name="Sign in with your school account").click()
    after = f".*[?&]{tampered}=tampered" if tampered else ""
    page.wait_for_url(
        re.compile(re.escape(sso.issuer) + r"/oauth2/authorize\?" + after), wait_until="commit"
    )
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    if tampered != "client_id":
        assert query["client_id"] == [CLIENT_ID]
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["nonce"][0] and query["state"][0]
    assert set(query["scope"][0].split()) == {"openid", "email", "profile"}
    page.fill("input[name=sub]", subject)
    page.get_by_role("button", name="Authorize").click()


def signed_in(page, sso) -> bool:
    page.goto(sso.url + "/lockers")
    return page.url == sso.url + "/lockers"


def test_an_address_with_a_role_signs_in_with_that_role(page, sso, shots):
    page.goto(sso.url + "/login")
    shots(page, "login-sso")
    before = len(sso.actions("login"))
    # The provider's address differs in case from the one the admin gave: matched anyway.
    sign_in_at_provider(page, sso, "hana.head@SCHOOL.example")
    page.wait_for_url(sso.url + "/lockers")
    who = page.locator("header .who").inner_text()
    assert "hana.head@school.example (slt)" in who
    nav = page.locator("nav[aria-label=Main]").inner_text()
    assert "Trail" in nav and "Grants" in nav  # slt's view
    assert "Users" not in nav and "Roster" not in nav  # not admin's
    logins = sso.actions("login")
    assert len(logins) == before + 1
    assert logins[0]["actor"] == "web:hana.head@school.example"
    assert logins[0]["detail"]["sso"] is True
    # An office account gets the office view.
    page.context.clear_cookies()
    sign_in_at_provider(page, sso, "olive@school.example")
    page.wait_for_url(sso.url + "/lockers")
    assert "olive@school.example (office)" in page.locator("header .who").inner_text()
    nav = page.locator("nav[aria-label=Main]").inner_text()
    assert "Emergency open" in nav and "Trail" not in nav and "Grants" not in nav


def test_an_address_without_a_role_is_refused_and_recorded(page, sso):
    sign_in_at_provider(page, sso, "stranger@school.example")
    page.wait_for_url(re.compile(re.escape(sso.url) + "/login/sso/callback"))
    assert "stranger@school.example has no role" in page.locator("main").inner_text()
    refused = sso.actions("sso_refused")
    assert refused and refused[0]["detail"]["email"] == "stranger@school.example"
    assert refused[0]["detail"]["issuer"] == sso.issuer
    assert not signed_in(page, sso)


def test_the_refusal_is_a_403(page, sso):
    statuses = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if "/login/sso/callback" in r.url else None,
    )
    sign_in_at_provider(page, sso, "nobody@elsewhere.example")
    page.wait_for_url(re.compile(re.escape(sso.url) + "/login/sso/callback"))
    assert statuses == [403]


def tamper(page, sso, name: str) -> list[str]:
    """Rewrites parameter `name` of the authorization request that the dashboard sends the
    browser to (the 303 of /login/sso), as an attacker's link would. Returns the old values."""
    old = []

    def handle(route):
        response = route.fetch(max_redirects=0)
        location = response.headers["location"]
        parts = urllib.parse.urlsplit(location)
        query = urllib.parse.parse_qs(parts.query)
        old.append(query[name][0])
        query[name] = ["tampered" + query[name][0][8:]]
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, True)))
        route.fulfill(response=response, headers={**response.headers, "location": url})

    page.route(sso.url + "/login/sso", handle)
    return old


def test_a_tampered_state_is_refused(page, sso):
    old = tamper(page, sso, "state")
    sign_in_at_provider(page, sso, "hana.head@school.example", tampered="state")
    page.wait_for_url(re.compile(re.escape(sso.url) + "/login/sso/callback"))
    assert old, "the authorization request was not rewritten"
    assert "tampered" in urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["state"][0]
    assert "was not started here" in page.locator("main").inner_text()
    assert sso.actions("sso_failed")[0]["detail"]["reason"] == "state"
    assert not signed_in(page, sso)


def test_a_tampered_nonce_is_refused(page, sso):
    old = tamper(page, sso, "nonce")
    sign_in_at_provider(page, sso, "hana.head@school.example", tampered="nonce")
    page.wait_for_url(re.compile(re.escape(sso.url) + "/login/sso/callback"))
    assert old, "the authorization request was not rewritten"
    assert "did not verify" in page.locator("main").inner_text()
    reason = sso.actions("sso_failed")[0]["detail"]["reason"]
    assert reason.startswith("id_token:") and "nonce" in reason
    assert not signed_in(page, sso)


def test_a_code_for_another_client_is_refused(page, sso):
    # The authorization request names another client: the provider's code is for that client,
    # and the exchange with this dashboard's client id and secret is refused.
    old = tamper(page, sso, "client_id")
    sign_in_at_provider(page, sso, "hana.head@school.example", tampered="client_id")
    page.wait_for_url(re.compile(re.escape(sso.url) + "/login/sso/callback"))
    assert old == [CLIENT_ID]
    assert "refused the sign-in code" in page.locator("main").inner_text()
    assert sso.actions("sso_failed")[0]["detail"]["reason"].startswith("token: ")
    assert not signed_in(page, sso)


def test_a_sign_in_the_person_cancels_is_refused(page, sso):
    page.goto(sso.url + "/login")
    page.get_by_role("link", name="Sign in with your school account").click()
    page.wait_for_url(
        re.compile(re.escape(sso.issuer) + r"/oauth2/authorize\?"), wait_until="commit"
    )
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(re.compile(re.escape(sso.url) + "/login/sso/callback"))
    assert "did not sign you in" in page.locator("main").inner_text()
    assert sso.actions("sso_failed")[0]["detail"]["reason"] == "provider: access_denied"
    assert not signed_in(page, sso)


def test_no_sign_in_link_without_oidc(page, dash):
    page.goto(dash.url + "/login")
    assert page.locator("#username").count() == 1
    assert page.get_by_text("Sign in with your school account").count() == 0
    page.goto(dash.url + "/login/sso")
    assert page.url == dash.url + "/login"  # not a page here: the sign-in form


def test_a_callback_replayed_is_refused(page, sso):
    callbacks = []
    page.on("request", lambda r: callbacks.append(r.url) if "/sso/callback" in r.url else None)
    sign_in_at_provider(page, sso, "hana.head@school.example")
    page.wait_for_url(sso.url + "/lockers")
    assert len(callbacks) == 1
    # The provider's redirect back (code and state), opened again in a fresh browser: refused,
    # though the code was never shown to anyone else.
    page.context.clear_cookies()
    response = page.goto(callbacks[0])
    assert response.status == 400
    assert "was not started here" in page.locator("main").inner_text()
    assert not signed_in(page, sso)


def test_the_password_login_still_works_beside_it(page, sso):
    login(page, sso.url, "root", "admin-pass-1")
    assert "root (admin)" in page.locator("header .who").inner_text()
    page.goto(sso.url + "/login")  # signed in: sent on
    assert page.url == sso.url + "/lockers"


# -- the ID token's own checks, on a dashboard in this process ------------------------------------


@pytest.fixture
def local_sso(filled_store, tmp_path):
    """A dashboard in this process with single sign-on (so the test can reach its client), and
    a factory of mock providers: `start(**provider options)` returns the dashboard's URL."""
    import contextlib

    from lockerctl.accounts import Accounts
    from lockerctl.web import serve_store
    from lockerctl.web.oidc import load_settings

    Accounts(filled_store, SITE).add_sso_user("hana.head@school.example", "slt")
    secret = tmp_path / "secret"
    secret.write_text("secret\n")
    with contextlib.ExitStack() as stack:

        def start(**options):
            provider = stack.enter_context(
                oidc_provider_mock.run_server_in_thread(require_nonce=True, **options)
            )
            issuer = f"http://localhost:{provider.server_port}"
            settings = load_settings(issuer, CLIENT_ID, str(secret))
            d = serve_store(filled_store, SITE, "127.0.0.1", 0, publish=None, oidc=settings)
            stack.callback(d.stop)
            return SSOLocal(d, issuer, filled_store)

        yield start


class SSOLocal(SSO):
    def __init__(self, dashboard, issuer, store):
        self.dashboard, self.url, self.issuer, self.store = dashboard, dashboard.url, issuer, store

    def actions(self, action: str) -> list[dict]:
        return [a for a in self.store.trail_actions(SITE, limit=1000) if a["action"] == action]


def test_an_id_token_signed_with_another_key_is_refused(page, local_sso):
    import json
    import urllib.request

    from joserfc.jwk import RSAKey

    sso = local_sso()
    with urllib.request.urlopen(sso.issuer + "/jwks", timeout=10) as resp:
        kid = json.load(resp)["keys"][0]["kid"]
    # The dashboard is given, under the provider's key id, a key that is not the provider's.
    client = sso.dashboard.app.oidc.client
    client.load_server_metadata()
    forged = RSAKey.generate_key(2048, parameters={"kid": kid}).as_dict(private=False)
    client.server_metadata["jwks"] = {"keys": [forged]}
    sign_in_at_provider(page, sso, "hana.head@school.example")
    page.wait_for_url(re.compile(re.escape(sso.url) + "/login/sso/callback"))
    assert "did not verify" in page.locator("main").inner_text()
    reason = sso.actions("sso_failed")[0]["detail"]["reason"]
    assert reason.startswith("id_token: bad_signature"), reason
    assert not signed_in(page, sso)


def test_an_expired_id_token_is_refused(page, local_sso):
    from datetime import timedelta

    sso = local_sso(access_token_max_age=timedelta(seconds=-600))  # exp 10 minutes ago
    sign_in_at_provider(page, sso, "hana.head@school.example")
    page.wait_for_url(re.compile(re.escape(sso.url) + "/login/sso/callback"))
    assert "did not verify" in page.locator("main").inner_text()
    reason = sso.actions("sso_failed")[0]["detail"]["reason"]
    assert reason.startswith("id_token: expired_token"), reason
    assert not signed_in(page, sso)


def test_the_same_dashboard_signs_in_with_the_real_keys(page, local_sso):
    sso = local_sso()
    sign_in_at_provider(page, sso, "hana.head@school.example")
    page.wait_for_url(sso.url + "/lockers")
    assert "hana.head@school.example (slt)" in page.locator("header .who").inner_text()


def test_failed_callbacks_are_limited_per_client(local_sso):
    import urllib.error
    import urllib.request

    sso = local_sso()
    statuses = []
    for n in range(32):
        url = f"{sso.url}/login/sso/callback?code=x&state=forged-{n}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                statuses.append(resp.status)
        except urllib.error.HTTPError as err:
            statuses.append(err.code)
    assert statuses == [400] * 30 + [429] * 2
    assert len(sso.actions("sso_failed")) == 30  # nothing recorded once limited
