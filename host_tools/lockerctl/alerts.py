"""What needs the office's attention: alerts from the lockers' events and from their state.

Event alerts (one per event, key `event:<id>`, the last 7 days): uncollected, door_forced,
door_left_open, policy_flag, cmd_rejected, journal_near_full, config_rejected.
Refusal alerts (one per locker and kind every 10 minutes, key `refused:<id>`, with a count):
events ingest refused (bad or missing MAC, impossible, seq beyond the journal) or kept aside as
conflicts, and checkpoints not signed because the trail fell behind one a locker holds.
Condition alerts (one per locker while the condition lasts): `clock:<locker>` when the locker
reports an untrusted clock, `offline:<locker>` when it is offline (or never seen) during school
hours, `config:<locker>` when it is online but still runs an older configuration than the
site's current one more than CONFIG_GRACE seconds after that was set (with the reason of its
last `config_rejected` event). A condition's acknowledgement is forgotten once the condition
clears, so a recurrence shows again.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .store import REFUSALS, events, people

EVENT_ALERTS = {
    "uncollected": "Phone not collected",
    "door_forced": "Door forced open",
    "door_left_open": "Door left open",
    "policy_flag": "Policy flag (phone not allowed)",
    "cmd_rejected": "Remote command rejected",
    "journal_near_full": "Journal near full",
    "config_rejected": "Configuration rejected",
}
WINDOW = 7 * 86400
CONFIG_GRACE = 120  # seconds a locker may take to apply a new configuration
MAX_EVENT_ALERTS = 300


@dataclass
class Alert:
    key: str
    when: float | None
    locker: str
    kind: str
    title: str
    bay: int | None = None
    person: str | None = None
    name: str | None = None
    detail: str = ""
    acked_by: str | None = None
    acked_at: int | None = None
    ts: int | None = None  # an event alert's own time (None: the locker's clock was unknown)
    received_at: int | None = None  # when the host received that event


def school_hours(timetable_row, now: float) -> bool:
    """True during a school day between the first contact period and home time (weekdays
    08:00-16:00 Europe/London when no timetable is set)."""
    if timetable_row is None:
        local = dt.datetime.fromtimestamp(now, ZoneInfo("Europe/London"))
        return local.weekday() < 5 and 8 * 60 <= local.hour * 60 + local.minute < 16 * 60
    tt = timetable_row.parsed or {}
    local = dt.datetime.fromtimestamp(now, ZoneInfo(timetable_row.timezone))
    day = local.date().isoformat()
    if local.weekday() >= 5 or day in tt.get("closed", []):
        return False
    if not any(a <= day <= b for a, b in tt.get("terms", [])):
        return False
    contact = tt.get("contact") or [["08:45", "15:15"]]
    start = contact[0][0]
    end = tt.get("home_time", contact[-1][1])
    hhmm = local.strftime("%H:%M")
    return start <= hhmm < end


def compute(store, site: str, acks: dict, now: float | None = None) -> tuple[list, list]:
    """(open alerts, stale condition keys whose acknowledgement should be forgotten)."""
    now = time.time() if now is None else now
    out: list[Alert] = []
    e, p = events, people
    with store._read() as conn:
        rows = conn.execute(
            sa.select(
                e.c.id,
                e.c.locker_id,
                e.c.ts,
                e.c.sort_ts,
                e.c.type,
                e.c.bay,
                e.c.person,
                e.c.reason,
                e.c.received_at,
                p.c.name,
            )
            .select_from(
                e.outerjoin(p, sa.and_(p.c.site == e.c.site, p.c.person_id == e.c.person))
            )
            .where(
                e.c.site == site,
                e.c.type.in_(list(EVENT_ALERTS)),
                e.c.sort_ts >= int(now - WINDOW),
            )
            .order_by(e.c.sort_ts.desc(), e.c.id.desc())
            .limit(MAX_EVENT_ALERTS)
        ).all()
    for r in rows:
        out.append(
            Alert(
                f"event:{r.id}",
                r.ts if r.ts is not None else r.sort_ts,
                r.locker_id,
                r.type,
                EVENT_ALERTS[r.type],
                r.bay,
                r.person,
                r.name,
                r.reason or "",
                ts=r.ts,
                received_at=r.received_at,
            )
        )
    # What ingest refused or kept aside (issue 13): forged events, conflicts, impossible ones.
    # Rate-limited where recorded: one row per locker and kind per 10 minutes, with a count.
    refusals = getattr(store, "refusals", None)
    for r in refusals(site, since=int(now - WINDOW)) if refusals else ():
        times = f"{r.count} times" if r.count != 1 else "once"
        out.append(
            Alert(
                f"refused:{r.id}",
                r.last_at,
                r.locker_id,
                f"refused_{r.kind}",
                REFUSALS.get(r.kind, r.kind),
                detail=f"{times} since this alert began; last: {r.detail}",
            )
        )
    active = set()
    in_hours = school_hours(store.timetable(site), now)
    current = store.config_version(site)
    changed = store.config_changed_at(site)
    settled = changed is None or changed[0] != current or now - changed[1] > CONFIG_GRACE
    for locker in store.lockers(site):
        state = locker.state if isinstance(locker.state, dict) else {}
        runs = state.get("config") if state else None
        runs = runs if isinstance(runs, int) and not isinstance(runs, bool) else None
        if locker.online and state and current > 0 and settled and (runs or 0) < current:
            key = f"config:{locker.id}"
            active.add(key)
            reason = _last_rejection(store, site, locker.id)
            out.append(
                Alert(
                    key,
                    locker.last_seen,
                    locker.id,
                    "config_behind",
                    "Configuration not applied",
                    detail=(
                        f"runs configuration {runs if runs is not None else 'none'}, "
                        f"current is {current}; "
                        + (
                            f"the locker rejected it: {reason}"
                            if reason
                            else "the locker gave no reason"
                        )
                    ),
                )
            )
        if state and state.get("clock_ok") is False:
            key = f"clock:{locker.id}"
            active.add(key)
            out.append(
                Alert(
                    key,
                    locker.last_seen,
                    locker.id,
                    "clock",
                    "Clock not trusted",
                    detail="deposits work; retrievals need an override until the clock is set",
                )
            )
        if in_hours and not locker.online:
            key = f"offline:{locker.id}"
            active.add(key)
            seen = "never seen" if locker.last_seen is None else "offline"
            out.append(
                Alert(
                    key,
                    locker.last_seen,
                    locker.id,
                    "offline",
                    "Locker offline in school hours",
                    detail=seen,
                )
            )
    for a in out:
        if a.key in acks:
            a.acked_by, a.acked_at = acks[a.key]
    stale = [
        k for k in acks if k.split(":", 1)[0] in ("clock", "offline", "config") and k not in active
    ]
    return out, stale


def _last_rejection(store, site: str, locker_id: str) -> str | None:
    """The reason of the locker's latest `config_rejected` event, if any."""
    with store._read() as conn:
        return conn.execute(
            sa.select(events.c.reason)
            .where(
                events.c.site == site,
                events.c.locker_id == locker_id,
                events.c.type == "config_rejected",
            )
            .order_by(events.c.id.desc())
            .limit(1)
        ).scalar()
