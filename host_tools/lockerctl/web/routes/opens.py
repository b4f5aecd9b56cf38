"""Emergency open (`/open`): what to open (one bay, every occupied bay of a bank, every staff
bay of the school) with a required reason; *Continue* shows a confirmation, only *Confirm open*
signs and publishes the commands (`opens.prepare_open`, as `lockerctl open`). `/open/sent`
then shows each locker's own answer as it arrives (pushed, `live.py`; `/api/open?ref=` gives
it as JSON)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse

from ... import words
from ...bounds import check_text
from ...display import event_time
from ...payloads import OPEN_ANSWERS
from ...store import StoreError
from ...store import live as store_live
from ..deps import ANY_ROLE, FORM, Viewer, ctx
from ..forms import Form
from ..templating import render, render_to_string

router = APIRouter(include_in_schema=False)


def open_form(request: Request, v: Viewer, values: dict, message: str = "", status: int = 200):
    c = ctx(request)
    choices = [(r.id, f"{r.id} ({r.bays} bays)") for r in c.store.lockers(c.site)]
    scope = values.get("scope") or "bay"  # one person's phone by default, never a whole bank
    return render(
        request,
        "open.html",
        "Emergency open",
        "/open",
        status,
        values=values,
        scope=scope,
        choices=choices,
        message=message,
        linked=v.user.person_id is not None,
    )


@router.get("/open")
def open_get(request: Request, v: Viewer = ANY_ROLE):
    q = request.query_params
    values = {"locker": q.get("locker", ""), "bay": q.get("bay", ""), "scope": q.get("scope", "")}
    return open_form(request, v, values)


def open_targets(c, v: Viewer, f: Form) -> tuple[list[tuple[str, object]], str, str]:
    """[(locker, bay)], reason, description; ValueError for a bad request."""
    from ...opens import check_open

    scope = f.get("scope")
    reason = f.get("reason").strip()
    if not reason:
        raise ValueError("a reason is required")
    check_text(reason, "the reason", 200)
    by = v.user.person_id
    if not by:
        raise ValueError("your account is not linked to a person on the roster")
    if scope == "staff":
        ids = [r.id for r in c.store.lockers(c.site)]
        if not ids:
            raise ValueError("no lockers registered")
        for i in ids:
            check_open(c.store, c.site, i, "staff", by, reason, 60)
        return [(i, "staff") for i in ids], reason, "every staff bay of the school"
    locker = f.get("locker")
    if scope == "bay":
        if not f.get("bay").strip():
            raise ValueError("which bay? (enter a bay number)")
        _, bay, _ = check_open(c.store, c.site, locker, f.get("bay"), by, reason, 60)
        if not isinstance(bay, int):
            raise ValueError("enter a bay number for one bay")
        return [(locker, bay)], reason, f"bay {bay} of {locker}"
    if scope == "locker":
        check_open(c.store, c.site, locker, "all", by, reason, 60)
        return [(locker, "all")], reason, f"every occupied bay of {locker}"
    raise ValueError("choose what to open")


@router.post("/open")
def open_post(request: Request, v: Viewer = ANY_ROLE, f: Form = FORM):
    c = ctx(request)
    values = f.values()
    try:
        targets, reason, what = open_targets(c, v, f)
    except ValueError as err:
        return open_form(request, v, values, str(err), 400)
    # a whole bank asks twice: Continue, then Confirm with its own box ticked
    whole_bank = f.get("scope") == "locker"
    if f.get("confirm") != "yes" or (whole_bank and f.get("confirm_bank") != "yes"):
        hidden = {k: values.get(k, "") for k in ("scope", "locker", "bay", "reason")}
        return render(
            request,
            "open_confirm.html",
            "Confirm emergency open",
            "/open",
            what=what,
            reason=reason,
            hidden=hidden,
            whole_bank=whole_bank,
            unticked=whole_bank and f.get("confirm") == "yes",
        )
    if c.publish is None:
        message = (
            "This dashboard has no connection to the lockers (run it with lockerctl serve --http)."
        )
        return open_form(request, v, values, message, 503)
    if not c.connected():
        message = (
            "Not connected to the broker right now: nothing was sent. Try again in a moment "
            "(the service reconnects by itself)."
        )
        return open_form(request, v, values, message, 503)
    ref = send_opens(c, v, targets, reason, what)
    return RedirectResponse(f"/open/sent?ref={ref}", 303)


def send_opens(c, v: Viewer, targets, reason: str, what: str) -> str:
    """Signs and publishes the opens; the reference of their result page."""
    from ...opens import prepare_open

    after = store_live.last_event_id(c.store)
    by = v.user.person_id or ""  # open_targets has checked there is one
    sent = []
    for locker, bay in targets:
        try:
            _, payload, detail = prepare_open(
                c.store, c.site, locker, bay, by, reason, actor=v.actor
            )
            c.publish(locker, payload)
        except (ValueError, OSError, StoreError) as err:
            c.flash(v.token, "error", f"{locker}: not sent: {err}")
            continue
        sent.append({"locker": locker, "bay": bay, "cmd_id": detail["cmd_id"]})
    ref = secrets.token_urlsafe(12)
    info = {"after": after, "sent": sent, "by": v.user.person_id, "reason": reason}
    c.remember_open(ref, {**info, "what": what, "user": v.user.username})
    return ref


def outcome_view(c, info: dict) -> tuple[list[dict], list[str]]:
    """(what each locker answered, the lockers still to answer)."""
    zone = c.timezone()
    lockers = [s["locker"] for s in info["sent"]]
    items, answered = [], set()
    for r in store_live.outcomes(c.store, c.site, info["after"], lockers, OPEN_ANSWERS):
        if r.type == "emergency_open" and (r.by != info["by"] or r.reason != info["reason"]):
            continue
        answered.add(r.locker_id)
        if r.type == "cmd_rejected":
            why = words.reason_words(r.reason) or "rejected"
            text, cls = f"{r.locker_id} rejected the command: {why}", "rejected"
        elif r.bay is None:
            text, cls = f"{r.locker_id}: no occupied bay to open", "nothing"
        else:
            text, cls = f"{r.locker_id}: bay {r.bay} opened", "opened"
        when = event_time(r.ts, r.sort_ts, zone, "seconds")
        items.append({"cls": cls, "locker": r.locker_id, "bay": r.bay, "when": when, "text": text})
    return items, [x for x in lockers if x not in answered]


def outcome_fragment(c, info: dict) -> str:
    if not info["sent"]:
        return '<p class="error">Nothing was sent.</p>'
    items, waiting = outcome_view(c, info)
    return render_to_string("_outcome.html", items=items, waiting=waiting)


@router.get("/open/sent")
def open_sent(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    ref = request.query_params.get("ref", "")
    info = c.open_info(ref)
    if info is None:
        raise HTTPException(404, "no such open (the dashboard may have restarted)")
    sent = ", ".join(f"{s['locker']} ({s['bay']}, command {s['cmd_id']})" for s in info["sent"])
    return render(
        request,
        "open_sent.html",
        "Emergency open sent",
        "/open",
        info=info,
        sent=sent or "nothing",
        ref=ref,
        outcome_html=outcome_fragment(c, info),
    )


@router.get("/api/open")
def api_open(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    info = c.open_info(request.query_params.get("ref", ""))
    if info is None:
        return JSONResponse({"error": "no such open"}, 404)
    return JSONResponse({"html": outcome_fragment(c, info)})
