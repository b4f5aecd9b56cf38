"""FastAPI dependencies of the dashboard's routes: the shared `Context`, the signed-in account
with the role check (`viewer(roles)`), and the form, read only after those checks and with the
CSRF check (`form(limit)`).

    @router.post("/grants")
    def grants_post(request: Request, v: Viewer = SLT_ONLY, f: Form = FORM): ...

FastAPI solves a route's dependencies in the order of its parameters, and `form` itself depends
on the viewer: the role is checked before a byte of the body is read.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .. import alerts as alerts_mod
from ..accounts import Session, User
from .context import ADMIN, ALL, SLT, Context
from .forms import MAX_FORM_BODY, Form, read_form

NAMES_ROLES = ("slt", "admin")  # who sees holder names
CSRF_FAILED = (
    "the form has expired or did not come from this dashboard (CSRF check failed); reload the page"
)


def ctx(request: Request) -> Context:
    return request.app.state.ctx


@dataclass(frozen=True)
class Viewer:
    """The signed-in account of a request (by its session cookie or an API token)."""

    session: Session
    token: str | None  # the session cookie's token (None with an API token)
    via_api_token: bool = False

    @property
    def user(self) -> User:
        return self.session.user

    @property
    def role(self) -> str:
        return self.session.user.role

    @property
    def actor(self) -> str:
        return f"web:{self.session.user.username}"

    @property
    def sees_names(self) -> bool:
        return self.role in NAMES_ROLES


def current(request: Request) -> Viewer | None:
    session = getattr(request.state, "session", None)
    if session is None:
        return None
    return Viewer(session, request.state.token, getattr(request.state, "via_api_token", False))


def viewer(roles=ALL):
    """A dependency: the signed-in account, 403 unless its role is one of `roles`."""

    async def dependency(request: Request) -> Viewer:
        v = current(request)
        if v is None:
            raise HTTPException(403, "not signed in")
        if v.role not in roles:
            raise HTTPException(403, f"your role ({v.role}) may not use this page")
        return v

    return Depends(dependency)


ANY_ROLE = viewer(ALL)
SLT_ONLY = viewer(SLT)
ADMIN_ONLY = viewer(ADMIN)


def form(limit: int = MAX_FORM_BODY, roles=ALL, csrf: bool = True):
    """A dependency: the request's form (`forms.read_form`, at most `limit` bytes), read after
    the role check; with `csrf`, 403 unless its `csrf` field is the session's token."""

    role = viewer(roles)

    async def dependency(request: Request, v: Viewer = role) -> Form:
        got = await read_form(request, limit)
        if csrf:
            sent = got.get("csrf")
            if not sent or not hmac.compare_digest(sent, v.session.csrf):
                raise HTTPException(403, CSRF_FAILED)
        return got

    return Depends(dependency)


FORM = form()
SLT_FORM = form(roles=SLT)
ADMIN_FORM = form(roles=ADMIN)


def open_alert_count(c: Context) -> int:
    try:
        found, _ = alerts_mod.compute(c.store, c.site, c.accounts.acknowledgements())
    except Exception:
        return 0
    return sum(1 for a in found if a.acked_by is None)


def mail_trouble(c: Context) -> str | None:
    """One line for every page while urgent alerts' e-mails are failing (the mail server did
    not take the latest try: down, refusing, a wrong password), else None."""
    from ..mailer import note
    from ..store import alerts as store_alerts

    try:
        status = store_alerts.mail_status(c.store, c.site)
    except Exception:
        return None
    return note(status, c.timezone()) if status["failing"] else None


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""
