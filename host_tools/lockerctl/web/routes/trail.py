"""The audit trail (`/trail`, SLT and admins): events newest first, 50 a page, searched by date
range, person and locker; with "host actions" ticked, also the host's own actions in that search
(grants, consents, releases, revocations, account changes, downloads: what `lockerctl export
--include actions` adds); admins download exactly that search (`/trail.csv`, `/trail.xlsx`,
`lockerctl.export`), each download recorded (`export`)."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ... import words
from ...bounds import YEARS, BoundError, parse_date
from ...display import event_time, received_time
from ...store import live as store_live
from ..deps import ADMIN_ONLY, SLT_ONLY, Viewer, ctx
from ..templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
ACTIONS_SHOWN = 100  # the newest host actions of a search; the downloads hold them all
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass
class Search:
    start: int | None
    end: int | None
    locker: str | None
    person: str | None
    actions: bool = False

    def action_rows(self, c) -> list | None:
        """The host actions of this search, oldest first (None unless asked for; a locker's
        search has none: actions belong to no locker)."""
        if not self.actions or self.locker is not None:
            return None
        from ...store.lookup import action_rows

        return list(action_rows(c.store, c.site, self.start, self.end, self.person))


def search(c, query) -> Search:
    """The trail search of a query (from, to, locker, person); HTTPException 400 for a bad
    date."""
    from ...export import date_range

    try:
        d_from = parse_date(query.get("from"), "from") if query.get("from") else None
        d_to = parse_date(query.get("to"), "to") if query.get("to") else None
    except BoundError as err:
        raise HTTPException(400, f"dates must be YYYY-MM-DD in the years {YEARS}: {err}") from None
    start, end = date_range(d_from, d_to, c.timezone())
    person = (query.get("person") or "").strip() or None
    actions = query.get("actions") == "1"
    return Search(start, end, query.get("locker") or None, person, actions)


def page_of(c, s: Search, wanted: str | None) -> tuple[int, int, int, list]:
    """(page number, pages, total, rows); a page past the end is the last one."""
    try:
        page_no = max(1, int(wanted or 1))
    except ValueError:
        page_no = 1
    total = c.store.count_events(c.site, s.start, s.end, s.locker, s.person)
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    page_no = min(page_no, pages)
    rows = store_live.trail_page(
        c.store, c.site, s.start, s.end, s.locker, s.person, PAGE_SIZE, (page_no - 1) * PAGE_SIZE
    )
    return page_no, pages, total, rows


@router.get("/trail")
def trail_page(request: Request, v: Viewer = SLT_ONLY):
    c = ctx(request)
    q = request.query_params
    s = search(c, q)
    page_no, pages, total, rows = page_of(c, s, q.get("page"))
    zone = c.timezone()
    events = [
        {
            "r": r,
            "when": received_time(r.received_at, r.ts, zone),
            "words": words.event_words(r.type),
            "reason": words.reason_words(r.reason),
        }
        for r in rows
    ]
    acts = s.action_rows(c)
    actions = None
    if acts is not None:
        newest = acts[::-1][:ACTIONS_SHOWN]
        actions = [{"r": a, "when": event_time(a.ts, a.ts, zone, "seconds")} for a in newest]
    keep = {k: q.get(k) for k in ("from", "to", "locker", "person", "actions") if q.get(k)}
    return render(
        request,
        "trail.html",
        "Audit trail",
        "/trail",
        events=events,
        keep=keep,
        query={k: q.get(k, "") for k in ("from", "to", "person", "locker", "actions")},
        actions=actions,
        actions_total=len(acts) if acts is not None else 0,
        lockers=[("", "all")] + [(r.id, r.id) for r in c.store.lockers(c.site)],
        page_no=page_no,
        pages=pages,
        total=total,
        downloads=v.role == "admin",
    )


def trail_download(request: Request, v: Viewer, fmt: str) -> Response:
    from ...export import export_events

    c = ctx(request)
    s = search(c, request.query_params)
    buf: io.StringIO | io.BytesIO = io.StringIO() if fmt == "csv" else io.BytesIO()
    n = export_events(
        c.store,
        c.site,
        fmt,
        buf,
        start=s.start,
        end=s.end,
        locker=s.locker,
        person=s.person,
        actions=s.action_rows(c),
    )
    value = buf.getvalue()
    data = value.encode("utf-8") if isinstance(value, str) else value
    detail = {"format": fmt, "rows": n, "from": s.start, "to": s.end, "actions": s.actions}
    c.store.record_action(
        c.site, v.actor, "export", {**detail, "locker": s.locker, "person": s.person}
    )
    stamp = dt.datetime.now(ZoneInfo(c.timezone())).strftime("%Y%m%d-%H%M")
    name = f"trail-{c.site}-{stamp}.{fmt}"
    return Response(
        data,
        media_type="text/csv; charset=utf-8" if fmt == "csv" else XLSX,
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.get("/trail.csv")
def trail_csv(request: Request, v: Viewer = ADMIN_ONLY):
    return trail_download(request, v, "csv")


@router.get("/trail.xlsx")
def trail_xlsx(request: Request, v: Viewer = ADMIN_ONLY):
    return trail_download(request, v, "xlsx")
