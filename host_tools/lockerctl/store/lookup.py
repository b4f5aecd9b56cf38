"""Look-ups across areas: where a person's phone is (for the named release), the host-side
actions as export rows, and the search of people by id or name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from .. import trail
from .tables import events, people, trail_entries

# -- where a person's phone is ---------------------------------------------------------------

# Events that put a phone in a bay or take it out (each carries the holder as `person`).
_BAY_EVENTS = ("deposit", "retrieve", "override", "emergency_open", "released", "cancelled")


def phone_bays(st, site: str, person_id: str) -> list[tuple[str, int]]:
    """[(locker, bay)] where the trail says the person's phone is now: their deposits not
    followed by a retrieval, override, open or release of that bay (a lapsed retrieval leaves
    the phone in; a lapsed deposit takes it out), per locker in the order stored."""
    e = events
    with st._read() as conn:
        rows = conn.execute(
            sa.select(e.c.locker_id, e.c.type, e.c.bay, e.c.reason)
            .where(e.c.site == site, e.c.person == person_id, e.c.type.in_(_BAY_EVENTS))
            .order_by(e.c.locker_id, e.c.id)
        ).all()
    held: dict[tuple[str, int], bool] = {}
    last_out: dict[tuple[str, int], bool] = {}
    for r in rows:
        if r.bay is None:
            continue
        key = (r.locker_id, int(r.bay))
        if r.type == "deposit":
            for k in [k for k in held if k[0] == r.locker_id]:
                held.pop(k)  # one phone per person per locker
            held[key] = True
        elif r.type == "cancelled":
            if r.reason == "deposit":
                held.pop(key, None)
            elif r.reason == "retrieve" and last_out.pop(key, False):
                held[key] = True
        else:
            if held.pop(key, None):
                last_out[key] = True
    return sorted(held)


# -- host-side actions as export rows -------------------------------------------------------


@dataclass
class ActionRow:
    """A host action shaped like an event row of `Store.events` (export.py writes both)."""

    ts: int
    received_at: int
    type: str
    person: str | None
    name: str | None
    role: str | None
    by: str
    reason: str
    locker_id: str = ""
    bay: int | None = None
    seq: int | None = None
    jid: str = ""
    unknown_type: bool = False
    time_source: str = "host"

    @property
    def sort_ts(self) -> int:
        return self.ts


def _summary(detail: dict) -> str:
    """An action's detail as `key=value; ...` (the person has a column of its own)."""
    parts = []
    for k, v in detail.items():
        if k == "person" or v is None:
            continue
        text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        parts.append(f"{k}={text}")
    return "; ".join(parts)


def action_rows(
    st, site: str, start: int | None, end: int | None, person: str | None
) -> Iterator[ActionRow]:
    """The site's host-side actions in time order (trail order), as export rows; a redacted
    action is shown as `redacted` with nothing else of it."""
    t, p = trail_entries, people
    q = sa.select(t.c.content, t.c.at, t.c.redacted).where(
        t.c.site == site, t.c.kind == trail.ACTION
    )
    if start is not None:
        q = q.where(t.c.at >= int(start))
    if end is not None:
        q = q.where(t.c.at < int(end))
    with st._read() as conn:
        rows = conn.execute(q.order_by(t.c.id)).all()
        names = {
            r.person_id: (r.name, r.role)
            for r in conn.execute(
                sa.select(p.c.person_id, p.c.name, p.c.role).where(p.c.site == site)
            )
        }
    for r in rows:
        try:
            content = json.loads(r.content) if r.content else {}
        except ValueError:
            content = {}
        detail = content.get("detail") if isinstance(content, dict) else None
        if not isinstance(detail, dict):
            detail = {}
        who = detail.get("person") if isinstance(detail.get("person"), str) else None
        if person is not None and who != person and detail.get("by") != person:
            continue
        name, role = names.get(who, (None, None)) if who else (None, None)
        yield ActionRow(
            ts=int(r.at),
            received_at=int(r.at),
            type=str(content.get("action") or "redacted"),
            person=who,
            name=name,
            role=role,
            by=str(content.get("actor") or ""),
            reason=_summary(detail),
        )


def search_people(st, site: str, text: str, limit: int = 20) -> list[tuple[str, str, str]]:
    """(person_id, name, role) of the people on the roster (and visitors) whose name or id
    contains `text` (any case), by name; for the office's named release: names appear only in
    these results."""
    text = " ".join(text.split())
    if not text:
        return []
    p = people
    like = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with st._read() as conn:
        rows = conn.execute(
            sa.select(p.c.person_id, p.c.name, p.c.role)
            .where(
                p.c.site == site,
                p.c.active.is_(True),
                sa.or_(
                    sa.func.lower(p.c.name).like(like, escape="\\"),
                    sa.func.lower(p.c.person_id).like(like, escape="\\"),
                ),
            )
            .order_by(p.c.name, p.c.person_id)
            .limit(limit)
        ).all()
    return [(r.person_id, r.name, r.role) for r in rows]
