"""The dashboard's pages. Each route names the roles that may use it (server.App.route); every
POST has passed the CSRF check before it gets here, and every change is recorded in the audit
trail with the account (`web:<username>`).

Who sees what: office — lockers, alerts, emergency open; slt — also grants and the trail;
admin — also roster, timetable, lockers setup, users and exports (trail downloads). Holder names
are shown to slt and admin only; office sees that a bay is occupied, not whose phone it is.
"""

from __future__ import annotations

import datetime as dt
import hmac
import io
import json
import secrets
import time
import urllib.parse
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .. import alerts as alerts_mod
from ..bounds import YEARS, BoundError, check_text, local_timestamp, parse_date
from ..display import event_time, read_state, valid_ts
from ..store import StoreError, events, people
from .html import csrf_field, e, layout, local_time, options, table
from .server import (
    COOKIE,
    LOGIN_COOKIE,
    MAX_BODY,
    HTTPError,
    Request,
    Response,
    cookie_header,
)

NAMES_ROLES = ("slt", "admin")
ALL = ("office", "slt", "admin")
SLT = ("slt", "admin")
ADMIN = ("admin",)
PAGE_SIZE = 50
OUTCOME_TYPES = ("emergency_open", "cmd_rejected")


CLOCK_MAX_OFF_S = 5  # a locker whose clock is further than this from the host's is marked
CLOCK_FRESH_S = 300  # an offset measured longer ago than this is not shown


def can_see_names(req: Request) -> bool:
    return req.session is not None and req.session.user.role in NAMES_ROLES


def register(app) -> None:  # noqa: C901 - one place that lists every page
    site = app.site
    store = app.store

    def tz() -> str:
        return store.timezone(site)

    def page(
        req: Request, title: str, body: str, active: str = "", status: int = 200, flash=None
    ) -> Response:
        flash = flash or app.take_flash(req)
        return Response(
            status, layout(title, body, req.session, active, flash, alerts=open_alert_count())
        )

    def open_alert_count() -> int:
        try:
            found, _ = alerts_mod.compute(store, site, app.accounts.acknowledgements())
        except Exception:
            return 0
        return sum(1 for a in found if a.acked_by is None)

    # -- login and logout ------------------------------------------------------------------------

    def login_form(
        req: Request, message: str = "", status: int = 200, username: str = ""
    ) -> Response:
        token = req.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        err = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
        body = (
            f'{err}<form method="post" action="/login" class="card narrow">'
            f'<input type="hidden" name="csrf" value="{e(token)}">'
            '<label for="username">Username</label>'
            f'<input id="username" name="username" autocomplete="username" required autofocus '
            f'value="{e(username)}">'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" '
            'autocomplete="current-password" required>'
            '<button type="submit">Sign in</button></form>' + "".join(app.login_links)
        )
        resp = Response(status, layout("Sign in", body))
        resp.headers.append(cookie_header(LOGIN_COOKIE, token, 3600))
        return resp

    @app.route("GET", "/login")
    def login_get(req):
        if req.session is not None:
            return Response.redirect("/lockers")
        return login_form(req)

    @app.route("POST", "/login")
    def login_post(req):
        # The login form carries a token matched to a cookie; a token that does not match is
        # refused. A client that sends no token (a script posting the two fields) is accepted
        # unless the browser says the form came from another origin.
        sent, cookie = req.form.get("csrf"), req.cookies.get(LOGIN_COOKIE)
        if sent and not (cookie and hmac.compare_digest(sent, cookie)):
            return login_form(req, "The sign-in form expired; please try again.", 403)
        origin = req.headers.get("origin")
        host = req.headers.get("host", "")
        if origin and urllib.parse.urlsplit(origin).netloc != host:
            return login_form(req, "Sign-in from another site refused.", 403)
        username = req.form.get("username", "").strip()
        password = req.form.get("password", "")
        # The attempt is counted before the (slow) password check, so parallel guesses cannot
        # all pass the limit; only this address is limited for this user.
        wait = app.login_limiter.begin(username, req.client)
        if wait:
            return login_form(
                req,
                f"Too many failed sign-ins; try again in {int(wait) + 1} seconds.",
                429,
                username,
            )
        user = app.accounts.authenticate(username, password) if username else None
        if user is None:
            store.record_action(
                site, "web", "login_failed", {"username": username[:64], "client": req.client}
            )
            time.sleep(app.login_limiter.delay(app.login_limiter.failures(username, req.client)))
            return login_form(req, "Wrong username or password.", 401, username)
        app.login_limiter.succeeded(username, req.client)
        token, _ = app.accounts.create_session(user)
        store.record_action(site, f"web:{user.username}", "login", {"client": req.client})
        resp = Response.redirect("/lockers")
        resp.headers.append(cookie_header(COOKIE, token))
        resp.headers.append(cookie_header(LOGIN_COOKIE, "", 0))
        return resp

    @app.route("POST", "/logout")
    def logout(req):
        app.accounts.end_session(req.token)
        store.record_action(site, app.actor(req), "logout", {})
        resp = Response.redirect("/login")
        resp.headers.append(cookie_header(COOKIE, "", 0))
        return resp

    @app.route("GET", "/")
    def home(req):
        return Response.redirect("/lockers")

    # -- lockers (live) --------------------------------------------------------------------------

    def names_of(ids) -> dict:
        ids = [i for i in set(ids) if i]
        if not ids:
            return {}
        with store._read() as conn:
            rows = conn.execute(
                sa.select(people.c.person_id, people.c.name).where(
                    people.c.site == site, people.c.person_id.in_(ids)
                )
            ).all()
        return {r.person_id: r.name for r in rows}

    def bay_status(bay: dict) -> tuple[str, str]:
        if bay.get("door") == "open":
            return "door-open", "door open"
        if not bay.get("locked", True):
            return "unlocked", "unlocked"
        if bay.get("holder"):
            return "occupied", "occupied"
        return "free", "free"

    def clock_offset(locker_id: str, offsets: dict) -> float | None:
        """How far the locker's clock is from the host's (seconds, + ahead), when measured in
        the last CLOCK_FRESH_S seconds (hostclock.HostClock records it from live states)."""
        got = offsets.get(locker_id)
        if got is None or time.time() - got[1] > CLOCK_FRESH_S:
            return None
        return got[0]

    def lockers_fragment(req: Request) -> str:
        zone = tz()
        rows = store.lockers(site)
        offsets = store.clock_offsets(site)
        show_names = can_see_names(req)
        states = {r.id: read_state(r.state) for r in rows}
        holders = [b["holder"] for s in states.values() for b in s.bays]
        names = names_of(holders) if show_names else {}
        out = []
        for r in rows:
            state = states[r.id]
            online = {True: "online", False: "offline"}.get(r.online, "never seen")
            seen = local_time(r.last_seen, zone, seconds=True) or "never"
            notes = []
            if state.unreadable:
                notes.append("unreadable state")
            elif state.skipped:
                notes.append(f"{state.skipped} unreadable bay report(s)")
            if state.clock_ok is False:
                notes.append("clock not trusted")
            offset = clock_offset(r.id, offsets) if r.online else None
            clock_off = ""
            if offset is not None and abs(offset) > CLOCK_MAX_OFF_S:
                side = "ahead of" if offset > 0 else "behind"
                clock_off = (
                    f' · <span class="clock-off" data-offset="{offset:.0f}">clock '
                    f"{abs(offset):.0f} s {side} the host</span>"
                )
            if state.pending:
                notes.append(f"{state.pending} event(s) waiting to upload")
            cells = []
            bays = state.bays
            if not bays:
                count = r.bays if isinstance(r.bays, int) and 0 < r.bays <= 64 else 0
                bays = [{"bay": n, "unknown": True} for n in range(1, count + 1)]
            for b in bays:
                if b.get("unknown"):
                    cls, word = "unknown", "no report"
                else:
                    cls, word = bay_status(b)
                who = ""
                holder = b.get("holder")
                if holder and show_names:
                    who = (
                        f'<span class="holder">{e(names.get(holder, holder))}</span>'
                        f'<span class="pid">{e(holder)}</span>'
                    )
                inner = (
                    f'<span class="num">Bay {e(b.get("bay"))}</span>'
                    f'<span class="word">{e(word)}</span>{who}'
                )
                if cls == "occupied":  # a tap on an occupied bay starts an open of that bay
                    q = urllib.parse.urlencode(
                        {"locker": r.id, "bay": b.get("bay"), "scope": "bay"}
                    )
                    inner = (
                        f'<a href="/open?{e(q)}" aria-label="Bay {e(b.get("bay"))} occupied: '
                        f'open it">{inner}</a>'
                    )
                cells.append(
                    f'<li class="bay {cls}" data-bay="{e(b.get("bay"))}" data-status="{cls}">'
                    f"{inner}</li>"
                )
            out.append(
                f'<section class="locker" data-locker="{e(r.id)}" aria-label="Locker {e(r.id)}">'
                f'<h2>{e(r.id)} <span class="status {online.replace(" ", "-")}">{online}</span>'
                f'</h2><p class="meta">Last seen {e(seen)}'
                f"{' · ' + e(', '.join(notes)) if notes else ''}{clock_off}"
                f' · <a href="/open?locker={urllib.parse.quote(r.id)}">Open bays…</a></p>'
                f'<ul class="bays">{"".join(cells)}</ul></section>'
            )
        if not out:
            return '<p class="empty">No lockers registered yet.</p>'
        return "".join(out)

    def recent_fragment(req: Request, limit: int = 15) -> str:
        zone = tz()
        show_names = can_see_names(req)
        rows = list(store.events(site, newest_first=True, limit=limit))
        items = []
        for r in rows:
            who = ""
            if r.person:
                who = f" — {e(r.name or r.person)}" if show_names else " — (holder)"
            bay = f" bay {r.bay}" if r.bay is not None else ""
            when = event_time(r.ts, r.received_at, zone, "seconds")
            items.append(
                f'<li data-event="{e(r.type)}" data-locker="{e(r.locker_id)}">'
                f"<time>{e(when)}</time> <strong>{e(r.type)}</strong> "
                f"{'(unknown type) ' if r.unknown_type else ''}"
                f"{e(r.locker_id)}{e(bay)}{who}"
                f"{' · ' + e(r.reason) if r.reason else ''}</li>"
            )
        if not items:
            return '<li class="empty">No events yet.</li>'
        return "".join(items)

    @app.route("GET", "/lockers")
    def lockers_page(req):
        body = (
            '<p class="hint">Updates by itself every few seconds.</p>'
            f'<div id="lockers" class="lockers" data-live="/api/lockers">'
            f"{lockers_fragment(req)}</div>"
            "<h2>Latest events</h2>"
            f'<ol id="events" class="events" aria-live="polite" data-live="/api/events">'
            f"{recent_fragment(req)}</ol>"
        )
        return page(req, "Lockers", body, "/lockers")

    @app.route("GET", "/api/lockers")
    def api_lockers(req):
        return Response.json({"html": lockers_fragment(req), "alerts": open_alert_count()})

    @app.route("GET", "/api/events")
    def api_events(req):
        return Response.json({"html": recent_fragment(req)})

    @app.route("GET", "/api/state")
    def api_state(req):
        """The lockers as JSON (for scripts and tests): ids, online, last_seen, bays."""
        show = can_see_names(req)
        out = []
        offsets = store.clock_offsets(site)
        for r in store.lockers(site):
            state = read_state(r.state)
            bays = []
            for b in state.bays:
                b = dict(b)
                if not show:
                    b["holder"] = "occupied" if b.get("holder") else None
                bays.append(b)
            out.append(
                {
                    "id": r.id,
                    "online": r.online,
                    "last_seen": r.last_seen if valid_ts(r.last_seen) else None,
                    "clock_ok": state.clock_ok,
                    "clock_offset": clock_offset(r.id, offsets),
                    "unreadable": state.unreadable,
                    "bays": bays,
                }
            )
        return Response.json({"lockers": out})

    # -- alerts ----------------------------------------------------------------------------------

    def alerts_fragment(req: Request) -> str:
        zone = tz()
        acks = app.accounts.acknowledgements()
        found, stale = alerts_mod.compute(store, site, acks)
        if stale:
            app.accounts.forget_acknowledgements(stale)
        show_names = can_see_names(req)
        open_rows, done_rows = [], []
        for a in found:
            who = ""
            if a.person:
                who = e(a.name or a.person) if show_names else "(holder)"
            cells = [
                e(
                    event_time(a.ts, a.received_at, zone, "minutes")
                    if a.key.startswith("event:")
                    else local_time(a.when, zone)
                ),
                e(a.locker),
                e(a.bay if a.bay is not None else ""),
                f'<span class="kind {e(a.kind)}">{e(a.title)}</span>',
                who,
                e(a.detail),
            ]
            if a.acked_by is None:
                cells.append(
                    f'<form method="post" action="/alerts/ack">{csrf_field(req.session)}'
                    f'<input type="hidden" name="alert" value="{e(a.key)}">'
                    f'<button type="submit" aria-label="Acknowledge {e(a.title)} at '
                    f'{e(a.locker)}">Acknowledge</button></form>'
                )
                open_rows.append(cells)
            else:
                cells.append(f"by {e(a.acked_by)} at {e(local_time(a.acked_at, zone))}")
                done_rows.append(cells)
        heads = ["When", "Locker", "Bay", "Alert", "Person", "Detail", ""]
        return (
            table(heads, open_rows, "Needs attention", "alerts open")
            + "<details><summary>Acknowledged</summary>"
            + table(heads, done_rows, "Acknowledged", "alerts done")
            + "</details>"
        )

    @app.route("GET", "/alerts")
    def alerts_page(req):
        body = f'<div id="alerts" data-live="/api/alerts">{alerts_fragment(req)}</div>'
        return page(req, "Alerts", body, "/alerts")

    @app.route("GET", "/api/alerts")
    def api_alerts(req):
        return Response.json({"html": alerts_fragment(req), "alerts": open_alert_count()})

    @app.route("POST", "/alerts/ack")
    def alerts_ack(req):
        key = req.f("alert").strip()
        if not key or len(key) > 120:
            raise HTTPError(400, "which alert? (missing alert)")
        found, _ = alerts_mod.compute(store, site, {})
        match = [a for a in found if a.key == key]
        if not match:
            app.flash(req, "error", "That alert is no longer open.")
            return Response.redirect("/alerts")
        a = match[0]
        if app.accounts.acknowledge(
            key, req.user.username, {"locker": a.locker, "kind": a.kind, "bay": a.bay}
        ):
            app.flash(req, "ok", f"Acknowledged: {a.title} at {a.locker}.")
        else:
            app.flash(req, "ok", "It was already acknowledged.")
        return Response.redirect("/alerts")

    # -- emergency open --------------------------------------------------------------------------

    def open_form(req: Request, values: dict, message: str = "", status: int = 200):
        choices = [(r.id, f"{r.id} ({r.bays} bays)") for r in store.lockers(site)]
        scope = values.get("scope") or ("bay" if values.get("bay") else "locker")
        checked = {s: (" checked" if scope == s else "") for s in ("bay", "locker", "staff")}
        err = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
        body = (
            f'{err}<form method="post" action="/open" class="card">{csrf_field(req.session)}'
            "<fieldset><legend>What to open</legend>"
            f'<label class="choice"><input type="radio" name="scope" value="bay"'
            f"{checked['bay']}> One bay</label>"
            f'<label class="choice"><input type="radio" name="scope" value="locker"'
            f"{checked['locker']}> Every occupied bay of a locker bank</label>"
            f'<label class="choice"><input type="radio" name="scope" value="staff"'
            f"{checked['staff']}> Every staff bay of the school (all banks)</label></fieldset>"
            '<label for="locker">Locker bank</label>'
            f'<select id="locker" name="locker">'
            f"{options(choices, values.get('locker'))}"
            "</select>"
            '<label for="bay">Bay number (for one bay)</label>'
            f'<input id="bay" name="bay" inputmode="numeric" value="{e(values.get("bay", ""))}">'
            '<label for="reason">Reason (required, recorded)</label>'
            f'<textarea id="reason" name="reason" required maxlength="200">'
            f"{e(values.get('reason', ''))}</textarea>"
            '<button type="submit">Continue</button></form>'
        )
        if req.user.person_id is None:
            body = (
                '<p class="error" role="alert">Your account is not linked to a person on '
                "the roster, so it cannot send opens (an admin sets it: "
                "lockerctl user add … --person PERSON_ID).</p>"
            ) + body
        return page(req, "Emergency open", body, "/open", status)

    @app.route("GET", "/open")
    def open_get(req):
        return open_form(
            req, {"locker": req.q("locker"), "bay": req.q("bay"), "scope": req.q("scope")}
        )

    def open_targets(req: Request) -> tuple[list[tuple[str, object]], str, str]:
        """[(locker, bay)], reason, description; ValueError for a bad request."""
        from ..serve import check_open

        scope = req.f("scope")
        reason = req.f("reason").strip()
        if not reason:
            raise ValueError("a reason is required")
        check_text(reason, "the reason", 200)
        by = req.user.person_id
        if not by:
            raise ValueError("your account is not linked to a person on the roster")
        if scope == "staff":
            ids = [r.id for r in store.lockers(site)]
            if not ids:
                raise ValueError("no lockers registered")
            for i in ids:
                check_open(store, site, i, "staff", by, reason, 60)
            return [(i, "staff") for i in ids], reason, "every staff bay of the school"
        locker = req.f("locker")
        if scope == "bay":
            if not req.f("bay").strip():
                raise ValueError("which bay? (enter a bay number)")
            _, bay, _ = check_open(store, site, locker, req.f("bay"), by, reason, 60)
            if not isinstance(bay, int):
                raise ValueError("enter a bay number for one bay")
            return [(locker, bay)], reason, f"bay {bay} of {locker}"
        if scope == "locker":
            check_open(store, site, locker, "all", by, reason, 60)
            return [(locker, "all")], reason, f"every occupied bay of {locker}"
        raise ValueError("choose what to open")

    @app.route("POST", "/open")
    def open_post(req):
        values = dict(req.form)
        try:
            targets, reason, what = open_targets(req)
        except ValueError as err:
            return open_form(req, values, str(err), 400)
        if req.f("confirm") != "yes":
            hidden = "".join(
                f'<input type="hidden" name="{e(k)}" value="{e(values.get(k, ""))}">'
                for k in ("scope", "locker", "bay", "reason")
            )
            body = (
                f'<div class="card confirm" role="alertdialog" aria-labelledby="confirm-q">'
                f'<p id="confirm-q" class="big">Open {e(what)}?</p>'
                f"<p>Reason: <q>{e(reason)}</q></p><p>The phones in these bays will be "
                "released. This is recorded with your name.</p>"
                f'<form method="post" action="/open">{csrf_field(req.session)}{hidden}'
                '<input type="hidden" name="confirm" value="yes">'
                '<button type="submit" class="danger">Confirm open</button> '
                '<a href="/open" class="button secondary">Cancel</a></form></div>'
            )
            return page(req, "Confirm emergency open", body, "/open")
        if app.publish is None:
            return open_form(
                req,
                values,
                "This dashboard has no connection to the lockers "
                "(run it with lockerctl serve --http).",
                503,
            )
        if not app.connected():
            return open_form(
                req,
                values,
                "Not connected to the broker right now: nothing was sent. Try again in a "
                "moment (the service reconnects by itself).",
                503,
            )
        from ..serve import prepare_open

        with store._read() as conn:
            after = conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0
        sent = []
        for locker, bay in targets:
            try:
                _, payload, detail = prepare_open(
                    store,
                    site,
                    locker,
                    bay,
                    req.user.person_id,
                    reason,
                    actor=app.actor(req),
                )
                app.publish(locker, payload)
            except (ValueError, OSError, StoreError) as err:
                app.flash(req, "error", f"{locker}: not sent: {err}")
                continue
            sent.append({"locker": locker, "bay": bay, "cmd_id": detail["cmd_id"]})
        ref = secrets.token_urlsafe(12)
        with app.lock:
            app.sent[ref] = {
                "after": after,
                "sent": sent,
                "by": req.user.person_id,
                "reason": reason,
                "what": what,
                "at": time.time(),
                "user": req.user.username,
            }
            if len(app.sent) > 200:
                for k in list(app.sent)[:50]:
                    del app.sent[k]
        return Response.redirect(f"/open/sent?ref={ref}")

    def outcome_fragment(req: Request, info: dict) -> str:
        zone = tz()
        lockers = [s["locker"] for s in info["sent"]]
        if not lockers:
            return '<p class="error">Nothing was sent.</p>'
        with store._read() as conn:
            rows = conn.execute(
                sa.select(
                    events.c.locker_id,
                    events.c.type,
                    events.c.bay,
                    events.c.person,
                    events.c.by,
                    events.c.reason,
                    events.c.ts,
                    events.c.sort_ts,
                )
                .where(
                    events.c.site == site,
                    events.c.id > info["after"],
                    events.c.locker_id.in_(lockers),
                    events.c.type.in_(OUTCOME_TYPES),
                )
                .order_by(events.c.id)
            ).all()
        items, answered = [], set()
        for r in rows:
            if r.type == "emergency_open" and (r.by != info["by"] or r.reason != info["reason"]):
                continue
            answered.add(r.locker_id)
            when = event_time(r.ts, r.sort_ts, zone, "seconds")
            if r.type == "cmd_rejected":
                text = f"{r.locker_id} rejected the command: {r.reason or 'rejected'}"
                cls = "rejected"
            elif r.bay is None:
                text = f"{r.locker_id}: no occupied bay to open"
                cls = "nothing"
            else:
                text = f"{r.locker_id}: bay {r.bay} opened"
                cls = "opened"
            items.append(
                f'<li class="outcome {cls}" data-locker="{e(r.locker_id)}" '
                f'data-bay="{e(r.bay)}"><time>{e(when)}</time> {e(text)}</li>'
            )
        waiting = [x for x in lockers if x not in answered]
        wait = ""
        if waiting:
            wait = (
                f'<p class="waiting">Waiting for {e(", ".join(waiting))} to answer… '
                "(an offline locker answers when it is back)</p>"
            )
        return f'<ul class="outcomes">{"".join(items)}</ul>{wait}'

    @app.route("GET", "/open/sent")
    def open_sent(req):
        info = app.sent.get(req.q("ref"))
        if info is None:
            raise HTTPError(404, "no such open (the dashboard may have restarted)")
        sent = (
            ", ".join(f"{s['locker']} ({s['bay']}, command {s['cmd_id']})" for s in info["sent"])
            or "nothing"
        )
        body = (
            f"<p>Sent: open {e(info['what'])} — {e(sent)}. Reason: <q>{e(info['reason'])}"
            "</q></p><h2>What the lockers did</h2>"
            f'<div id="outcome" aria-live="polite" '
            f'data-live="/api/open?ref={e(urllib.parse.quote(req.q("ref")))}">'
            f"{outcome_fragment(req, info)}</div>"
            '<p><a href="/lockers">Back to the lockers</a></p>'
        )
        return page(req, "Emergency open sent", body, "/open")

    @app.route("GET", "/api/open")
    def api_open(req):
        info = app.sent.get(req.q("ref"))
        if info is None:
            return Response.json({"error": "no such open"}, 404)
        return Response.json({"html": outcome_fragment(req, info)})

    # -- grants (SLT) ----------------------------------------------------------------------------

    def grants_page_body(req: Request, values: dict, message: str = "") -> str:
        zone = tz()
        now = int(time.time())
        rows = []
        for g in store.grants(site, now=now):
            status = "future" if g.from_ts > now else "active"
            rows.append(
                [
                    e(g.id),
                    e(g.person_id),
                    e(g.locker_id or "every locker"),
                    e(local_time(g.from_ts, zone)),
                    e(local_time(g.until_ts, zone)),
                    e(g.by),
                    e(g.reason),
                    e(status),
                    f'<form method="post" action="/grants/revoke">'
                    f'{csrf_field(req.session)}<input type="hidden" name="id" '
                    f'value="{e(g.id)}"><button type="submit" aria-label="Revoke grant '
                    f'{e(g.id)}">Revoke</button></form>',
                ]
            )
        lockers = [("", "every locker")] + [(r.id, r.id) for r in store.lockers(site)]
        err = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
        default_from = dt.datetime.now(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")
        return (
            table(
                ["Id", "Person", "Locker", "From", "Until", "By", "Reason", "Status", ""],
                rows,
                "Current and future grants",
                "grants",
            )
            + f'<h2>New grant</h2>{err}<form method="post" action="/grants" class="card">'
            f"{csrf_field(req.session)}"
            '<label for="person">Person id (type a name or id to pick from the roster)</label>'
            f'<input id="person" name="person" required list="people" autocomplete="off" '
            f'value="{e(values.get("person", ""))}">'
            f'<datalist id="people">{people_options()}</datalist>'
            f'<label for="from">From (local time, {e(zone)})</label>'
            f'<input id="from" name="from" type="datetime-local" required '
            f'value="{e(values.get("from", default_from))}">'
            '<label for="until">Until</label>'
            f'<input id="until" name="until" type="datetime-local" required '
            f'value="{e(values.get("until", ""))}">'
            '<label for="glocker">Locker</label>'
            f'<select id="glocker" name="locker">{options(lockers, values.get("locker"))}'
            "</select>"
            '<label for="greason">Reason (required)</label>'
            f'<textarea id="greason" name="reason" required maxlength="200">'
            f"{e(values.get('reason', ''))}</textarea>"
            '<button type="submit">Grant</button></form>'
        )

    def people_options() -> str:
        seen, out = set(), []
        for r in store.roster(site):
            if r.person_id not in seen:
                seen.add(r.person_id)
                out.append(f'<option value="{e(r.person_id)}">{e(r.name)}</option>')
        return "".join(out)

    @app.route("GET", "/grants", SLT)
    def grants_get(req):
        return page(req, "Exception grants", grants_page_body(req, {}), "/grants")

    def parse_local(text: str, zone: str, what: str) -> int:
        try:
            when = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"{what}: expected a date and time like 2026-09-10T15:00") from None
        return local_timestamp(when, zone, what)

    @app.route("POST", "/grants", SLT)
    def grants_post(req):
        values = dict(req.form)
        zone = tz()
        try:
            person = req.f("person").strip()
            if store.person(site, person) is None:
                raise ValueError(f"{person or '(empty)'} is not on the roster")
            by = req.user.person_id
            if not by or store.person(site, by) is None:
                raise ValueError("your account is not linked to a person on the roster")
            start = parse_local(req.f("from"), zone, "From")
            end = parse_local(req.f("until"), zone, "Until")
            if start >= end:
                raise ValueError("From must be before Until")
            if end <= time.time():
                raise ValueError("Until has already passed")
            reason = req.f("reason").strip()
            if not reason:
                raise ValueError("a reason is required")
            check_text(reason, "the reason", 200)
            locker = req.f("locker") or None
            if locker is not None and store.locker(site, locker) is None:
                raise ValueError(f"no locker {locker}")
            gid = store.add_grant(
                site, person, start, end, by, reason, locker, actor=app.actor(req)
            )
        except (ValueError, StoreError) as err:
            return page(
                req, "Exception grants", grants_page_body(req, values, str(err)), "/grants", 400
            )
        app.flash(req, "ok", f"Grant {gid} for {person} created.")
        return Response.redirect("/grants")

    @app.route("POST", "/grants/revoke", SLT)
    def grants_revoke(req):
        try:
            gid = int(req.f("id"))
            if not 0 < gid < 2**63:  # what the store's integers hold
                raise StoreError(f"no grant {gid}")
            store.revoke_grant(site, gid, actor=app.actor(req))
            app.flash(req, "ok", f"Grant {req.f('id')} revoked.")
        except (ValueError, StoreError) as err:
            app.flash(req, "error", str(err))
        return Response.redirect("/grants")

    # -- trail -----------------------------------------------------------------------------------

    def trail_filters(req: Request):
        from ..export import date_range

        zone = tz()
        try:
            d_from = parse_date(req.q("from"), "from") if req.q("from") else None
            d_to = parse_date(req.q("to"), "to") if req.q("to") else None
        except BoundError as err:
            raise HTTPError(400, f"dates must be YYYY-MM-DD in the years {YEARS}: {err}") from None
        start, end = date_range(d_from, d_to, zone)
        return start, end, req.q("locker") or None, req.q("person").strip() or None

    @app.route("GET", "/trail", SLT)
    def trail_page(req):
        zone = tz()
        start, end, locker, person = trail_filters(req)
        try:
            page_no = max(1, int(req.q("page") or 1))
        except ValueError:
            page_no = 1
        total = store.count_events(site, start, end, locker, person)
        page_no = min(page_no, max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE))  # past the end: last
        q = (
            store._events_query(site, start, end, locker, person)
            .order_by(events.c.sort_ts.desc(), events.c.locker_id, events.c.seq.desc())
            .limit(PAGE_SIZE)
            .offset((page_no - 1) * PAGE_SIZE)
        )
        with store._read() as conn:
            rows = conn.execute(q).all()
        trs = [
            [
                e(event_time(r.ts, r.received_at, zone, "seconds")),
                e(r.locker_id),
                e(r.bay if r.bay is not None else ""),
                e(r.type + (" (unknown type)" if r.unknown_type else "")),
                e(r.person or ""),
                e(r.name or ""),
                e(r.by or ""),
                e(r.reason or ""),
                e(r.seq),
            ]
            for r in rows
        ]
        lockers = [("", "all")] + [(r.id, r.id) for r in store.lockers(site)]
        keep = {k: req.q(k) for k in ("from", "to", "locker", "person") if req.q(k)}
        qs = urllib.parse.urlencode(keep)
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
        nav = []

        def link(n):
            return e(urllib.parse.urlencode({**keep, "page": n}))

        if page_no > 1:
            nav.append(f'<a href="/trail?{link(page_no - 1)}" rel="prev">← Newer</a>')
        nav.append(f"<span>Page {page_no} of {pages} ({total} events)</span>")
        if page_no < pages:
            nav.append(f'<a href="/trail?{link(page_no + 1)}" rel="next">Older →</a>')
        downloads = ""
        if req.user.role == "admin":
            downloads = (
                f'<p class="downloads">Download what is shown: '
                f'<a href="/trail.csv?{e(qs)}" download>CSV</a> · '
                f'<a href="/trail.xlsx?{e(qs)}" download>Excel</a></p>'
            )
        body = (
            '<form method="get" action="/trail" class="filters card">'
            f'<label for="tfrom">From date</label><input id="tfrom" name="from" type="date" '
            f'value="{e(req.q("from"))}">'
            f'<label for="tto">To date</label><input id="tto" name="to" type="date" '
            f'value="{e(req.q("to"))}">'
            f'<label for="tperson">Person id</label><input id="tperson" name="person" '
            f'value="{e(req.q("person"))}">'
            f'<label for="tlocker">Locker</label><select id="tlocker" name="locker">'
            f"{options(lockers, req.q('locker'))}</select>"
            '<button type="submit">Search</button></form>'
            + downloads
            + table(
                ["Time", "Locker", "Bay", "Event", "Person", "Name", "By", "Reason", "Seq"],
                trs,
                "Events, newest first",
                "trail",
            )
            + f'<nav class="pager" aria-label="Pages">{" ".join(nav)}</nav>'
        )
        return page(req, "Audit trail", body, "/trail")

    def trail_download(req: Request, fmt: str) -> Response:
        from ..export import export_events

        start, end, locker, person = trail_filters(req)
        if fmt == "csv":
            buf = io.StringIO()
            n = export_events(
                store, site, "csv", buf, start=start, end=end, locker=locker, person=person
            )
            data = buf.getvalue().encode("utf-8")
            ctype = "text/csv; charset=utf-8"
        else:
            bbuf = io.BytesIO()
            n = export_events(
                store, site, "xlsx", bbuf, start=start, end=end, locker=locker, person=person
            )
            data = bbuf.getvalue()
            ctype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        store.record_action(
            site,
            app.actor(req),
            "export",
            {
                "format": fmt,
                "rows": n,
                "from": start,
                "to": end,
                "locker": locker,
                "person": person,
            },
        )
        stamp = dt.datetime.now(ZoneInfo(tz())).strftime("%Y%m%d-%H%M")
        return Response(
            200,
            data,
            ctype,
            headers=[
                ("Content-Disposition", f'attachment; filename="trail-{site}-{stamp}.{fmt}"')
            ],
        )

    @app.route("GET", "/trail.csv", ADMIN)
    def trail_csv(req):
        return trail_download(req, "csv")

    @app.route("GET", "/trail.xlsx", ADMIN)
    def trail_xlsx(req):
        return trail_download(req, "xlsx")

    # -- admin: roster ---------------------------------------------------------------------------

    def roster_body(req: Request, problems=None, summary: str = "") -> str:
        rows = store.roster(site)
        people_n = len({r.person_id for r in rows})
        by_role: dict[str, int] = {}
        for r in rows:
            by_role[r.role] = by_role.get(r.role, 0) + 1
        roles = ", ".join(f"{n} {role}" for role, n in sorted(by_role.items())) or "none"
        bad = ""
        if problems is not None:
            bad = (
                '<div class="error" role="alert"><p>'
                + e(summary)
                + "</p>"
                + table(
                    ["Line", "Problem"],
                    [[e(line), e(msg)] for line, msg in problems],
                    "Bad lines",
                    "problems",
                )
                + "</div>"
            )
        return (
            f"{bad}<p>The roster lists {people_n} people with {len(rows)} cards ({e(roles)}). "
            '<a href="/admin/roster.csv" download>Download it (card numbers masked)</a>.</p>'
            '<form method="post" action="/admin/roster" enctype="multipart/form-data" '
            f'class="card">{csrf_field(req.session)}'
            '<label for="roster">Roster CSV (person_id,name,role,year,walk_home,card_uid); it '
            "replaces the whole roster</label>"
            '<input id="roster" name="roster" type="file" accept=".csv,text/csv" required>'
            '<button type="submit">Upload</button></form>'
        )

    @app.route("GET", "/admin/roster", ADMIN)
    def roster_get(req):
        return page(req, "Roster", roster_body(req), "/admin/roster")

    @app.route("POST", "/admin/roster", ADMIN, max_body=MAX_BODY)
    def roster_post(req):
        from ..roster import RosterError, parse_roster

        filename, data = req.files.get("roster", ("", b""))
        if not filename and not data:
            return page(
                req,
                "Roster",
                roster_body(req, [(0, "no file chosen")], "Nothing imported."),
                "/admin/roster",
                400,
            )
        source = filename or "roster.csv"
        try:
            rows = parse_roster(data, source)
        except RosterError as err:
            return page(
                req, "Roster", roster_body(req, err.problems, str(err)), "/admin/roster", 400
            )
        try:
            counts = store.replace_roster(
                site, rows, actor=app.actor(req), detail={"source": source[:100]}
            )
        except StoreError as err:  # e.g. the lockers could not take it: nothing imported
            return page(
                req,
                "Roster",
                roster_body(req, [(0, str(err))], "Nothing imported."),
                "/admin/roster",
                400,
            )
        app.flash(
            req,
            "ok",
            f"Roster imported from {source}: {counts['people']} people, "
            f"{counts['cards']} cards ({counts['added']} added, "
            f"{counts['updated']} updated, {counts['removed']} removed).",
        )
        return Response.redirect("/admin/roster")

    @app.route("GET", "/admin/roster.csv", ADMIN)
    def roster_csv(req):
        from ..roster import write_roster

        buf = io.StringIO()
        n = write_roster(store.roster(site), buf)
        store.record_action(site, app.actor(req), "roster_export", {"rows": n})
        return Response(
            200,
            buf.getvalue(),
            "text/csv; charset=utf-8",
            headers=[("Content-Disposition", f'attachment; filename="roster-{site}.csv"')],
        )

    # -- admin: timetable ------------------------------------------------------------------------

    def timetable_body(req: Request, text: str, message: str = "") -> str:
        lines = "<br>".join(e(line) for line in message.split("\n"))  # one per mistake
        err = f'<p class="error" role="alert">{lines}</p>' if message else ""
        return (
            f'{err}<form method="post" action="/admin/timetable" class="card wide">'
            f"{csrf_field(req.session)}"
            '<label for="toml">Timetable (TOML): timezone, home_time, y6_release_minutes, '
            "uncollected_after_minutes, contact, terms, closed</label>"
            f'<textarea id="toml" name="toml" rows="16" spellcheck="false" class="code">'
            f"{e(text)}</textarea>"
            '<button type="submit">Check and save</button></form>'
        )

    @app.route("GET", "/admin/timetable", ADMIN)
    def timetable_get(req):
        row = store.timetable(site)
        return page(
            req, "Timetable", timetable_body(req, row.source if row else ""), "/admin/timetable"
        )

    @app.route("POST", "/admin/timetable", ADMIN)
    def timetable_post(req):
        from ..timetable import TimetableError, compile_timetable, parse_timetable

        text = req.f("toml").replace("\r\n", "\n")
        try:
            parsed = parse_timetable(text, "timetable")
            compile_timetable(parsed, int(time.time()))
        except TimetableError as err:
            return page(
                req,
                "Timetable",
                timetable_body(req, text, err.format_message()),
                "/admin/timetable",
                400,
            )
        except (ValueError, KeyError) as err:
            return page(
                req,
                "Timetable",
                timetable_body(req, text, f"cannot compile: {err}"),
                "/admin/timetable",
                400,
            )
        try:
            version = store.set_timetable(
                site, text, parsed, parsed["timezone"], actor=app.actor(req)
            )
        except StoreError as err:  # e.g. the lockers could not take it: nothing saved
            return page(
                req, "Timetable", timetable_body(req, text, str(err)), "/admin/timetable", 400
            )
        app.flash(
            req,
            "ok",
            f"Timetable saved ({parsed['timezone']}); configuration version "
            f"{version} goes to the lockers.",
        )
        return Response.redirect("/admin/timetable")

    # -- admin: lockers --------------------------------------------------------------------------

    def lockers_admin_body(req: Request, values: dict, message: str = "") -> str:
        zone = tz()
        rows = []
        for r in store.lockers(site):
            online = {True: "online", False: "offline", None: "never seen"}[r.online]
            rows.append(
                [
                    e(r.id),
                    e(r.bays),
                    e(r.board),
                    e(r.control_port or ""),
                    e(online),
                    e(local_time(r.last_seen, zone) or "never"),
                    f'<a href="/admin/device.json?locker={e(urllib.parse.quote(r.id))}" '
                    f"download>device.json</a>",
                ]
            )
        err = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
        return (
            table(
                ["Locker", "Bays", "Board", "Control port", "Status", "Last seen", ""],
                rows,
                "Registered lockers",
                "lockers-admin",
            )
            + f'<h2>Add a locker</h2>{err}<form method="post" action="/admin/lockers" '
            f'class="card">{csrf_field(req.session)}'
            '<label for="lid">Locker id</label>'
            f'<input id="lid" name="id" required pattern="[A-Za-z0-9._-]{{1,28}}" '
            f'value="{e(values.get("id", ""))}">'
            '<label for="lbays">Bays</label>'
            f'<input id="lbays" name="bays" type="number" min="1" max="64" required '
            f'value="{e(values.get("bays", "8"))}">'
            '<label for="lboard">Board</label>'
            f'<select id="lboard" name="board">'
            f"{options([('sim', 'simulated'), ('esp32', 'ESP32')], values.get('board'))}"
            "</select>"
            '<button type="submit">Add</button></form>'
            f'<p class="hint">The device.json holds the locker\'s secret and broker password: '
            f"download it only to flash the board. Lockers connect to the broker at "
            f"{e(app.broker[0])}:{e(app.broker[1])}.</p>"
        )

    @app.route("GET", "/admin/lockers", ADMIN)
    def lockers_admin_get(req):
        return page(req, "Lockers setup", lockers_admin_body(req, {}), "/admin/lockers")

    @app.route("POST", "/admin/lockers", ADMIN)
    def lockers_admin_post(req):
        from ..store import LOCKER_ID_RE

        values = dict(req.form)
        locker_id = req.f("id").strip()
        try:
            if not LOCKER_ID_RE.match(locker_id):
                raise ValueError(f"locker id {locker_id!r}: use 1-28 of A-Z a-z 0-9 . _ -")
            try:
                bays = int(req.f("bays"))
            except ValueError:
                raise ValueError("bays must be a number 1-64") from None
            if not 1 <= bays <= 64:
                raise ValueError("bays must be a number 1-64")
            board = req.f("board") or "sim"
            if board not in ("sim", "esp32"):
                raise ValueError("board must be sim or esp32")
            secret = _new_secret()
            password = secrets.token_urlsafe(24)
            from ..sitesettings import default_data_dir, free_control_port

            taken = {r.control_port for r in store.lockers(site) if r.control_port}
            port = free_control_port(taken)  # as `locker add`: never a demo's or another's
            store.add_locker(
                site,
                locker_id,
                bays,
                secret,
                password,
                board=board,
                control_port=port,
                data_dir=default_data_dir(str(store.url), locker_id)
                if board == "sim"
                else f"var/{locker_id}",
                actor=app.actor(req),
            )
        except (ValueError, StoreError) as err:
            return page(
                req,
                "Lockers setup",
                lockers_admin_body(req, values, str(err)),
                "/admin/lockers",
                400,
            )
        app.flash(req, "ok", f"Locker {locker_id} added; download its device.json below.")
        return Response.redirect("/admin/lockers")

    @app.route("GET", "/admin/device.json", ADMIN)
    def device_json(req):
        from ..serve import locker_secret
        from ..sitesettings import device_broker

        # the address `broker config` recorded for the lockers (with its TLS), else serve's own
        b_host, b_port, b_tls = device_broker(store, site) or (*app.broker, False)
        row = store.locker(site, req.q("locker"))
        if row is None:
            raise HTTPError(404, f"no locker {req.q('locker')!r}")
        device = {
            "locker_id": row.id,
            "site": site,
            "board": row.board,
            "bays": row.bays,
            "broker": {
                "host": b_host,
                "port": b_port,
                "user": row.id,
                "password": row.broker_password,
                "tls": b_tls,
                **({"ca": "ca.crt"} if b_tls else {}),
            },
            "secret": locker_secret(row).hex(),
            "data_dir": row.data_dir or f"var/{row.id}",
            "sim": {"control_port": row.control_port or 7101},
        }
        store.record_action(site, app.actor(req), "device_json", {"locker": row.id})
        return Response(
            200,
            json.dumps(device, indent=2) + "\n",
            "application/json",
            headers=[("Content-Disposition", f'attachment; filename="device-{row.id}.json"')],
        )

    # -- admin: users ----------------------------------------------------------------------------

    def users_body(req: Request, values: dict, message: str = "") -> str:
        rows = []
        for u in app.accounts.users():
            remove = ""
            if u.username != req.user.username:
                remove = (
                    f'<form method="post" action="/admin/users/remove">'
                    f'{csrf_field(req.session)}<input type="hidden" name="username" '
                    f'value="{e(u.username)}"><button type="submit" aria-label="Remove '
                    f'{e(u.username)}">Remove</button></form>'
                )
            rows.append([e(u.username), e(u.role), e(u.person_id or ""), remove])
        err = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
        roles = [("office", "office"), ("slt", "SLT"), ("admin", "admin")]
        return (
            table(["Username", "Role", "Person", ""], rows, "Accounts", "users")
            + f'<h2>Add an account</h2>{err}<form method="post" action="/admin/users" '
            f'class="card">{csrf_field(req.session)}'
            '<label for="uname">Username</label>'
            f'<input id="uname" name="username" required autocomplete="off" '
            f'value="{e(values.get("username", ""))}">'
            '<label for="urole">Role</label>'
            f'<select id="urole" name="role">{options(roles, values.get("role"))}</select>'
            '<label for="uperson">Person id on the roster (for opens and grants)</label>'
            f'<input id="uperson" name="person" value="{e(values.get("person", ""))}">'
            '<label for="upw">Password (8 characters or more)</label>'
            '<input id="upw" name="new_password" type="password" autocomplete="new-password" '
            'required minlength="8">'
            '<button type="submit">Add account</button></form>'
        )

    @app.route("GET", "/admin/users", ADMIN)
    def users_get(req):
        return page(req, "Users", users_body(req, {}), "/admin/users")

    @app.route("POST", "/admin/users", ADMIN)
    def users_post(req):
        values = {k: v for k, v in req.form.items() if k != "new_password"}
        try:
            user = app.accounts.add_user(
                req.f("username").strip(),
                req.f("role"),
                req.f("new_password"),
                req.f("person").strip() or None,
                actor=app.actor(req),
            )
        except StoreError as err:
            return page(req, "Users", users_body(req, values, str(err)), "/admin/users", 400)
        app.flash(req, "ok", f"Account {user.username} ({user.role}) added.")
        return Response.redirect("/admin/users")

    @app.route("POST", "/admin/users/remove", ADMIN)
    def users_remove(req):
        name = req.f("username")
        if name == req.user.username:
            app.flash(req, "error", "You cannot remove your own account.")
        else:
            try:
                app.accounts.remove_user(name, actor=app.actor(req))
                app.flash(req, "ok", f"Account {name} removed.")
            except StoreError as err:
                app.flash(req, "error", str(err))
        return Response.redirect("/admin/users")


def _new_secret() -> bytes:
    try:
        from ..keys import new_secret
    except ImportError:
        return secrets.token_bytes(32)
    s = new_secret()
    return bytes.fromhex(s) if isinstance(s, str) else bytes(s)
