"""The lockers page (`/lockers`): every bank, its bays as a grid and the latest events, pushed
to the open page when they change (`live.py`); `/api/state`, the same as JSON; `/api/lockers`
and `/api/events`, the page's two fragments as JSON (`{"html": ...}`)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from ... import words
from ...bounds import MAX_BAYS
from ...display import read_state, received_time, valid_ts
from ...store import live as store_live
from ..deps import ANY_ROLE, Viewer, ctx, open_alert_count
from ..templating import local_time, render, render_to_string

router = APIRouter(include_in_schema=False)
CLOCK_MAX_OFF_S = 5  # a locker whose clock is further than this from the host's is marked
CLOCK_FRESH_S = 300  # an offset measured longer ago than this is not shown
RECENT = 15


def bay_status(bay: dict) -> tuple[str, str]:
    if bay.get("door") == "open":
        return "door-open", "door open"
    if not bay.get("locked", True):
        return "unlocked", "unlocked"
    if bay.get("holder"):
        return "occupied", "occupied"
    return "free", "free"


def clock_offset(locker_id: str, offsets: dict) -> float | None:
    """How far the locker's clock is from the host's (seconds, + ahead), when measured in the
    last CLOCK_FRESH_S seconds (hostclock.HostClock records it from live states)."""
    got = offsets.get(locker_id)
    if got is None or time.time() - got[1] > CLOCK_FRESH_S:
        return None
    return got[0]


def _notes(state) -> list[str]:
    notes = []
    if state.unreadable:
        notes.append("unreadable state")
    elif state.skipped:
        notes.append(f"{state.skipped} unreadable bay report(s)")
    if state.clock_ok is False:
        notes.append("clock not trusted")
    if state.pending:
        notes.append(f"{state.pending} event(s) waiting to upload")
    return notes


def _bays(row, state, names: dict, show_names: bool) -> list[dict]:
    bays = state.bays
    if not bays:
        count = row.bays if isinstance(row.bays, int) and 0 < row.bays <= MAX_BAYS else 0
        bays = [{"bay": n, "unknown": True} for n in range(1, count + 1)]
    out = []
    for b in bays:
        cls, word = ("unknown", "no report") if b.get("unknown") else bay_status(b)
        holder = b.get("holder") if show_names else None
        out.append(
            {
                "bay": b.get("bay"),
                "cls": cls,
                "word": word,
                "holder": holder,
                "name": names.get(holder, holder) if holder else None,
            }
        )
    return out


def lockers_view(c, show_names: bool) -> list[dict]:
    """What the lockers grid shows, one dict per locker."""
    import time

    from ... import fleet
    from ...store import fleet as store_fleet
    from ...store import live as store_live

    zone = c.timezone()
    rows = c.store.lockers(c.site)
    offsets = c.store.clock_offsets(c.site)
    boots = store_fleet.recent_boots(c.store, c.site, int(time.time()) - fleet.RESET_LOOP_WINDOW_S)
    states = {r.id: read_state(r.state) for r in rows}
    holders = [b["holder"] for s in states.values() for b in s.bays]
    names = store_live.names_of(c.store, c.site, holders) if show_names else {}
    out = []
    for r in rows:
        state = states[r.id]
        online = {True: "online", False: "offline"}.get(r.online, "never seen")
        offset = clock_offset(r.id, offsets) if r.online else None
        out.append(
            {
                "id": r.id,
                "online": online,
                "seen": local_time(r.last_seen, zone, seconds=True) or "never",
                "notes": _notes(state),
                "offset": offset if offset is not None and abs(offset) > CLOCK_MAX_OFF_S else None,
                "bays": _bays(r, state, names, show_names),
                "health": fleet.health(
                    r.state, (offsets.get(r.id) or (None,))[0], boots.get(r.id, 0)
                ),
            }
        )
    return out


def lockers_fragment(c, v: Viewer) -> str:
    return render_to_string("_lockers.html", lockers=lockers_view(c, v.sees_names))


def recent_fragment(c, v: Viewer, limit: int = RECENT) -> str:
    zone = c.timezone()
    items = [
        {
            "type": r.type,
            "words": words.event_words(r.type),
            "unknown_type": r.unknown_type,
            "locker": r.locker_id,
            "bay": r.bay,
            "who": (r.name or r.person) if v.sees_names else words.someone(r.role),
            "person": r.person,
            "reason": words.reason_words(r.reason),
            "when": received_time(r.received_at, r.ts, zone),
        }
        for r in store_live.recent_events(c.store, c.site, limit)
    ]
    return render_to_string("_events.html", events=items)


@router.get("/lockers")
def lockers_page(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    return render(
        request,
        "lockers.html",
        "Lockers",
        "/lockers",
        lockers_html=lockers_fragment(c, v),
        events_html=recent_fragment(c, v),
    )


@router.get("/api/lockers")
def api_lockers(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    return JSONResponse({"html": lockers_fragment(c, v), "alerts": open_alert_count(c)})


@router.get("/api/events")
def api_events(request: Request, v: Viewer = ANY_ROLE):
    return JSONResponse({"html": recent_fragment(ctx(request), v)})


def state_view(c, show_names: bool) -> list[dict]:
    """The lockers as JSON: ids, online, last_seen, clock, bays (holders masked for office)."""
    out = []
    offsets = c.store.clock_offsets(c.site)
    for r in c.store.lockers(c.site):
        state = read_state(r.state)
        bays = []
        for b in state.bays:
            b = dict(b)
            if not show_names:
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
    return out


@router.get("/api/state")
def api_state(request: Request, v: Viewer = ANY_ROLE):
    """The lockers as JSON (for scripts and tests): ids, online, last_seen, bays."""
    return JSONResponse({"lockers": state_view(ctx(request), v.sees_names)})
