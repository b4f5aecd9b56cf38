"""Small HTML helpers: escaping, the page layout and the navigation by role.

Pages are built from Python strings; every value that comes from data goes through `e()`.
No inline script or style anywhere: the Content-Security-Policy allows only /static/ files.
"""

from __future__ import annotations

import html

from ..display import format_ts

# (path, label, roles that see it)
NAV = [
    ("/lockers", "Lockers", ("office", "slt", "admin")),
    ("/alerts", "Alerts", ("office", "slt", "admin")),
    ("/open", "Emergency open", ("office", "slt", "admin")),
    ("/grants", "Grants", ("slt", "admin")),
    ("/trail", "Trail", ("slt", "admin")),
    ("/admin/roster", "Roster", ("admin",)),
    ("/admin/timetable", "Timetable", ("admin",)),
    ("/admin/lockers", "Lockers setup", ("admin",)),
    ("/admin/users", "Users", ("admin",)),
]


def e(value) -> str:
    """Escaped text ('' for None)."""
    return "" if value is None else html.escape(str(value), quote=True)


def local_time(ts, timezone: str, seconds: bool = False) -> str:
    """`ts` in local time ('' for None; `invalid time (ts=...)` for a value that is no time)."""
    return format_ts(ts, timezone, "seconds" if seconds else "minutes")


def csrf_field(session) -> str:
    return f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'


def flash_html(flash) -> str:
    if not flash:
        return ""
    kind, text = flash
    role = "alert" if kind == "error" else "status"
    return f'<div class="flash {e(kind)}" role="{role}">{e(text)}</div>'


def error_html(status: int, message: str) -> str:
    """The page for an HTTP error (or a 500): the message, escaped, and a way back."""
    body = f'<p class="error" role="alert">{e(message)}</p><p><a href="/">Back</a></p>'
    return layout(f"Error {status}", body)


def layout(
    title: str, body: str, session=None, active: str = "", flash=None, alerts: int | None = None
) -> str:
    nav = ""
    if session is not None:
        links = []
        for path, label, roles in NAV:
            if session.user.role not in roles:
                continue
            current = ' aria-current="page"' if active == path else ""
            badge = ""
            if path == "/alerts":
                n = alerts or 0
                badge = (
                    f' <span class="badge" id="alert-count" data-count="{n}">'
                    f"{n if n else ''}</span>"
                )
            links.append(f'<li><a href="{path}"{current}>{e(label)}{badge}</a></li>')
        nav = (
            '<header class="top"><span class="brand">classlocker</span>'
            f'<nav aria-label="Main"><ul>{"".join(links)}</ul></nav>'
            f'<form method="post" action="/logout" class="who">'
            f"<span>{e(session.user.username)} ({e(session.user.role)})</span>"
            f'{csrf_field(session)}<button type="submit" class="link">Sign out</button></form>'
            "</header>"
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · classlocker</title>"
        '<link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/app.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'{nav}<main id="main"><h1>{e(title)}</h1>{flash_html(flash)}{body}</main>'
        "</body></html>"
    )


def table(headers, rows, caption: str = "", cls: str = "") -> str:
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="empty">Nothing to show.</td></tr>'
    return (
        f'<div class="scroll"><table class="{e(cls)}">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def options(values, selected=None) -> str:
    """<option>s from (value, label) pairs."""
    out = []
    for value, label in values:
        sel = " selected" if str(value) == str(selected) else ""
        out.append(f'<option value="{e(value)}"{sel}>{e(label)}</option>')
    return "".join(out)
