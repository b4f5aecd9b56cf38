"""SLT's daily review: how the phone policy was applied on one day (a page, and an e-mail at
`serve --review-at HH:MM`).

`daily_review(store, site, day)` gives the page's data:
- `flags`: the day's policy flags (a pupil who may not bring a phone deposited one) by pupil:
  name, year, how many today, and on how many days this term (the timetable's term holding the
  day; the last 90 days without one);
- `overrides`: bays opened with an SLT fob; `grants`: phones released under an exception
  grant; `exemptions`: phones collected under an exemption; `emergency`: emergency opens;
  each with the time, locker, bay, the holder and who approved it, by the time the host
  received it (the locker's own time beside it when they differ by more than a minute);
- `visitors`: the visitors' cards used that day (deposits and collections).
An event belongs to the day on which it happened (the locker's clock; its receipt time when
the clock was not set). Names are shown: the review is for SLT (and admins).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from . import words
from .display import format_ts
from .export import local_day_start
from .store import alerts as store_alerts

TERM_FALLBACK_DAYS = 90
SKEW = 60  # seconds: the locker's time is shown beside the receipt time past this


@dataclass
class Entry:
    received_at: int
    ts: int | None
    locker: str
    bay: int | None
    person: str | None
    name: str | None
    by: str | None
    by_name: str | None
    kind: str
    reason: str

    def when(self, timezone: str) -> str:
        return when_text(self.received_at, self.ts, timezone)


@dataclass
class Flagged:
    person: str
    name: str
    year: int
    today: int
    days_this_term: int


@dataclass
class Review:
    day: dt.date
    timezone: str
    term_start: dt.date
    flags: list[Flagged] = field(default_factory=list)
    overrides: list[Entry] = field(default_factory=list)
    grants: list[Entry] = field(default_factory=list)
    exemptions: list[Entry] = field(default_factory=list)
    emergency: list[Entry] = field(default_factory=list)
    visitors: list[dict] = field(default_factory=list)


def when_text(received_at, ts, timezone: str) -> str:
    """The time the host received it, and the locker's own time beside it when they differ by
    more than a minute: "2026-11-05 10:02 (locker's clock: 2026-11-05 09:40)"."""
    shown = format_ts(received_at, timezone, "minutes")
    if ts is not None and received_at is not None and abs(ts - received_at) > SKEW:
        shown += f" (locker's clock: {format_ts(ts, timezone, 'minutes')})"
    return shown


def term_start(store, site: str, day: dt.date) -> dt.date:
    row = store.timetable(site)
    terms = (row.parsed or {}).get("terms", []) if row is not None else []
    starts = [dt.date.fromisoformat(a) for a, _ in terms if dt.date.fromisoformat(a) <= day]
    return max(starts) if starts else day - dt.timedelta(days=TERM_FALLBACK_DAYS)


def _entry(r) -> Entry:
    return Entry(
        r.received_at,
        r.ts,
        r.locker_id,
        r.bay,
        r.person,
        r.name,
        r.by,
        r.by_name,
        r.type,
        words.reason_words(r.reason),
    )


def daily_review(store, site: str, day: dt.date) -> Review:
    timezone = store.timezone(site)
    zone = ZoneInfo(timezone)
    start = local_day_start(day, timezone)
    end = local_day_start(day + dt.timedelta(days=1), timezone)
    first = term_start(store, site, day)
    out = Review(day, timezone, first)
    types = ("policy_flag", "override", "retrieve", "emergency_open", "deposit")
    rows = store_alerts.day_events(store, site, start, end, types)
    year_of = store_alerts.years(store, site)
    today: dict[str, int] = {}
    names: dict[str, str] = {}
    for r in rows:
        if r.type == "policy_flag" and r.person:
            today[r.person] = today.get(r.person, 0) + 1
            names[r.person] = r.name or r.person
        elif r.type == "override":
            out.overrides.append(_entry(r))
        elif r.type == "retrieve" and r.reason == "grant":
            out.grants.append(_entry(r))
        elif r.type == "retrieve" and r.reason == "exemption":
            out.exemptions.append(_entry(r))
        elif r.type == "emergency_open":
            out.emergency.append(_entry(r))
    visitors: dict[str, dict] = {}
    for r in rows:
        if r.role == "visitor" and r.type in ("deposit", "retrieve") and r.person:
            v = visitors.setdefault(
                r.person,
                {"person": r.person, "name": r.name or r.person, "deposits": 0, "collections": 0},
            )
            v["deposits" if r.type == "deposit" else "collections"] += 1
    out.visitors = sorted(visitors.values(), key=lambda v: v["name"])
    if today:
        term_rows = store_alerts.day_events(
            store, site, local_day_start(first, timezone), end, ("policy_flag",)
        )
        days: dict[str, set] = {}
        for r in term_rows:
            if r.person in today:
                local = dt.datetime.fromtimestamp(r.sort_ts, zone).date()
                days.setdefault(r.person, set()).add(local)
        out.flags = sorted(
            (
                Flagged(p, names[p], year_of.get(p, 0), n, len(days.get(p, ())))
                for p, n in today.items()
            ),
            key=lambda f: (-f.days_this_term, f.name),
        )
    return out


def as_text(review: Review, site: str, base: str | None = None) -> tuple[str, str]:
    """(subject, body) of the review's e-mail."""
    tz = review.timezone
    d = review.day.isoformat()
    subject = f"[classlocker {site}] Daily review {d}: {len(review.flags)} pupils flagged"
    lines = [f"Phone policy: daily review for {d}", ""]
    lines.append(
        f"Policy flags (a pupil who may not bring a phone deposited one): {len(review.flags)}"
    )
    for f in review.flags:
        year = f"Year {f.year}" if f.year else "no year"
        lines.append(
            f"  {f.name} ({year}): {f.today} today, on {f.days_this_term} "
            f"day{'s' if f.days_this_term != 1 else ''} this term (since {review.term_start})"
        )
    for title, entries in (
        ("Opened with an SLT fob", review.overrides),
        ("Released under an exception grant", review.grants),
        ("Collected under an exemption", review.exemptions),
        ("Emergency opens", review.emergency),
    ):
        lines += ["", f"{title}: {len(entries)}"]
        for e in entries:
            who = e.name or e.person or "no phone in the bay"
            by = f", approved by {e.by_name or e.by}" if e.by else ""
            why = f" ({e.reason})" if e.reason and e.kind == "emergency_open" else ""
            lines.append(f"  {e.when(tz)} {e.locker} bay {e.bay}: {who}{by}{why}")
    lines += ["", f"Visitors: {len(review.visitors)}"]
    for v in review.visitors:
        lines.append(f"  {v['name']}: {v['deposits']} deposits, {v['collections']} collections")
    if base:
        lines += ["", f"On the dashboard: {base.rstrip('/')}/review?day={d}"]
    return subject, "\n".join(lines)
