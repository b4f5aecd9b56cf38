"""Sign-in with the school's accounts: OpenID Connect (Microsoft Entra ID, Google Workspace, or
any provider with discovery), with `authlib`.

`lockerctl serve --oidc-issuer URL --oidc-client-id ID --oidc-client-secret-file FILE` turns it
on. The provider's endpoints and keys come from `URL/.well-known/openid-configuration` (fetched at
the first sign-in, not at start, so a provider that is down never stops the service; its
`issuer` must be URL). The flow is the authorization code flow with PKCE (S256):

- `GET /login/sso` makes a fresh `state`, `nonce` and PKCE verifier, keeps them in memory for
  ten minutes under the state, binds them to this browser with a random value in the `cl_sso`
  cookie (HttpOnly, SameSite=Lax: it has to come back on the provider's redirect) and redirects
  to the provider;
- `GET /login/sso/callback?code=&state=` takes the pending sign-in of that state (once: a state
  is never accepted twice) and checks the cookie; exchanges the code (with the verifier) for
  tokens; authlib verifies the ID token's signature (the provider's JWKS), `iss`, `aud`, `exp`,
  `iat` and `nonce`. The verified `email` claim (refused when the provider says
  `email_verified: false`) is matched, case-insensitively, against the accounts made with
  `lockerctl user add EMAIL --role ROLE --sso`; a match gets a session with that role, any
  other address a 403 page, recorded in the trail as `sso_refused`. A failed check (state,
  cookie, token, signature, nonce...) is a 4xx page, recorded as `sso_failed` with the reason.
  Past 30 failures or refusals from one client address in 5 minutes, the callback answers 429
  and records nothing more until the window has passed.

Local passwords (`/login`) keep working beside it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..accounts import RateLimiter
from .middleware import COOKIE
from .templating import render_to_string

log = logging.getLogger("lockerctl.web")

SSO_COOKIE = "cl_sso"
PENDING_SECONDS = 600  # a sign-in started must come back within this
# Failed or refused sign-ins per client address: past the limit the callback answers 429 and
# records nothing (the trail is not a place an anonymous client may fill).
FAILURES_PER_CLIENT, FAILURE_WINDOW = 30, 300
MAX_PENDING = 10000  # sign-ins started and not finished, kept in memory (oldest dropped)
SCOPES = "openid email profile"
CALLBACK = "/login/sso/callback"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?\Z|\[[0-9A-Fa-f:.]+\](:\d{1,5})?\Z")


@dataclass(frozen=True)
class Settings:
    """What `serve --oidc-*` gives."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str | None = None  # default: this dashboard's own URL + CALLBACK

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _check_url(name: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{name} {url!r} is not an https:// URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError(f"{name} {url!r} must use https:// (http only on this machine)")
    if parts.query or parts.fragment:
        raise ValueError(f"{name} {url!r} must not have a query or a fragment")
    return url


def load_settings(
    issuer: str, client_id: str, secret_file: str, redirect_uri: str | None = None
) -> Settings:
    """Settings from the command line's values; ValueError with a one-line reason."""
    _check_url("--oidc-issuer", issuer or "")
    if not client_id or not client_id.strip() or len(client_id) > 400:
        raise ValueError("--oidc-client-id must not be empty")
    if redirect_uri:
        _check_url("--oidc-redirect-uri", redirect_uri)
    try:
        with open(secret_file, "rb") as f:
            raw = f.read(8193)
    except FileNotFoundError:
        raise ValueError(f"--oidc-client-secret-file {secret_file}: no such file") from None
    except OSError as err:
        raise ValueError(f"--oidc-client-secret-file {secret_file}: {err.strerror}") from None
    try:
        secret = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"--oidc-client-secret-file {secret_file}: not UTF-8 text") from None
    if not secret or len(raw) > 8192 or "\n" in secret:
        raise ValueError(
            f"--oidc-client-secret-file {secret_file}: must hold the client secret alone, "
            "on one line"
        )
    return Settings(issuer.rstrip("/"), client_id.strip(), secret, redirect_uri)


def _client_class():
    from authlib.integrations.base_client import BaseApp, OAuth2Mixin, OpenIDMixin
    from authlib.integrations.requests_client import OAuth2Session

    class Client(OAuth2Mixin, OpenIDMixin, BaseApp):
        """authlib's OpenID Connect client, without a web framework (this dashboard has its
        own): discovery, the authorization URL with PKCE and nonce, the code exchange and the
        ID token's verification."""

        client_cls = OAuth2Session

    return Client


@dataclass
class _Pending:
    binding: str  # SHA-256 of the browser's cl_sso cookie
    nonce: str
    code_verifier: str
    redirect_uri: str
    started: float


class SignIn:
    """The OpenID Connect sign-in of one dashboard."""

    def __init__(self, ctx, settings: Settings, scheme: str = "http", clock=time.monotonic):
        self.ctx = ctx
        self.settings = settings
        self.scheme = scheme
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self.limiter = RateLimiter(FAILURES_PER_CLIENT, FAILURE_WINDOW)
        self._lock = threading.Lock()
        self.client = _client_class()(
            None,
            name="school",
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            server_metadata_url=settings.discovery_url,
            client_kwargs={
                "scope": SCOPES,
                "code_challenge_method": "S256",
                "default_timeout": 10,
            },
        )

    # the provider

    def metadata(self) -> dict:
        """The provider's discovery document (fetched once, then kept). HTTPException 502 when it
        cannot be had or names another issuer."""
        import requests

        try:
            meta = self.client.load_server_metadata()
        except (requests.RequestException, ValueError) as err:
            log.warning(
                "OpenID Connect discovery at %s failed: %s", self.settings.discovery_url, err
            )
            raise HTTPException(
                502,
                "The school's sign-in service could not be reached. Try again in a moment, "
                "or sign in with a username and password.",
            ) from None
        missing = [
            k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not meta.get(k)
        ]
        if missing:
            self.client.server_metadata.pop("_loaded_at", None)
            log.error(
                "OpenID Connect: %s has no %s", self.settings.discovery_url, ", ".join(missing)
            )
            raise HTTPException(502, "The school's sign-in service is misconfigured (discovery).")
        issuer = str(meta.get("issuer", "")).rstrip("/")
        if issuer != self.settings.issuer:
            self.client.server_metadata.pop("_loaded_at", None)  # fetch again next time
            log.error(
                "OpenID Connect: %s names issuer %r, not %r (check --oidc-issuer)",
                self.settings.discovery_url,
                issuer,
                self.settings.issuer,
            )
            raise HTTPException(502, "The school's sign-in service is misconfigured (issuer).")
        return meta

    def redirect_uri(self, req: Request) -> str:
        if self.settings.redirect_uri:
            return self.settings.redirect_uri
        host = req.headers.get("host", "")
        if not _HOST_RE.match(host):
            raise HTTPException(400, "bad Host header")
        return f"{self.scheme}://{host}{CALLBACK}"

    # the two steps

    def start(self, req: Request) -> Response:
        if getattr(req.state, "session", None) is not None:
            return RedirectResponse("/lockers", 303)
        self.metadata()
        redirect_uri = self.redirect_uri(req)
        nonce = secrets.token_urlsafe(24)
        code_verifier = secrets.token_urlsafe(48)
        rv = self.client.create_authorization_url(
            redirect_uri,
            state=secrets.token_urlsafe(24),
            nonce=nonce,
            code_verifier=code_verifier,
        )
        binding = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._expire(now)
            self._pending[rv["state"]] = _Pending(
                _digest(binding), nonce, code_verifier, redirect_uri, now
            )
        resp = RedirectResponse(rv["url"], 303)
        resp.headers.append("set-cookie", _sso_cookie(binding, PENDING_SECONDS))
        return resp

    def callback(self, req: Request) -> Response:
        state = req.query_params.get("state", "")
        client = _client(req)
        with self._lock:
            self._expire(self.clock())
            pending = self._pending.pop(state, None) if state else None
        wait = self.limiter.blocked(client)
        if wait:
            message = (
                "Too many failed sign-ins from this address; "
                f"try again in {int(wait) + 1} seconds."
            )
            return _page("sso_failed.html", "Sign-in failed", 429, message=message)
        if req.query_params.get("error"):
            # The provider's answer is a refusal (the person cancelled, no access...): nothing to
            # check, nobody signed in. Some providers leave the state out of it.
            return self.failed(
                req,
                403,
                f"provider: {req.query_params.get('error', '')[:100]}",
                "The school's sign-in service did not sign you in.",
            )
        cookie = req.cookies.get(SSO_COOKIE, "")
        if pending is None or not hmac.compare_digest(_digest(cookie), pending.binding):
            return self.failed(
                req,
                400,
                "state",
                "This sign-in was not started here, has expired or was already used.",
            )
        code = req.query_params.get("code", "")
        if not code:
            return self.failed(req, 400, "no code", "The sign-in service sent no code.")
        claims = self.verify(req, code, pending)
        if isinstance(claims, Response):  # a refusal page
            return claims
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            return self.failed(
                req,
                403,
                "no email claim",
                "The school's sign-in service sent no e-mail address (the app registration "
                "needs the email scope).",
            )
        verified = claims.get("email_verified")
        if verified is False or str(verified).lower() == "false":
            return self.failed(
                req, 403, "email not verified", "Your e-mail address is not verified."
            )
        email = email.strip().lower()[:254]
        user = self.ctx.accounts.sso_user(email)
        if user is None:
            self.limiter.fail(client)
            self.ctx.store.record_action(
                self.ctx.site,
                "web",
                "sso_refused",
                {"email": email, "client": client, "issuer": self.settings.issuer},
            )
            resp = _page("sso_refused.html", "Not allowed", 403, email=email)
            resp.headers.append("set-cookie", _sso_cookie("", 0))
            return resp
        token, _ = self.ctx.accounts.create_session(user)
        self.ctx.store.record_action(
            self.ctx.site, f"web:{user.username}", "login", {"client": client, "sso": True}
        )
        # The provider's redirect is a cross-site navigation: a redirect from it would not carry
        # the SameSite=Strict session cookie to /lockers. A page of ours that moves on does.
        resp = _page("sso_signed_in.html", "Signed in", 200, username=user.username)
        resp.headers.append("set-cookie", f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
        resp.headers.append("set-cookie", _sso_cookie("", 0))
        return resp

    def verify(self, req: Request, code: str, pending: _Pending):
        """The ID token's verified claims, or a refusal page."""
        import requests
        from authlib.integrations.base_client import OAuthError
        from joserfc.errors import JoseError

        self.metadata()
        try:
            token = self.client.fetch_access_token(
                redirect_uri=pending.redirect_uri,
                code=code,
                code_verifier=pending.code_verifier,
            )
        except OAuthError as err:
            return self.failed(
                req,
                403,
                f"token: {err.error}",
                "The school's sign-in service refused the sign-in code.",
            )
        except (requests.RequestException, ValueError) as err:
            log.warning("OpenID Connect token request failed: %s", err)
            return self.failed(
                req, 502, "token: no answer", "The school's sign-in service could not be reached."
            )
        try:
            claims = self.client.parse_id_token(token, nonce=pending.nonce)
        except (JoseError, ValueError, TypeError, KeyError) as err:
            reason = getattr(err, "error", None) or err.__class__.__name__
            detail = getattr(err, "description", None) or str(err)
            return self.failed(
                req,
                403,
                f"id_token: {reason}: {detail}"[:200],
                "The answer from the school's sign-in service did not verify.",
            )
        except requests.RequestException:
            return self.failed(
                req, 502, "jwks: no answer", "The school's sign-in service could not be reached."
            )
        if claims is None:
            return self.failed(req, 403, "no id_token", "The sign-in service sent no ID token.")
        return dict(claims)

    def failed(self, req: Request, status: int, reason: str, message: str) -> Response:
        client = _client(req)
        self.limiter.fail(client)
        self.ctx.store.record_action(
            self.ctx.site, "web", "sso_failed", {"reason": reason, "client": client}
        )
        resp = _page("sso_failed.html", "Sign-in failed", status, message=message)
        resp.headers.append("set-cookie", _sso_cookie("", 0))
        return resp

    def _expire(self, now: float) -> None:
        for state in [s for s, p in self._pending.items() if now - p.started > PENDING_SECONDS]:
            del self._pending[state]
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _sso_cookie(value: str, max_age: int) -> str:
    # SameSite=Lax, not Strict: the provider's redirect back is a cross-site navigation.
    return f"{SSO_COOKIE}={value}; Path=/login/sso; HttpOnly; SameSite=Lax; Max-Age={max_age}"


def _client(req: Request) -> str:
    return req.client.host if req.client else ""


def _page(template: str, title: str, status: int, **values) -> HTMLResponse:
    html = render_to_string(
        template,
        title=title,
        user=None,
        nav=[],
        flash=None,
        active="",
        alert_count=0,
        csrf="",
        **values,
    )
    return HTMLResponse(html, status)


router = APIRouter(include_in_schema=False)


@router.get("/login/sso")
def sso_start(request: Request):
    sign_in = request.app.state.ctx.oidc
    if sign_in is None:
        raise HTTPException(404, "no such page")
    return sign_in.start(request)


@router.get(CALLBACK)
def sso_callback(request: Request):
    sign_in = request.app.state.ctx.oidc
    if sign_in is None:
        raise HTTPException(404, "no such page")
    return sign_in.callback(request)


def register(ctx, settings: Settings, scheme: str = "http") -> SignIn:
    """Turns on `/login/sso` and its callback for the dashboard of `ctx`, and the link on the
    login page."""
    ctx.public.update(("/login/sso", CALLBACK))
    ctx.oidc = SignIn(ctx, settings, scheme)
    return ctx.oidc
