"""Exception grants (`/grants`, SLT and admins): current and future grants, the person and the
`by` shown by name (with the id), with **Revoke** (which asks for confirmation: `POST
/grants/revoke` without `confirm=yes` only shows the question), and the form for a new one
(times in the site's timezone; the grant's `by` is the account's person)."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse

from ...bounds import check_text, local_timestamp
from ...display import person_label
from ...store import StoreError
from ...store import alerts as store_alerts
from ..deps import SLT_FORM, SLT_ONLY, Viewer, ctx, current
from ..forms import Form
from ..templating import local_time, render

router = APIRouter(include_in_schema=False)


def grants_page(request: Request, values: dict, message: str = "", status: int = 200):
    c = ctx(request)
    v = current(request)
    sees = v is not None and v.sees_names
    names = store_alerts.people_roles(c.store, c.site)
    zone = c.timezone()
    now = int(time.time())
    rows = [
        {
            "g": g,
            "status": "future" if g.from_ts > now else "active",
            "person": person_label(names, g.person_id, sees),
            "by": person_label(names, g.by, sees),
        }
        for g in c.store.grants(c.site, now=now)
    ]
    seen: set[str] = set()
    people = []
    for r in c.store.roster(c.site):
        if r.person_id not in seen:
            seen.add(r.person_id)
            people.append((r.person_id, r.name))
    return render(
        request,
        "grants.html",
        "Exception grants",
        "/grants",
        status,
        rows=rows,
        zone=zone,
        people=people,
        lockers=[("", "every locker")] + [(r.id, r.id) for r in c.store.lockers(c.site)],
        values=values,
        default_from=dt.datetime.now(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M"),
        message=message,
    )


@router.get("/grants")
def grants_get(request: Request, v: Viewer = SLT_ONLY):
    return grants_page(request, {})


def parse_local(text: str, zone: str, what: str) -> int:
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what}: expected a date and time like 2026-09-10T15:00") from None
    return local_timestamp(when, zone, what)


def create_grant(c, v: Viewer, f: Form) -> tuple[int, str]:
    """(grant id, person) of the grant the form asks for; ValueError/StoreError otherwise."""
    zone = c.timezone()
    person = f.get("person").strip()
    if c.store.person(c.site, person) is None:
        raise ValueError(f"{person or '(empty)'} is not on the roster")
    by = v.user.person_id
    if not by or c.store.person(c.site, by) is None:
        raise ValueError("your account is not linked to a person on the roster")
    start = parse_local(f.get("from"), zone, "From")
    end = parse_local(f.get("until"), zone, "Until")
    if start >= end:
        raise ValueError("From must be before Until")
    if end <= time.time():
        raise ValueError("Until has already passed")
    reason = f.get("reason").strip()
    if not reason:
        raise ValueError("a reason is required")
    check_text(reason, "the reason", 200)
    locker = f.get("locker") or None
    if locker is not None and c.store.locker(c.site, locker) is None:
        raise ValueError(f"no locker {locker}")
    gid = c.store.add_grant(c.site, person, start, end, by, reason, locker, actor=v.actor)
    return gid, person


@router.post("/grants")
def grants_post(request: Request, v: Viewer = SLT_ONLY, f: Form = SLT_FORM):
    c = ctx(request)
    try:
        gid, person = create_grant(c, v, f)
    except (ValueError, StoreError) as err:
        return grants_page(request, f.values(), str(err), 400)
    c.flash(v.token, "ok", f"Grant {gid} for {person} created.")
    return RedirectResponse("/grants", 303)


@router.post("/grants/revoke")
def grants_revoke(request: Request, v: Viewer = SLT_ONLY, f: Form = SLT_FORM):
    """Revokes a grant once confirmed: without `confirm=yes` the page asks first (nothing is
    changed), so a grant is never ended by one stray click."""
    c = ctx(request)
    try:
        gid = int(f.get("id"))
        if not 0 < gid < 2**63:  # what the store's integers hold
            raise StoreError(f"no grant {gid}")
        if f.get("confirm") != "yes":
            return confirm_revoke(request, v, gid)
        c.store.revoke_grant(c.site, gid, actor=v.actor)
        c.flash(v.token, "ok", f"Grant {gid} revoked.")
    except (ValueError, StoreError) as err:
        c.flash(v.token, "error", str(err))
    return RedirectResponse("/grants", 303)


def confirm_revoke(request: Request, v: Viewer, gid: int):
    c = ctx(request)
    zone = c.timezone()
    grant = next((g for g in c.store.grants(c.site) if g.id == gid), None)
    if grant is None:
        raise StoreError(f"no grant {gid} (ended or revoked already?)")
    names = store_alerts.people_roles(c.store, c.site)
    who = person_label(names, grant.person_id, v.sees_names)
    until = local_time(grant.until_ts, zone)
    where = grant.locker_id or "every locker"
    return render(
        request,
        "confirm.html",
        "Revoke a grant",
        "/grants",
        question=f"Revoke grant {gid} of {who}?",
        lines=[
            f"It lets them take their phone out at {where} until {until}; revoked, it ends "
            "now (the lockers are told). This is recorded with your name.",
        ],
        action="/grants/revoke",
        hidden={"id": str(gid)},
        button="Revoke the grant",
        cancel="/grants",
    )
