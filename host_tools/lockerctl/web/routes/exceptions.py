"""The school's everyday exceptions in the dashboard: the office's named release (`/release`:
search by name, a reason from the list, the locker's answer), the SLT's keep-safe consents
(`/consents`: recorded only by an account whose person is a named approver; admins name the
approvers there too) and exemptions register (`/exemptions`, with those due for review), and
the office's visitors (`/visitors`). The same checks and store functions as the commands
(`lockerctl release`, `consent`, `exemption`, `visitor`); every change is in the trail with the
account (`web:<username>`)."""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse

from ... import release as rel_mod
from ...display import person_label
from ...payloads import RELEASE_ANSWERS
from ...store import StoreError
from ...store import alerts as store_alerts
from ...store import consents as XC
from ...store import exceptions as X
from ...store import live as store_live
from ...store import lookup as XL
from ..context import ALL, SLT
from ..deps import (
    ADMIN_FORM,
    ADMIN_ONLY,
    ANY_ROLE,
    FORM,
    SLT_FORM,
    SLT_ONLY,
    Viewer,
    ctx,
    current,
)
from ..forms import Form
from ..templating import add_nav, render

router = APIRouter(include_in_schema=False)
add_nav("/release", "Release a phone", ALL, before="/open")
add_nav("/visitors", "Visitors", ALL, before="/grants")
add_nav("/consents", "Consents", SLT, before="/trail")
add_nav("/exemptions", "Exemptions", SLT, before="/trail")

REASONS = [(r, r[0].upper() + r[1:]) for r in rel_mod.REASONS]


# -- the named release --------------------------------------------------------------------------


def release_page(request, v: Viewer, q: str, values: dict, message: str = "", status=200):
    c = ctx(request)
    results = []
    for pid, name, role in XL.search_people(c.store, c.site, q):
        holds = bool(XL.phone_bays(c.store, c.site, pid))
        results.append({"person": pid, "name": name, "role": role, "holds": holds})
    return render(
        request,
        "release.html",
        "Release a phone",
        "/release",
        status,
        q=q,
        results=results,
        reasons=REASONS,
        values=values,
        message=message,
        linked=v.user.person_id is not None,
    )


@router.get("/release")
def release_get(request: Request, v: Viewer = ANY_ROLE):
    q = request.query_params.get("q", "")[:100]
    return release_page(request, v, q, {})


@router.post("/release")
def release_post(request: Request, v: Viewer = ANY_ROLE, f: Form = FORM):
    c = ctx(request)
    values = f.values()
    person = f.get("person").strip()
    reason = f.get("reason")
    if reason == "other":
        reason = f.get("other").strip() or "other"
    try:
        by = v.user.person_id
        if not by:
            raise ValueError("your account is not linked to a person on the roster")
        rel = rel_mod.prepare(c.store, c.site, person, by, reason)
    except ValueError as err:
        return release_page(request, v, f.get("q"), values, str(err), 400)
    if c.publish is None or not c.connected():
        message = "Not connected to the lockers right now: nothing was sent. Try again shortly."
        return release_page(request, v, f.get("q"), values, message, 503)
    after = store_live.last_event_id(c.store)
    rel_mod.record(c.store, c.site, rel, v.actor)
    c.publish(rel.locker, rel.payload)
    ref = secrets.token_urlsafe(12)
    c.remember_open(
        ref,
        {
            "release": True,
            "after": after,
            "locker": rel.locker,
            "bay": rel.bay,
            "person": rel.person,
            "by": rel.by,
            "reason": rel.reason,
            "sent": [],
        },
    )
    return RedirectResponse(f"/release/sent?ref={ref}", 303)


def release_answer(c, info: dict) -> tuple[str, str] | None:
    """(class, text) of the locker's answer to a release, or None while there is none."""
    for r in store_live.outcomes(
        c.store, c.site, info["after"], [info["locker"]], RELEASE_ANSWERS
    ):
        if r.bay != info["bay"]:
            continue
        if r.type == "released" and r.person == info["person"]:
            return "opened", f"{info['locker']} bay {info['bay']} opened"
        if r.type == "cmd_rejected" and r.by == info["by"]:
            return "rejected", f"{info['locker']} refused to open bay {info['bay']}: {r.reason}"
    return None


@router.get("/release/sent")
def release_sent(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    info = c.open_info(request.query_params.get("ref", ""))
    if info is None or not info.get("release"):
        raise HTTPException(404, "no such release (the dashboard may have restarted)")
    answer = release_answer(c, info)
    return render(
        request,
        "release_sent.html",
        "Release sent",
        "/release",
        info=info,
        answer=answer,
        waited=time.time() - info["at"],
    )


# -- consents -----------------------------------------------------------------------------------


def _pupils(c):
    seen: dict[str, str] = {}
    for r in c.store.roster(c.site):
        seen.setdefault(r.person_id, r.name)
    return sorted(seen.items(), key=lambda p: p[1])


def _by_names(request, rows) -> dict[str, str]:
    """{person id of a row's `by`: "Name (id)"} for the roles that see names (else the id)."""
    c = ctx(request)
    v = current(request)
    names = store_alerts.people_roles(c.store, c.site)
    sees = v is not None and v.sees_names
    return {r.by: person_label(names, r.by, sees) for r in rows if r.by}


def _slt_people(c):
    """(person_id, name) of the roster's people with an slt card, by name."""
    seen: dict[str, str] = {}
    for r in c.store.roster(c.site):
        if r.role == "slt" and not r.revoked:
            seen.setdefault(r.person_id, r.name)
    return sorted(seen.items(), key=lambda p: p[1])


def consents_page(request, v: Viewer, values: dict, message: str = "", status: int = 200):
    c = ctx(request)
    rows = XC.list_consents(c.store, c.site, False, int(time.time()))
    approvers = XC.list_approvers(c.store, c.site)
    me = v.user.person_id
    approver = next((a for a in approvers if a.person_id == me and a.slt), None)
    named = {a.person_id for a in approvers}
    return render(
        request,
        "consents.html",
        "Keep-safe consents",
        "/consents",
        status,
        rows=rows,
        people=_pupils(c),
        by=_by_names(request, rows),
        values=values,
        message=message,
        approver=approver,
        approvers=approvers,
        is_admin=v.role == "admin",
        candidates=[p for p in _slt_people(c) if p[0] not in named],
    )


NOT_AN_APPROVER = (
    "Only the Headteacher and the SLT members an admin names may record a keep-safe consent, "
    "and your account's person is not one of them."
)


@router.get("/consents")
def consents_get(request: Request, v: Viewer = SLT_ONLY):
    return consents_page(request, v, {})


@router.post("/consents")
def consents_post(request: Request, v: Viewer = SLT_ONLY, f: Form = SLT_FORM):
    from ...bounds import parse_day

    c = ctx(request)
    by = v.user.person_id
    if not XC.is_approver(c.store, c.site, by):  # the account's own person approves, or no one
        return consents_page(request, v, f.values(), NOT_AN_APPROVER, 403)
    assert by is not None
    try:
        until = parse_day(f.get("until").strip() or None, "Until")
        reason = " ".join(f.get("reason").split()) or None
        if reason:
            from ...bounds import check_text

            check_text(reason, "the reason", 200)
        cid = XC.add_consent(
            c.store,
            c.site,
            f.get("person").strip(),
            by,
            until,
            reason,
            v.actor,
            int(time.time()),
        )
    except (ValueError, StoreError) as err:
        return consents_page(request, v, f.values(), str(err), 400)
    c.flash(v.token, "ok", f"Consent {cid} recorded.")
    return RedirectResponse("/consents", 303)


@router.post("/consents/approvers")
def consent_approver_add(request: Request, v: Viewer = ADMIN_ONLY, f: Form = ADMIN_FORM):
    """An admin names an approver (as `lockerctl consent approver add`)."""
    c = ctx(request)
    person = f.get("person").strip()
    try:
        XC.add_approver(c.store, c.site, person, v.actor, int(time.time()))
    except StoreError as err:
        return consents_page(request, v, {}, str(err), 400)
    c.flash(v.token, "ok", f"{person} may approve keep-safe consents.")
    return RedirectResponse("/consents", 303)


@router.post("/consents/approvers/remove")
def consent_approver_remove(request: Request, v: Viewer = ADMIN_ONLY, f: Form = ADMIN_FORM):
    c = ctx(request)
    person = f.get("person").strip()
    try:
        XC.remove_approver(c.store, c.site, person, v.actor)
    except StoreError as err:
        return consents_page(request, v, {}, str(err), 400)
    c.flash(v.token, "ok", f"{person} may no longer approve keep-safe consents.")
    return RedirectResponse("/consents", 303)


@router.post("/consents/end")
def consents_end(request: Request, v: Viewer = SLT_ONLY, f: Form = SLT_FORM):
    """Ends a pupil's consent once confirmed: without `confirm=yes` the page asks first."""
    c = ctx(request)
    try:
        if f.get("confirm") != "yes":
            return confirm_end_consent(request, v, f.get("person"))
        XC.end_consent(c.store, c.site, f.get("person"), v.actor, int(time.time()))
        c.flash(v.token, "ok", f"Consent of {f.get('person')} ended.")
    except StoreError as err:
        c.flash(v.token, "error", str(err))
    return RedirectResponse("/consents", 303)


def confirm_end_consent(request: Request, v: Viewer, person: str):
    c = ctx(request)
    rows = XC.list_consents(c.store, c.site, False, int(time.time()))
    row = next((r for r in rows if r.person_id == person), None)
    if row is None:
        raise StoreError(f"{person} has no consent in force")
    who = person_label(store_alerts.people_roles(c.store, c.site), person, v.sees_names)
    return render(
        request,
        "confirm.html",
        "End a consent",
        "/consents",
        question=f"End the keep-safe consent of {who}?",
        lines=[
            "From now on a phone they deposit is flagged again, as for any pupil who may not "
            "bring one (the lockers are told). This is recorded with your name.",
        ],
        action="/consents/end",
        hidden={"person": person},
        button="End the consent",
        cancel="/consents",
    )


# -- exemptions ---------------------------------------------------------------------------------


def exemptions_page(request, values: dict, message: str = "", status: int = 200):
    c = ctx(request)
    rows = X.list_exemptions(c.store, c.site, False, False, int(time.time()))
    return render(
        request,
        "exemptions.html",
        "Exemptions",
        "/exemptions",
        status,
        due=[e for e in rows if e.due],
        rows=rows,
        people=_pupils(c),
        by=_by_names(request, rows),
        categories=[(k, k.replace("_", " ")) for k in X.CATEGORIES],
        values=values,
        message=message,
    )


@router.get("/exemptions")
def exemptions_get(request: Request, v: Viewer = SLT_ONLY):
    return exemptions_page(request, {})


@router.post("/exemptions")
def exemptions_post(request: Request, v: Viewer = SLT_ONLY, f: Form = SLT_FORM):
    from ...bounds import parse_day, parse_windows

    c = ctx(request)
    try:
        by = v.user.person_id
        if not by:
            raise ValueError("your account is not linked to a person on the roster")
        category = f.get("category")
        if category not in X.CATEGORIES:
            raise ValueError("choose a category (never a diagnosis)")
        windows = tuple(w for w in (f.get(f"window{i}").strip() for i in range(1, 5)) if w)
        spans = parse_windows(windows)
        review = parse_day(f.get("review").strip(), "Review")
        now = int(time.time())
        today = X.today(c.timezone(), now)
        start = parse_day(f.get("from").strip() or None, "From") or today
        until = parse_day(f.get("until").strip() or None, "Until")
        if review is None or review < today:
            raise ValueError("the review date has already passed")
        if until is not None and until < max(start, today):
            raise ValueError("Until is before From, or has already passed")
        eid = X.add_exemption(
            c.store,
            c.site,
            f.get("person").strip(),
            category,
            by,
            review,
            spans,
            start,
            until,
            v.actor,
            now,
        )
    except (ValueError, StoreError) as err:
        return exemptions_page(request, f.values(), str(err), 400)
    c.flash(v.token, "ok", f"Exemption {eid} recorded.")
    return RedirectResponse("/exemptions", 303)


@router.post("/exemptions/end")
def exemptions_end(request: Request, v: Viewer = SLT_ONLY, f: Form = SLT_FORM):
    c = ctx(request)
    try:
        eid = int(f.get("id"))
        if not 0 < eid < 2**63:
            raise StoreError(f"no exemption {eid}")
        if f.get("confirm") != "yes":
            return confirm_end_exemption(request, v, eid)
        X.end_exemption(c.store, c.site, eid, v.actor, int(time.time()))
        c.flash(v.token, "ok", f"Exemption {eid} ended.")
    except (ValueError, StoreError) as err:
        c.flash(v.token, "error", str(err))
    return RedirectResponse("/exemptions", 303)


def confirm_end_exemption(request: Request, v: Viewer, eid: int):
    c = ctx(request)
    rows = X.list_exemptions(c.store, c.site, False, False, int(time.time()))
    row = next((e for e in rows if e.id == eid), None)
    if row is None:
        raise StoreError(f"no exemption {eid} in force")
    who = person_label(store_alerts.people_roles(c.store, c.site), row.person_id, v.sees_names)
    return render(
        request,
        "confirm.html",
        "End an exemption",
        "/exemptions",
        question=f"End exemption {eid} of {who}?",
        lines=[
            f"Its windows ({row.windows}) stop at once and the normal rules apply (the lockers "
            "are told). This is recorded with your name.",
        ],
        action="/exemptions/end",
        hidden={"id": str(eid)},
        button="End the exemption",
        cancel="/exemptions",
    )


# -- visitors -----------------------------------------------------------------------------------


def visitors_page(request, values: dict, message: str = "", status: int = 200):
    c = ctx(request)
    rows = X.list_visitors(c.store, c.site, False, int(time.time()))
    return render(
        request,
        "visitors.html",
        "Visitors",
        "/visitors",
        status,
        rows=rows,
        zone=c.timezone(),
        values=values,
        message=message,
    )


@router.get("/visitors")
def visitors_get(request: Request, v: Viewer = ANY_ROLE):
    return visitors_page(request, {})


@router.post("/visitors")
def visitors_post(request: Request, v: Viewer = ANY_ROLE, f: Form = FORM):
    from ...bounds import check_text
    from ...roster import normalise_uid

    c = ctx(request)
    try:
        by = v.user.person_id
        if not by:
            raise ValueError("your account is not linked to a person on the roster")
        name = " ".join(f.get("name").split())
        if not name:
            raise ValueError("the visitor's name is required")
        check_text(name, "the name", 100)
        uid = normalise_uid(f.get("card"))
        now = int(time.time())
        tz = c.timezone()
        end = X.day_end(X.today(tz, now), tz)
        pid = X.add_visitor(c.store, c.site, name, uid, by, end, v.actor, now)
    except (ValueError, StoreError) as err:
        return visitors_page(request, f.values(), str(err), 400)
    c.flash(v.token, "ok", f"{name} is {pid} until the end of today.")
    return RedirectResponse("/visitors", 303)
