"""Alerts (`/alerts`): what `lockerctl.alerts` says needs attention, pushed to the open page when
it changes; **Acknowledge** (`POST /alerts/ack`) records who did it. `/api/alerts` gives the
page's fragment as JSON. What counts as an alert is `lockerctl.alerts`' business, not this
module's."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse

from ... import alerts as alerts_mod
from ...display import event_time
from ..deps import ANY_ROLE, FORM, Viewer, ctx, open_alert_count
from ..forms import Form
from ..templating import local_time, render, render_to_string

router = APIRouter(include_in_schema=False)


def alerts_view(c, v: Viewer) -> tuple[list[dict], list[dict]]:
    """(open, acknowledged) alerts as the page shows them."""
    zone = c.timezone()
    found, stale = alerts_mod.compute(c.store, c.site, c.accounts.acknowledgements())
    if stale:
        c.accounts.forget_acknowledgements(stale)
    open_rows: list[dict] = []
    done_rows: list[dict] = []
    for a in found:
        when = (
            event_time(a.ts, a.received_at, zone, "minutes")
            if a.key.startswith("event:")
            else local_time(a.when, zone)
        )
        row = {
            "key": a.key,
            "when": when,
            "locker": a.locker,
            "bay": a.bay,
            "kind": a.kind,
            "title": a.title,
            "who": ((a.name or a.person) if v.sees_names else "(holder)") if a.person else "",
            "detail": a.detail,
            "acked_by": a.acked_by,
            "acked_at": local_time(a.acked_at, zone) if a.acked_by is not None else "",
        }
        (open_rows if a.acked_by is None else done_rows).append(row)
    return open_rows, done_rows


def alerts_fragment(c, v: Viewer) -> str:
    open_rows, done_rows = alerts_view(c, v)
    return render_to_string(
        "_alerts.html", open_rows=open_rows, done_rows=done_rows, csrf=v.session.csrf
    )


@router.get("/alerts")
def alerts_page(request: Request, v: Viewer = ANY_ROLE):
    html = alerts_fragment(ctx(request), v)
    return render(request, "alerts.html", "Alerts", "/alerts", alerts_html=html)


@router.get("/api/alerts")
def api_alerts(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    return JSONResponse({"html": alerts_fragment(c, v), "alerts": open_alert_count(c)})


@router.post("/alerts/ack")
def alerts_ack(request: Request, v: Viewer = ANY_ROLE, f: Form = FORM):
    c = ctx(request)
    key = f.get("alert").strip()
    if not key or len(key) > 120:
        raise HTTPException(400, "which alert? (missing alert)")
    found, _ = alerts_mod.compute(c.store, c.site, {})
    match = [a for a in found if a.key == key]
    if not match:
        c.flash(v.token, "error", "That alert is no longer open.")
        return RedirectResponse("/alerts", 303)
    a = match[0]
    detail = {"locker": a.locker, "kind": a.kind, "bay": a.bay}
    if c.accounts.acknowledge(key, v.user.username, detail):
        c.flash(v.token, "ok", f"Acknowledged: {a.title} at {a.locker}.")
    else:
        c.flash(v.token, "ok", "It was already acknowledged.")
    return RedirectResponse("/alerts", 303)
