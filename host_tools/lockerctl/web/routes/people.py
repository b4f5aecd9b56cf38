"""People (admins): the roster (`/admin/roster`: upload a CSV that replaces it, download it with
card numbers masked) and the dashboard's accounts (`/admin/users`: add, remove)."""

from __future__ import annotations

import io

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...store import StoreError
from ...store import tokens as store_tokens
from ..context import ADMIN
from ..deps import ADMIN_FORM, ADMIN_ONLY, Viewer, ctx, form
from ..forms import MAX_BODY, Form
from ..templating import render

router = APIRouter(include_in_schema=False)
UPLOAD_FORM = form(MAX_BODY, roles=ADMIN)


def roster_page(request: Request, problems=None, summary: str = "", status: int = 200):
    c = ctx(request)
    rows = c.store.roster(c.site)
    by_role: dict[str, int] = {}
    for r in rows:
        by_role[r.role] = by_role.get(r.role, 0) + 1
    roles = ", ".join(f"{n} {role}" for role, n in sorted(by_role.items())) or "none"
    return render(
        request,
        "roster.html",
        "Roster",
        "/admin/roster",
        status,
        people_n=len({r.person_id for r in rows}),
        cards_n=len(rows),
        roles=roles,
        problems=problems,
        summary=summary,
    )


@router.get("/admin/roster")
def roster_get(request: Request, v: Viewer = ADMIN_ONLY):
    return roster_page(request)


@router.post("/admin/roster")
def roster_post(request: Request, v: Viewer = ADMIN_ONLY, f: Form = UPLOAD_FORM):
    from ...roster import RosterError, parse_roster

    c = ctx(request)
    filename, data = f.files.get("roster", ("", b""))
    if not filename and not data:
        return roster_page(request, [(0, "no file chosen")], "Nothing imported.", 400)
    source = filename or "roster.csv"
    try:
        rows = parse_roster(data, source)
    except RosterError as err:
        return roster_page(request, err.problems, str(err), 400)
    try:
        counts = c.store.replace_roster(
            c.site, rows, actor=v.actor, detail={"source": source[:100]}
        )
    except StoreError as err:  # e.g. the lockers could not take it: nothing imported
        return roster_page(request, [(0, str(err))], "Nothing imported.", 400)
    c.flash(
        v.token,
        "ok",
        f"Roster imported from {source}: {counts['people']} people, "
        f"{counts['cards']} cards ({counts['added']} added, "
        f"{counts['updated']} updated, {counts['removed']} removed).",
    )
    return RedirectResponse("/admin/roster", 303)


@router.get("/admin/roster.csv")
def roster_csv(request: Request, v: Viewer = ADMIN_ONLY):
    from ...roster import write_roster

    c = ctx(request)
    buf = io.StringIO()
    n = write_roster(c.store.roster(c.site), buf)
    c.store.record_action(c.site, v.actor, "roster_export", {"rows": n})
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="roster-{c.site}.csv"'},
    )


# -- accounts -------------------------------------------------------------------------------------


def users_page(request: Request, v: Viewer, values: dict, message: str = "", status: int = 200):
    c = ctx(request)
    return render(
        request,
        "users.html",
        "Users",
        "/admin/users",
        status,
        users=c.accounts.users(),
        me=v.user.username,
        values=values,
        roles=[("office", "office"), ("slt", "SLT"), ("admin", "admin")],
        message=message,
    )


@router.get("/admin/users")
def users_get(request: Request, v: Viewer = ADMIN_ONLY):
    return users_page(request, v, {})


@router.post("/admin/users")
def users_post(request: Request, v: Viewer = ADMIN_ONLY, f: Form = ADMIN_FORM):
    c = ctx(request)
    values = {k: val for k, val in f.fields.items() if k != "new_password"}
    try:
        user = c.accounts.add_user(
            f.get("username").strip(),
            f.get("role"),
            f.get("new_password"),
            f.get("person").strip() or None,
            actor=v.actor,
        )
    except StoreError as err:
        return users_page(request, v, values, str(err), 400)
    c.flash(v.token, "ok", f"Account {user.username} ({user.role}) added.")
    return RedirectResponse("/admin/users", 303)


@router.post("/admin/users/remove")
def users_remove(request: Request, v: Viewer = ADMIN_ONLY, f: Form = ADMIN_FORM):
    """Removes an account once confirmed: without `confirm=yes` the page asks first (nothing
    is changed)."""
    c = ctx(request)
    name = f.get("username")
    if name == v.user.username:
        c.flash(v.token, "error", "You cannot remove your own account.")
        return RedirectResponse("/admin/users", 303)
    user = c.accounts.user(name) if name else None
    if user is None:
        c.flash(v.token, "error", f"no account {name[:64]!r}")
        return RedirectResponse("/admin/users", 303)
    if f.get("confirm") != "yes":
        return render(
            request,
            "confirm.html",
            "Remove an account",
            "/admin/users",
            question=f"Remove the account {user.username} ({user.role})?",
            lines=[
                "Its sessions and API tokens end at once and it can no longer sign in. What "
                "it did stays in the trail. This is recorded with your name."
            ],
            action="/admin/users/remove",
            hidden={"username": user.username},
            button="Remove the account",
            cancel="/admin/users",
        )
    try:
        c.accounts.remove_user(name, actor=v.actor)
        store_tokens.drop_tokens_of(c.store, c.site, name)
        c.flash(v.token, "ok", f"Account {name} removed.")
    except StoreError as err:
        c.flash(v.token, "error", str(err))
    return RedirectResponse("/admin/users", 303)
