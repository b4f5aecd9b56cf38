"""API tokens (`/account/tokens`): an account holder makes and revokes its own tokens for the
JSON API; an admin sees every account's tokens and may make one for, or revoke one of, any
account. A new token is shown once; the store keeps only its SHA-256 (`store/tokens.py`)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse

from ...store import StoreError
from ...store import tokens as store_tokens
from ..deps import ANY_ROLE, FORM, Viewer, ctx
from ..forms import Form
from ..templating import render

router = APIRouter(include_in_schema=False)


def tokens_page(request: Request, v: Viewer, new_token: str = "", message: str = "", status=200):
    c = ctx(request)
    admin = v.role == "admin"
    held = store_tokens.tokens(c.store, c.site, None if admin else v.user.username)
    return render(
        request,
        "tokens.html",
        "API tokens",
        "/account/tokens",
        status,
        tokens=held,
        admin=admin,
        usernames=[u.username for u in c.accounts.users()] if admin else [],
        me=v.user.username,
        new_token=new_token,
        message=message,
        zone=c.timezone(),
    )


@router.get("/account/tokens")
def tokens_get(request: Request, v: Viewer = ANY_ROLE):
    return tokens_page(request, v)


@router.post("/account/tokens")
def tokens_post(request: Request, v: Viewer = ANY_ROLE, f: Form = FORM):
    c = ctx(request)
    owner = v.user.username
    if v.role == "admin" and f.get("username").strip():
        owner = f.get("username").strip()
    try:
        token, _ = store_tokens.add_token(c.store, c.site, owner, f.get("label"), v.actor)
    except StoreError as err:
        return tokens_page(request, v, message=str(err), status=400)
    return tokens_page(request, v, new_token=token)


@router.post("/account/tokens/revoke")
def tokens_revoke(request: Request, v: Viewer = ANY_ROLE, f: Form = FORM):
    c = ctx(request)
    only = None if v.role == "admin" else v.user.username
    try:
        tid = int(f.get("id"))
        if not 0 < tid < 2**63:
            raise StoreError(f"no API token {tid}")
        store_tokens.revoke_token(c.store, c.site, tid, v.actor, username=only)
        c.flash(v.token, "ok", f"API token {tid} revoked.")
    except (ValueError, StoreError) as err:
        c.flash(v.token, "error", str(err))
    return RedirectResponse("/account/tokens", 303)
