"""Signing in and out: `/login` (a form with `username`, `password` and a hidden `csrf` tied to
the `cl_login` cookie; a script may post the two fields alone unless an `Origin` header names
another site), `/logout`, and `/` (to the lockers)."""

from __future__ import annotations

import hmac
import secrets
import time
import urllib.parse

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..deps import FORM, Viewer, client_address, ctx, current
from ..forms import Form
from ..middleware import COOKIE, LOGIN_COOKIE
from ..templating import render

router = APIRouter(include_in_schema=False)


def set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    """A session-style cookie: HttpOnly, SameSite=Strict, whole site."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    response.headers.append("set-cookie", "; ".join(parts))


def login_form(request: Request, message: str = "", status: int = 200, username: str = ""):
    c = ctx(request)
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        "Sign in",
        status=status,
        message=message,
        username=username,
        login_token=token,
        sso=c.oidc is not None,
    )
    set_cookie(response, LOGIN_COOKIE, token, 3600)
    return response


@router.get("/login")
def login_get(request: Request):
    if current(request) is not None:
        return RedirectResponse("/lockers", 303)
    return login_form(request)


async def _login_body(request: Request) -> Form:
    from ..forms import read_form

    return await read_form(request)


@router.post("/login")
def login_post(request: Request, f: Form = Depends(_login_body)):
    c = ctx(request)
    # The login form carries a token matched to a cookie; a token that does not match is
    # refused. A client that sends no token (a script posting the two fields) is accepted
    # unless the browser says the form came from another origin.
    sent, cookie = f.fields.get("csrf"), request.cookies.get(LOGIN_COOKIE)
    if sent and not (cookie and hmac.compare_digest(sent, cookie)):
        return login_form(request, "The sign-in form expired; please try again.", 403)
    origin = request.headers.get("origin")
    if origin and urllib.parse.urlsplit(origin).netloc != request.headers.get("host", ""):
        return login_form(request, "Sign-in from another site refused.", 403)
    username = f.get("username").strip()
    password = f.get("password")
    client = client_address(request)
    # The attempt is counted before the (slow) password check, so parallel guesses cannot
    # all pass the limit; only this address is limited for this user.
    wait = c.login_limiter.begin(username, client)
    if wait:
        message = f"Too many failed sign-ins; try again in {int(wait) + 1} seconds."
        return login_form(request, message, 429, username)
    user = c.accounts.authenticate(username, password) if username else None
    if user is None:
        c.store.record_action(
            c.site, "web", "login_failed", {"username": username[:64], "client": client}
        )
        time.sleep(c.login_limiter.delay(c.login_limiter.failures(username, client)))
        return login_form(request, "Wrong username or password.", 401, username)
    c.login_limiter.succeeded(username, client)
    token, _ = c.accounts.create_session(user)
    c.store.record_action(c.site, f"web:{user.username}", "login", {"client": client})
    response = RedirectResponse("/lockers", 303)
    set_cookie(response, COOKIE, token)
    set_cookie(response, LOGIN_COOKIE, "", 0)
    return response


@router.post("/logout")
def logout(request: Request, f: Form = FORM):
    c = ctx(request)
    v: Viewer | None = current(request)
    if v is not None and v.token:
        c.accounts.end_session(v.token)
        c.store.record_action(c.site, v.actor, "logout", {})
    response = RedirectResponse("/login", 303)
    set_cookie(response, COOKIE, "", 0)
    return response


@router.get("/")
def home():
    return RedirectResponse("/lockers", 303)


@router.get("/favicon.ico")
def favicon():
    return Response(status_code=204)
