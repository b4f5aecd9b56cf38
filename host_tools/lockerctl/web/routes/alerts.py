"""Alerts (`/alerts`): what `lockerctl.alerts` says needs attention, urgent first, pushed to the
open page when it changes. Filters by kind, locker and day (`?kind=&locker=&day=YYYY-MM-DD`; a
filtered page is not live). **Acknowledge** one alert (`POST /alerts/ack`) or every open alert
of a kind (`POST /alerts/ack-kind`), each with an optional note, recorded with who did it. The
person is named for SLT and admins, "a pupil" / "a staff member" for the office. A note says
when urgent alerts' e-mails are not going out (`store_alerts.mail_status`). `/api/alerts` gives
the page's fragment as JSON. What counts as an alert is `lockerctl.alerts`' business, not this
module's."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse

from ... import alerts as alerts_mod
from ... import words
from ...display import event_time, valid_ts
from ...mailer import note as mail_note
from ...review import when_text
from ...store import alerts as store_alerts
from ..deps import ANY_ROLE, FORM, Viewer, ctx, open_alert_count
from ..forms import Form
from ..templating import local_time, render, render_to_string

router = APIRouter(include_in_schema=False)


def _filters(request: Request) -> dict:
    q = request.query_params
    kind = q.get("kind", "").strip()
    locker = q.get("locker", "").strip()[:28]
    day_text = q.get("day", "").strip()
    if kind and kind not in alerts_mod.KINDS:
        raise HTTPException(400, f"no such kind of alert: {kind[:40]!r}")
    day = None
    if day_text:
        try:
            day = dt.date.fromisoformat(day_text)
        except ValueError:
            raise HTTPException(400, "day: expected a date YYYY-MM-DD") from None
        if not 2000 <= day.year <= 2100:
            raise HTTPException(400, "day: dates must be in the years 2000-2100")
    return {"kind": kind or None, "locker": locker or None, "day": day}


def alerts_view(c, v: Viewer, filters: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(open, acknowledged) alerts as the page shows them."""
    zone = c.timezone()
    acks = c.accounts.acknowledgements()
    found, stale = alerts_mod.compute(
        c.store, c.site, acks, notes=store_alerts.notes(c.store, c.site)
    )
    if stale:
        c.accounts.forget_acknowledgements(stale)
        store_alerts.forget_notes(c.store, c.site, stale)
    if filters:
        found = alerts_mod.select(found, timezone=zone, **filters)
    open_rows: list[dict] = []
    done_rows: list[dict] = []
    for a in found:
        if a.key.startswith("event:") and a.ts is None:
            when = event_time(a.ts, a.received_at, zone, "minutes")  # "... (received)"
        elif a.key.startswith("event:") and a.received_at is not None and valid_ts(a.ts):
            when = when_text(a.received_at, a.ts, zone)
        elif a.key.startswith("event:"):
            when = event_time(a.ts, a.received_at, zone, "minutes")
        else:
            when = local_time(a.when, zone)
        row = {
            "key": a.key,
            "anchor": "alert-" + a.key.replace(":", "-"),
            "when": when,
            "locker": a.locker,
            "bay": a.bay,
            "kind": a.kind,
            "severity": a.severity,
            "title": a.title,
            "who": a.who(v.sees_names),
            "detail": a.detail,
            "acked_by": a.acked_by,
            "acked_at": local_time(a.acked_at, zone) if a.acked_by is not None else "",
            "note": a.note or "",
        }
        (open_rows if a.acked_by is None else done_rows).append(row)
    return open_rows, done_rows


def alerts_fragment(c, v: Viewer, filters: dict | None = None) -> str:
    open_rows, done_rows = alerts_view(c, v, filters)
    kinds = sorted({r["kind"] for r in open_rows}, key=alerts_mod.KINDS.index)
    return render_to_string(
        "_alerts.html",
        open_rows=open_rows,
        done_rows=done_rows,
        csrf=v.session.csrf,
        open_kinds=[(k, words.alert_words(k)) for k in kinds],
        mail=mail_note(store_alerts.mail_status(c.store, c.site), c.timezone()),
    )


@router.get("/alerts")
def alerts_page(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    filters = _filters(request)
    filtered = any(filters.values())
    html = alerts_fragment(c, v, filters if filtered else None)
    return render(
        request,
        "alerts.html",
        "Alerts",
        "/alerts",
        alerts_html=html,
        filtered=filtered,
        kinds=[(k, words.alert_words(k)) for k in alerts_mod.KINDS],
        lockers=[r.id for r in c.store.lockers(c.site)],
        f={k: (str(x) if x is not None else "") for k, x in filters.items()},
    )


@router.get("/api/alerts")
def api_alerts(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    return JSONResponse({"html": alerts_fragment(c, v), "alerts": open_alert_count(c)})


def _ack(request: Request, v: Viewer, f: Form, **which):
    c = ctx(request)
    try:
        n = alerts_mod.acknowledge(c.store, c.site, v.user.username, note=f.get("note"), **which)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    return c, n


@router.post("/alerts/ack")
def alerts_ack(request: Request, v: Viewer = ANY_ROLE, f: Form = FORM):
    key = f.get("alert").strip()
    if not key or len(key) > 120:
        raise HTTPException(400, "which alert? (missing alert)")
    c, n = _ack(request, v, f, key=key)
    if n:
        c.flash(v.token, "ok", "Acknowledged.")
    else:
        c.flash(v.token, "error", "That alert is no longer open (or was already acknowledged).")
    return RedirectResponse("/alerts", 303)


@router.post("/alerts/ack-kind")
def alerts_ack_kind(request: Request, v: Viewer = ANY_ROLE, f: Form = FORM):
    kind = f.get("kind").strip()
    if kind not in alerts_mod.KINDS:
        raise HTTPException(400, "which kind of alert? (missing or unknown kind)")
    c, n = _ack(request, v, f, kind=kind)
    title = words.alert_words(kind)
    c.flash(v.token, "ok", f"Acknowledged {n} alert{'s' if n != 1 else ''}: {title}.")
    return RedirectResponse("/alerts", 303)
