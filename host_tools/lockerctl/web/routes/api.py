"""The JSON API (`/api/v1/...`), for a school's other systems: lockers and their bays, alerts,
the trail with paging, grants, and opening bays. Described by the OpenAPI document at
`/api/openapi.json` (and `/api/docs`, a page of this dashboard).

Who may call: an account's API token (`Authorization: Bearer clt_...`, made on the API tokens
page or with `lockerctl token add`), or a signed-in browser session; the role rules are the
pages' (office: lockers, alerts, opens; slt: also grants and the trail). A session's POST needs
its CSRF token in the `X-CSRF-Token` header; a token's does not (browsers never send it by
themselves). Answers: 401 without a valid token or session, 403 for a role that may not, 400/422
for a bad value, 503 when an open cannot be sent now.
"""

from __future__ import annotations

import hmac
from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ...display import valid_ts
from ...store import StoreError
from ...store import live as store_live
from ..deps import CSRF_FAILED, SLT, Viewer, ctx, current
from ..forms import Form
from . import alerts as alerts_routes
from . import grants as grants_routes
from . import lockers as lockers_routes
from . import opens as opens_routes
from . import trail as trail_routes

router = APIRouter(prefix="/api/v1", tags=["api"])
ALL = ("office", "slt", "admin")


def api_viewer(roles=ALL, write: bool = False):
    """The caller, 403 unless its role is one of `roles`; for a write by a browser session, the
    `X-CSRF-Token` header must be the session's token."""

    async def dependency(request: Request) -> Viewer:
        v = current(request)
        if v is None:
            raise HTTPException(401, "not signed in")
        if v.role not in roles:
            raise HTTPException(403, f"your role ({v.role}) may not do this")
        if write and not v.via_api_token:
            sent = request.headers.get("x-csrf-token", "")
            if not sent or not hmac.compare_digest(sent, v.session.csrf):
                raise HTTPException(403, CSRF_FAILED)
        return v

    return Depends(dependency)


API_ALL = api_viewer()
API_SLT = api_viewer(SLT)
API_WRITE = api_viewer(write=True)
API_SLT_WRITE = api_viewer(SLT, write=True)


class Bay(BaseModel):
    bay: int | str | None = None
    locked: bool | None = None
    door: str | None = None
    holder: str | None = Field(None, description="person id (slt, admin) or 'occupied'")


class Locker(BaseModel):
    id: str
    online: bool | None
    last_seen: float | None = Field(None, description="unix seconds")
    clock_ok: bool | None
    clock_offset: float | None = Field(None, description="seconds ahead of the host")
    unreadable: bool
    bays: list[dict]


class Me(BaseModel):
    username: str
    role: str
    person_id: str | None


@router.get("/me", response_model=Me, summary="The account calling")
def me(v: Viewer = API_ALL):
    return Me(username=v.user.username, role=v.role, person_id=v.user.person_id)


@router.get("/lockers", response_model=list[Locker], summary="Every locker and its bays")
def lockers(request: Request, v: Viewer = API_ALL):
    return lockers_routes.state_view(ctx(request), v.sees_names)


@router.get("/lockers/{locker_id}", response_model=Locker, summary="One locker and its bays")
def locker(request: Request, locker_id: str, v: Viewer = API_ALL):
    for one in lockers_routes.state_view(ctx(request), v.sees_names):
        if one["id"] == locker_id:
            return one
    raise HTTPException(404, f"no locker {locker_id!r}")


class Alert(BaseModel):
    key: str
    kind: str
    title: str
    locker: str | None
    bay: int | str | None
    when: str
    person: str | None
    detail: str | None
    acknowledged_by: str | None
    acknowledged_at: str


@router.get("/alerts", response_model=list[Alert], summary="Open and acknowledged alerts")
def alerts(request: Request, v: Viewer = API_ALL):
    open_rows, done_rows = alerts_routes.alerts_view(ctx(request), v)
    return [
        Alert(
            key=a["key"],
            kind=a["kind"],
            title=a["title"],
            locker=a["locker"],
            bay=a["bay"],
            when=a["when"],
            person=a["who"] or None,
            detail=a["detail"],
            acknowledged_by=a["acked_by"],
            acknowledged_at=a["acked_at"],
        )
        for a in open_rows + done_rows
    ]


class Event(BaseModel):
    id: int
    time: int | None = Field(None, description="the locker's unix time (None: unknown)")
    received_at: int | None
    locker: str
    seq: int | None
    type: str
    bay: int | None
    person: str | None
    name: str | None
    by: str | None
    reason: str | None


class TrailPage(BaseModel):
    page: int
    pages: int
    total: int
    events: list[Event]


def _event(r, names: bool) -> Event:
    return Event(
        id=r.id,
        time=r.ts if valid_ts(r.ts) else None,
        received_at=r.received_at if valid_ts(r.received_at) else None,
        locker=r.locker_id,
        seq=r.seq if isinstance(r.seq, int) else None,
        type=r.type,
        bay=r.bay if isinstance(r.bay, int) else None,
        person=r.person,
        name=r.name if names else None,
        by=r.by,
        reason=r.reason,
    )


@router.get("/trail", response_model=TrailPage, summary="The audit trail, newest first")
def trail(
    request: Request,
    v: Viewer = API_SLT,
    from_: str | None = Query(None, alias="from", description="YYYY-MM-DD, site's local date"),
    to: str | None = Query(None, description="YYYY-MM-DD, inclusive"),
    locker: str | None = Query(None, max_length=64),
    person: str | None = Query(None, max_length=64, description="as holder or as `by`"),
    page: int = Query(1, ge=1, le=10**9),
):
    c = ctx(request)
    query = {"from": from_, "to": to, "locker": locker, "person": person}
    s = trail_routes.search(c, query)
    page_no, pages, total, rows = trail_routes.page_of(c, s, str(page))
    return TrailPage(
        page=page_no, pages=pages, total=total, events=[_event(r, v.sees_names) for r in rows]
    )


class Grant(BaseModel):
    id: int
    person_id: str
    locker_id: str | None
    from_ts: int
    until_ts: int
    by: str
    reason: str


class NewGrant(BaseModel):
    person: str = Field(max_length=64)
    from_: str = Field(alias="from", max_length=40, description="local time, 2026-09-10T15:00")
    until: str = Field(max_length=40)
    reason: str = Field(max_length=200)
    locker: str | None = Field(None, max_length=64, description="None: every locker")


def _grant(g) -> Grant:
    return Grant(
        id=g.id,
        person_id=g.person_id,
        locker_id=g.locker_id,
        from_ts=g.from_ts,
        until_ts=g.until_ts,
        by=g.by,
        reason=g.reason,
    )


@router.get("/grants", response_model=list[Grant], summary="Current and future grants")
def grants(request: Request, v: Viewer = API_SLT):
    c = ctx(request)
    return [_grant(g) for g in c.store.grants(c.site)]


@router.post("/grants", response_model=Grant, status_code=201, summary="Grant an exception")
def grant_add(request: Request, body: NewGrant, v: Viewer = API_SLT_WRITE):
    c = ctx(request)
    fields = {"person": body.person, "from": body.from_, "until": body.until}
    form = Form({**fields, "reason": body.reason, "locker": body.locker or ""})
    try:
        gid, _ = grants_routes.create_grant(c, v, form)
    except (ValueError, StoreError) as err:
        raise HTTPException(400, str(err)) from None
    return next(_grant(g) for g in c.store.grants(c.site) if g.id == gid)


@router.delete("/grants/{grant_id}", status_code=204, summary="Revoke a grant")
def grant_revoke(request: Request, grant_id: int, v: Viewer = API_SLT_WRITE) -> None:
    c = ctx(request)
    if not 0 < grant_id < 2**63:
        raise HTTPException(404, f"no grant {grant_id}")
    try:
        c.store.revoke_grant(c.site, grant_id, actor=v.actor)
    except StoreError as err:
        raise HTTPException(404, str(err)) from None


class OpenRequest(BaseModel):
    scope: Literal["bay", "locker", "staff"]
    locker: str | None = Field(None, max_length=64)
    bay: int | None = Field(None, ge=1, le=64)
    reason: str = Field(max_length=200)


class OpenSent(BaseModel):
    ref: str = Field(description="GET /api/v1/open/{ref} for the lockers' answers")
    what: str
    sent: list[dict]


@router.post("/open", response_model=OpenSent, status_code=202, summary="Open bays")
def open_bays(request: Request, body: OpenRequest, v: Viewer = API_WRITE):
    c = ctx(request)
    form = Form(
        {
            "scope": body.scope,
            "locker": body.locker or "",
            "bay": str(body.bay or ""),
            "reason": body.reason,
        }
    )
    try:
        targets, reason, what = opens_routes.open_targets(c, v, form)
    except ValueError as err:
        raise HTTPException(400, str(err)) from None
    if c.publish is None or not c.connected():
        raise HTTPException(503, "not connected to the broker right now: nothing was sent")
    ref = opens_routes.send_opens(c, v, targets, reason, what)
    info = c.open_info(ref) or {"sent": []}
    return OpenSent(ref=ref, what=what, sent=info["sent"])


class OpenOutcome(BaseModel):
    answers: list[dict]
    waiting: list[str]


@router.get("/open/{ref}", response_model=OpenOutcome, summary="The lockers' answers to an open")
def open_outcome(request: Request, ref: str, v: Viewer = API_ALL):
    c = ctx(request)
    info = c.open_info(ref)
    if info is None:
        raise HTTPException(404, "no such open")
    answers, waiting = opens_routes.outcome_view(c, info)
    return OpenOutcome(answers=answers, waiting=waiting)


@router.get("/events", response_model=list[Event], summary="Events after an id, oldest first")
def events(
    request: Request,
    v: Viewer = API_SLT,
    after: int = Query(0, ge=0, le=2**62, description="the last event id you have"),
    limit: int = Query(100, ge=1, le=1000),
):
    c = ctx(request)
    return [
        _event(r, v.sees_names) for r in store_live.events_after(c.store, c.site, after, limit)
    ]


# -- the API's own page --------------------------------------------------------------------------

pages = APIRouter(include_in_schema=False)


@pages.get("/api/docs")
def api_docs(request: Request, v: Viewer = API_ALL):
    """The OpenAPI document as a page of this dashboard (no outside scripts)."""
    from ..templating import render

    spec = request.app.openapi()
    operations = [
        {"method": method.upper(), "path": path, "summary": op.get("summary", "")}
        for path, methods in spec.get("paths", {}).items()
        for method, op in methods.items()
    ]
    return render(request, "api_docs.html", "JSON API", operations=operations)
