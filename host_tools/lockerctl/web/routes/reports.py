"""SLT's pages about how the policy is applied: the daily review (`/review?day=YYYY-MM-DD`,
`review.daily_review`) and the policy report (`/report?from=&to=`, `report.build`, with its
SVG charts; `/report.csv` the same figures), for SLT and admins."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ... import report, review
from ..deps import SLT_ONLY, Viewer, ctx
from ..templating import add_nav, render

router = APIRouter(include_in_schema=False)
add_nav("/review", "Daily review", ("slt", "admin"), before="/grants")
add_nav("/report", "Report", ("slt", "admin"), before="/grants")
DEFAULT_DAYS = 14


def _date(request: Request, name: str, default: dt.date) -> dt.date:
    text = request.query_params.get(name, "").strip()
    if not text:
        return default
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name}: expected a date YYYY-MM-DD") from None
    if not 2000 <= day.year <= 2100:
        raise HTTPException(400, f"{name}: dates must be in the years 2000-2100")
    return day


def _today(c) -> dt.date:
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(c.timezone())).date()


@router.get("/review")
def review_page(request: Request, v: Viewer = SLT_ONLY):
    c = ctx(request)
    day = _date(request, "day", _today(c))
    data = review.daily_review(c.store, c.site, day)
    return render(
        request,
        "review.html",
        f"Daily review: {day:%A %d %B %Y}",
        "/review",
        r=data,
        tz=c.timezone(),
        day=day.isoformat(),
        before=(day - dt.timedelta(days=1)).isoformat(),
        after=(day + dt.timedelta(days=1)).isoformat(),
    )


def _range(request: Request, c) -> tuple[dt.date, dt.date]:
    last = _date(request, "to", _today(c))
    first = _date(request, "from", last - dt.timedelta(days=DEFAULT_DAYS - 1))
    return first, last


def _build(c, first, last):
    try:
        return report.build(c.store, c.site, first, last)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None


@router.get("/report")
def report_page(request: Request, v: Viewer = SLT_ONLY):
    c = ctx(request)
    first, last = _range(request, c)
    rep = _build(c, first, last)
    return render(
        request,
        "report.html",
        "Policy report",
        "/report",
        report_html=report.body_html(rep),
        first=first.isoformat(),
        last=last.isoformat(),
    )


@router.get("/report.csv")
def report_csv(request: Request, v: Viewer = SLT_ONLY):
    c = ctx(request)
    first, last = _range(request, c)
    text = report.to_csv(_build(c, first, last))
    name = f"policy-report-{first}-{last}.csv"
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
