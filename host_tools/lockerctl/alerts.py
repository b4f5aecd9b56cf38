"""What needs the office's attention: alerts from the lockers' events and from their state, each
urgent or routine.

Urgent (`URGENT`, e-mailed by `lockerctl serve --smtp`, shown first): a door forced or left open,
an emergency open, a command the locker refused (`cmd_rejected`), an event ingest refused as
forged or impossible (`refused_*`), a locker's memory nearly full (`journal_near_full`), a
locker whose clock is not set (`clock`), a locker offline for more than `OFFLINE_AFTER` seconds
in school hours (`offline`). Routine: a phone not collected, and the configuration kinds (new
settings refused by a locker, or not applied two minutes after they were set): they need an
admin, not someone at the locker now. Policy flags are not alerts: they are on SLT's daily
review (`review.py`).

Event alerts (one per event, key `event:<id>`, the last 7 days): `EVENT_ALERTS`.
Refusal alerts (one per locker and kind every 10 minutes, key `refused:<id>`, with a count):
events ingest refused (bad or missing MAC, impossible, seq beyond the journal) or kept aside as
conflicts, and checkpoints not signed because the trail fell behind one a locker holds.
Condition alerts (one per locker while the condition lasts): `clock:<locker>` when the locker
reports an untrusted clock, `offline:<locker>` when it has been offline (or never seen) for more
than five minutes during school hours, `config:<locker>` when it is online but still runs an
older configuration than the site's current one more than CONFIG_GRACE seconds after that was
set (with the reason of its last `config_rejected` event). A condition's acknowledgement is
forgotten once the condition clears, so a recurrence shows again.

School hours come from the site's timetable, read by the firmware's own calendar
(`fwcalendar.Timetable`, the locker's `locker/timetable.py` run on CPython): a school day of a
term, not a closed day, from the start of the first contact period to home time. A site without
a timetable has no school hours (the lockers enforce nothing either): no offline alert.
Titles and details are plain English (`words.py`).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from . import words
from .fwcalendar import Timetable
from .store import alerts as store_alerts

EVENT_ALERTS = {
    k: words.ALERTS[k]
    for k in (
        "uncollected",
        "door_forced",
        "door_left_open",
        "emergency_open",
        "cmd_rejected",
        "journal_near_full",
        "config_rejected",
    )
}
URGENT_EVENTS = (
    "door_forced",
    "door_left_open",
    "emergency_open",
    "cmd_rejected",
    "journal_near_full",
)
URGENT_CONDITIONS = ("clock", "offline")
ROUTINE = ("uncollected", "config_rejected", "config_behind")
URGENT = "urgent"
ROUTINE_SEVERITY = "routine"
# Every kind of alert there is, urgent ones first (filters and metrics list these).
KINDS = (
    *URGENT_EVENTS,
    "refused_bad_mac",
    "refused_conflict",
    "refused_seq_ahead",
    "refused_impossible",
    "refused_checkpoint",
    *URGENT_CONDITIONS,
    *ROUTINE,
)
WINDOW = 7 * 86400
CONFIG_GRACE = 120  # seconds a locker may take to apply a new configuration
OFFLINE_AFTER = 300  # seconds offline in school hours before it is an alert
MAX_EVENT_ALERTS = 300


def severity(kind: str) -> str:
    """`urgent` or `routine` for an alert kind."""
    if kind in URGENT_EVENTS or kind in URGENT_CONDITIONS or kind.startswith("refused_"):
        return URGENT
    return ROUTINE_SEVERITY


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
    received_at: int | None = None  # when the host received that event (what lists order by)
    role: str | None = None  # the person's role on the roster
    note: str | None = None  # the acknowledgement's note
    count: int = 1

    @property
    def severity(self) -> str:
        return severity(self.kind)

    @property
    def urgent(self) -> bool:
        return self.severity == URGENT

    @property
    def order_time(self) -> float:
        """When the host learnt of it: receipt time of an event, else `when`."""
        t = self.received_at if self.received_at is not None else self.when
        return float(t) if isinstance(t, int | float) else 0.0

    def who(self, show_names: bool) -> str:
        """The person, for a reader who may (`show_names`) or may not see names: the name, or
        "a pupil" / "a staff member"; "" when the alert concerns nobody."""
        if not self.person:
            return ""
        if show_names:
            return self.name or self.person
        return words.someone(self.role)


# -- school hours ----------------------------------------------------------------------------

_CALENDARS: dict[str, Timetable] = {}
_CALENDARS_LOCK = threading.Lock()


def calendar(timetable_row, now: float | None = None) -> Timetable:
    """The firmware's `Timetable` for a store timetable row (compiled as the lockers get it:
    `timetable.compile_timetable`), cached by the timetable's content; `Timetable(None)` (no
    school day at all) without a timetable."""
    if timetable_row is None or not timetable_row.parsed:
        return Timetable(None)
    from .timetable import compile_timetable

    key = json.dumps(timetable_row.parsed, sort_keys=True, default=str)
    with _CALENDARS_LOCK:
        found = _CALENDARS.get(key)
        if found is None:
            start = int(time.time() if now is None else now)
            found = Timetable(compile_timetable(timetable_row.parsed, start))
            if len(_CALENDARS) > 8:
                _CALENDARS.clear()
            _CALENDARS[key] = found
        return found


def school_hours(timetable_row, now: float) -> bool:
    """True on a school day of the timetable between the start of the first contact period and
    home time (never without a timetable)."""
    tt = calendar(timetable_row, now)
    ts = int(now)
    if not tt.is_school_day(ts):
        return False
    _, _, seconds, _ = tt.local(ts)
    start = tt.contact[0][0] if tt.contact else tt.home_time
    return start * 60 <= seconds < tt.home_time * 60


def event_alerts(store, site: str, now: float, kinds=None) -> list[Alert]:
    """One alert per alerting event of the last `WINDOW` seconds (by receipt), newest first."""
    kinds = [k for k in (kinds or EVENT_ALERTS) if k in EVENT_ALERTS]
    rows = store_alerts.alerting_events(store, site, kinds, int(now - WINDOW), MAX_EVENT_ALERTS)
    return [
        Alert(
            f"event:{r.id}",
            r.ts if r.ts is not None else r.sort_ts,
            r.locker_id,
            r.type,
            EVENT_ALERTS[r.type],
            r.bay,
            r.person,
            r.name,
            words.reason_words(r.reason) if r.type != "config_rejected" else _config_why(r),
            ts=r.ts,
            received_at=r.received_at,
            role=r.role,
        )
        for r in rows
    ]


def _config_why(r) -> str:
    why = words.reason_words(r.reason)
    return f"the locker said: {why}" if why else ""


def refusal_alerts(store, site: str, now: float) -> list[Alert]:
    """What ingest refused or kept aside (forged events, conflicts, impossible ones), one alert
    per locker and kind every 10 minutes, with a count."""
    out = []
    for r in store.refusals(site, since=int(now - WINDOW)):
        times = f"{r.count} times" if r.count != 1 else "once"
        kind = f"refused_{r.kind}"
        out.append(
            Alert(
                f"refused:{r.id}",
                r.last_at,
                r.locker_id,
                kind,
                words.alert_words(kind),
                detail=f"{times} since this alert began; last: {r.detail}",
                received_at=r.last_at,
                count=int(r.count),
            )
        )
    return out


def condition_alerts(store, site: str, now: float) -> list[Alert]:
    """The conditions that hold now: configuration behind, clock not set, offline in school
    hours (for more than `OFFLINE_AFTER` seconds)."""
    out: list[Alert] = []
    in_hours = school_hours(store.timetable(site), now)
    current = store.config_version(site)
    changed = store.config_changed_at(site)
    settled = changed is None or changed[0] != current or now - changed[1] > CONFIG_GRACE
    for locker in store.lockers(site):
        state = locker.state if isinstance(locker.state, dict) else {}
        runs = state.get("config") if state else None
        runs = runs if isinstance(runs, int) and not isinstance(runs, bool) else None
        if locker.online and state and current > 0 and settled and (runs or 0) < current:
            reason = _last_rejection(store, site, locker.id)
            out.append(
                Alert(
                    f"config:{locker.id}",
                    locker.last_seen,
                    locker.id,
                    "config_behind",
                    words.alert_words("config_behind"),
                    detail=(
                        f"runs configuration {runs if runs is not None else 'none'}, "
                        f"current is {current}; "
                        + (
                            f"the locker refused it: {words.reason_words(reason)}"
                            if reason
                            else "the locker gave no reason"
                        )
                    ),
                )
            )
        if state and state.get("clock_ok") is False:
            out.append(
                Alert(
                    f"clock:{locker.id}",
                    locker.last_seen,
                    locker.id,
                    "clock",
                    words.alert_words("clock"),
                    detail="deposits work; collections need an SLT fob until the clock is set",
                )
            )
        seen = locker.last_seen if isinstance(locker.last_seen, int | float) else None
        if in_hours and not locker.online and (seen is None or now - seen > OFFLINE_AFTER):
            out.append(
                Alert(
                    f"offline:{locker.id}",
                    seen,
                    locker.id,
                    "offline",
                    words.alert_words("offline"),
                    detail="never seen" if seen is None else "offline",
                )
            )
    return out


def ordered(alerts: list[Alert]) -> list[Alert]:
    """Urgent first, then newest first by the time the host learnt of each."""
    return sorted(alerts, key=lambda a: (not a.urgent, -a.order_time, a.key))


def compute(
    store, site: str, acks: dict, now: float | None = None, notes: dict | None = None
) -> tuple[list, list]:
    """(alerts, urgent first then newest first; stale condition keys whose acknowledgement
    should be forgotten). `acks` {key: (by, at)}; `notes` {key: note} (store_alerts.notes)."""
    now = time.time() if now is None else now
    out = event_alerts(store, site, now) + refusal_alerts(store, site, now)
    conditions = condition_alerts(store, site, now)
    out += conditions
    active = {a.key for a in conditions}
    notes = notes or {}
    for a in out:
        if a.key in acks:
            a.acked_by, a.acked_at = acks[a.key]
            a.note = notes.get(a.key)
    stale = [
        k for k in acks if k.split(":", 1)[0] in ("clock", "offline", "config") and k not in active
    ]
    return ordered(out), stale


def select(
    alerts: list[Alert],
    kind: str | None = None,
    locker: str | None = None,
    day: dt.date | None = None,
    timezone: str = "Europe/London",
    severity_: str | None = None,
) -> list[Alert]:
    """The alerts of one kind, locker, local day (of `order_time`) and severity (each filter
    optional), in the order given."""
    zone = ZoneInfo(timezone)
    out = []
    for a in alerts:
        if kind and a.kind != kind:
            continue
        if locker and a.locker != locker:
            continue
        if severity_ and a.severity != severity_:
            continue
        if day is not None:
            try:
                local = dt.datetime.fromtimestamp(a.order_time, zone).date()
            except (OverflowError, OSError, ValueError):
                continue
            if local != day:
                continue
        out.append(a)
    return out


def _last_rejection(store, site: str, locker_id: str) -> str | None:
    """The reason of the locker's latest `config_rejected` event, if any."""
    return store_alerts.last_rejection(store, site, locker_id)


def acknowledge(
    store,
    site: str,
    username: str,
    key: str | None = None,
    kind: str | None = None,
    note: str = "",
    now: float | None = None,
) -> int:
    """Acknowledges one open alert (`key`) or every open alert of a `kind`, with an optional
    note; returns how many were acknowledged (0: none open). ValueError for a bad note."""
    found, _ = compute(store, site, {}, now=now)
    if key is not None:
        found = [a for a in found if a.key == key]
    if kind is not None:
        found = [a for a in found if a.kind == kind]
    return store_alerts.acknowledge(store, site, found, username, note)
