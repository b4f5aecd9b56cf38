"""Jinja2 templates (`web/templates/`, autoescaping on for every template) and the navigation.

`render(request, "page.html", title=..., active=..., **values)` renders a page in the base
layout (`base.html`) with what every page shows: the signed-in account, its navigation (the
links its role may use), the open alerts' count and a flash message.

A page of another module adds its navigation link with `add_nav(path, label, roles)`.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..display import format_ts
from .context import ADMIN, ALL, SLT

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class NavLink:
    path: str
    label: str
    roles: tuple[str, ...]


NAV: list[NavLink] = [
    NavLink("/lockers", "Lockers", ALL),
    NavLink("/alerts", "Alerts", ALL),
    NavLink("/open", "Emergency open", ALL),
    NavLink("/grants", "Grants", SLT),
    NavLink("/trail", "Trail", SLT),
    NavLink("/admin/roster", "Roster", ADMIN),
    NavLink("/admin/timetable", "Timetable", ADMIN),
    NavLink("/admin/lockers", "Lockers setup", ADMIN),
    NavLink("/admin/users", "Users", ADMIN),
]


def add_nav(path: str, label: str, roles=ALL, before: str | None = None) -> None:
    """Adds a navigation link (before the link to `before`, else at the end); once."""
    if any(link.path == path for link in NAV):
        return
    link = NavLink(path, label, tuple(roles))
    index = next((i for i, n in enumerate(NAV) if n.path == before), len(NAV))
    NAV.insert(index, link)


def local_time(ts, timezone: str, seconds: bool = False) -> str:
    """`ts` in local time ('' for None; `invalid time (ts=...)` for a value that is no time)."""
    return format_ts(ts, timezone, "seconds" if seconds else "minutes")


def _urlencode(values) -> str:
    if isinstance(values, dict):
        values = values.items()
    return urllib.parse.urlencode([(k, v) for k, v in values if v is not None])


env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["local_time"] = local_time
env.filters["urlencode_all"] = _urlencode
env.filters["quote"] = lambda v: urllib.parse.quote(str(v), safe="")


def render_to_string(name: str, **values) -> str:
    return env.get_template(name).render(**values)


def nav_for(role: str) -> list[NavLink]:
    return [link for link in NAV if role in link.roles]


def render(
    request: Request,
    name: str,
    title: str,
    active: str = "",
    status: int = 200,
    flash=None,
    **values,
) -> HTMLResponse:
    """A page in the layout, for the account of `request` (none on the sign-in pages)."""
    from .deps import ctx, mail_trouble, open_alert_count

    c = ctx(request)
    session = getattr(request.state, "session", None)
    token = getattr(request.state, "token", None)
    page = {
        "title": title,
        "active": active,
        "session": session,
        "user": session.user if session is not None else None,
        "csrf": session.csrf if session is not None else "",
        "nav": nav_for(session.user.role) if session is not None else [],
        "flash": flash or c.take_flash(token),
        "alert_count": open_alert_count(c) if session is not None else 0,
        # the alerts page says it in its own fragment (live)
        "mail_trouble": mail_trouble(c) if session is not None and active != "/alerts" else None,
    }
    html = env.get_template(name).render(page=page, **page, **values)
    return HTMLResponse(html, status)


def render_error(status: int, message: str) -> str:
    return env.get_template("error.html").render(
        title=f"Error {status}",
        message=message,
        session=None,
        user=None,
        nav=[],
        flash=None,
        active="",
        alert_count=0,
        csrf="",
    )
