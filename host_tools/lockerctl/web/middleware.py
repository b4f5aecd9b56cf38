"""The dashboard's ASGI middleware, outermost first:

- `SecurityHeaders`: the Content-Security-Policy (only the dashboard's own files; no inline
  script or style), `nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy`, `Cache-Control:
  no-store` unless the route set one; over HTTPS also HSTS and `Secure` on every cookie.
- `BodyBounds`: the body's framing is checked on the head alone, before anything is read (400 a
  bad length, 411 a POST without one, 413 past the largest body any route reads, 501 a transfer
  coding other than chunked); a body that was not read to its end closes the connection after
  the answer (`Connection: close`). Routes read bodies through `forms.read_form`, which counts
  them against the route's own bound.
- `Authentication`: the session of the `cl_session` cookie (or, under `/api/`, the account of an
  `Authorization: Bearer` API token) is put in `request.state`; an anonymous request for anything
  but a public path gets the login page (GET), 401 (`/api/`) or 403 (any other method), before
  the route is looked up and before its body is read.
"""

from __future__ import annotations

import json
import re

from anyio import to_thread
from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..accounts import Session
from ..store import tokens as store_tokens
from .forms import MAX_BODY, MAX_FORM_BODY

COOKIE = "cl_session"
LOGIN_COOKIE = "cl_login"  # the login form's CSRF token, before there is a session
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
PUBLIC_PREFIXES = ("/static/",)
_LENGTH_RE = re.compile(rb"[0-9]{1,15}\Z")


def error_page(status: int, message: str, close: bool = False) -> Response:
    """The page for an HTTP error: the message, escaped, and a way back."""
    from .templating import render_error

    headers = {"connection": "close"} if close else None
    return HTMLResponse(render_error(status, message), status, headers=headers)


class SecurityHeaders:
    def __init__(self, app, tls: bool = False):
        self.app = app
        self.tls = tls

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", []):
                    if self.tls and name.lower() == b"set-cookie":
                        value += b"; Secure"  # never sent back over plain HTTP
                    headers.append((name, value))
                headers += SECURITY_HEADERS
                if not any(n.lower() == b"cache-control" for n, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                if self.tls:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def framing_problem(method: str, headers: Headers) -> tuple[int, str] | None:
    """(status, reason) when the body's framing is refused on the head alone."""
    te = headers.getlist("transfer-encoding")
    cl = headers.getlist("content-length")
    if te and cl:
        return 400, "both Transfer-Encoding and Content-Length"
    multipart = headers.get("content-type", "").split(";", 1)[0].strip().lower() == (
        "multipart/form-data"
    )
    limit = MAX_BODY if multipart else MAX_FORM_BODY
    if te:
        if [v.strip().lower() for v in ",".join(te).split(",")] != ["chunked"]:
            return 501, "only the chunked transfer coding is understood"
        return None
    if len(cl) > 1 or (cl and not _LENGTH_RE.match(cl[0].strip().encode())):
        return 400, "bad Content-Length"
    if not cl:
        return (411, "a POST needs a Content-Length") if method == "POST" else None
    if int(cl[0]) > limit:
        return 413, f"request body too large (at most {limit // 1024} KiB)"
    return None


class BodyBounds:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        problem = framing_problem(scope["method"], headers)
        if problem is not None:
            return await error_page(*problem, close=True)(scope, receive, send)
        length = headers.get("content-length", "0").strip()
        pending = bool(headers.get("transfer-encoding")) or length not in ("", "0")
        done = not pending

        async def receive_counted():
            nonlocal done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                done = True
            return message

        async def send_closing(message):
            if message["type"] == "http.response.start" and not done:
                # a body left unread ends the connection
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"connection", b"close")],
                }
            await send(message)

        await self.app(scope, receive_counted, send_closing)


def bearer(headers: Headers) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class Authentication:
    def __init__(self, app, ctx):
        self.app = app
        self.ctx = ctx

    def _lookup(self, token: str | None, api_token: str | None):
        """(session, cookie token) of the request; an API token makes a session of its own
        (no CSRF token: it is never sent by a browser by itself)."""
        if api_token is not None:
            username = store_tokens.token_user(self.ctx.store, self.ctx.site, api_token)
            user = self.ctx.accounts.user(username) if username else None
            return (Session(user, "", 0) if user is not None else None), None
        session = self.ctx.accounts.session(token) if token else None
        return session, (token if session else None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        state = scope.setdefault("state", {})
        headers = Headers(scope=scope)
        if path.startswith(PUBLIC_PREFIXES):
            state["session"], state["token"], state["via_api_token"] = None, None, False
            return await self.app(scope, receive, send)
        from starlette.requests import cookie_parser

        cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE)
        api_token = bearer(headers) if path.startswith("/api/") else None
        session, token = await to_thread.run_sync(self._lookup, cookie, api_token)
        state["session"], state["token"] = session, token
        state["via_api_token"] = api_token is not None
        if session is None and path not in self.ctx.public:
            response = self.refuse(path, scope["method"], api_token is not None)
            return await response(scope, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    def refuse(path: str, method: str, bad_token: bool) -> Response:
        if path.startswith("/api/"):
            message = "bad or revoked API token" if bad_token else "not signed in"
            return Response(
                json.dumps({"error": message}),
                401,
                media_type="application/json",
                headers={"www-authenticate": 'Bearer realm="classlocker"'},
            )
        if method in ("GET", "HEAD"):
            return RedirectResponse("/login", 303)
        return error_page(403, "not signed in")


class HeadAsGet:
    """A HEAD request is answered as its GET, without the body."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_head(message):
            if message["type"] == "http.response.body":
                message = {"type": "http.response.body", "body": b"", "more_body": False}
                if getattr(send_head, "done", False):
                    return
                send_head.done = True  # type: ignore[attr-defined]
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_head)
