"""Data protection duties: retention (personal fields removed after N days) and subject access
(everything held about one person). docs/privacy.md says what is held, where and for how long.

Retention works through the store's redaction hook (`Store.redact_before`): the trail chains over
content *hashes*, so blanking the person, `by` and reason of an old entry and marking it redacted
leaves `audit verify` passing. On top of that this module deletes what the trail does not cover:
grants that ended before the cut-off, and people who have left the roster (inactive, no card)
once nothing kept refers to them any more.
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from . import store as st_mod
from . import trail
from .display import event_time, read_state

DAY = 86400


class PrivacyError(ValueError):
    """A request that cannot be carried out (the message is for the user)."""


def cutoff(keep_days: int, now: int | None = None) -> int:
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 0:
        raise PrivacyError(f"--keep-days must be a whole number of days >= 0, not {keep_days!r}")
    now = int(time.time()) if now is None else int(now)
    return now - keep_days * DAY


# --- retention -----------------------------------------------------------------------------


def _old_entries(site: str, before: int):
    t = st_mod.trail_entries
    redact_action = sa.and_(t.c.kind == "action", t.c.content.like(f"%{st_mod._REDACT_WORD}%"))
    return sa.select(sa.func.count()).where(
        t.c.site == site,
        t.c.at < before,
        t.c.redacted.is_(False),
        sa.not_(redact_action),  # never redacted: nothing personal in them
    )


def _ended_grants(site: str, before: int):
    g = st_mod.grants
    return sa.and_(
        g.c.site == site,
        sa.or_(
            g.c.until_ts < before, sa.and_(g.c.revoked_at.is_not(None), g.c.revoked_at < before)
        ),
    )


def _departed_people(conn, site: str, before: int) -> list[str]:
    """People no longer on the roster (inactive, no card left) whom nothing kept refers to: no
    event that keeps its personal fields, no grant, no dashboard account."""
    p, c, e, g, u = (st_mod.people, st_mod.cards, st_mod.events, st_mod.grants, st_mod.users)
    candidates = conn.execute(
        sa.select(p.c.person_id).where(
            p.c.site == site,
            p.c.active.is_(False),
            ~sa.exists().where(c.c.site == site, c.c.person_id == p.c.person_id),
        )
    ).scalars()
    out = []
    for pid in candidates:
        live_event = conn.execute(
            sa.select(e.c.id)
            .where(e.c.site == site, sa.or_(e.c.person == pid, e.c.by == pid))
            .limit(1)
        ).first()
        if live_event is not None:
            continue
        grant = conn.execute(
            sa.select(g.c.id)
            .where(g.c.site == site, sa.or_(g.c.person_id == pid, g.c.by == pid))
            .where(~_ended_grants(site, before))
            .limit(1)
        ).first()
        if grant is not None:
            continue
        account = conn.execute(
            sa.select(u.c.id).where(u.c.site == site, u.c.person_id == pid).limit(1)
        ).first()
        if account is None:
            out.append(pid)
    return out


def retention_preview(store, site: str, keep_days: int, now: int | None = None) -> dict:
    """What `apply_retention` would do, changing nothing."""
    before = cutoff(keep_days, now)
    with store.engine.connect() as conn:
        entries = conn.execute(_old_entries(site, before)).scalar()
        grants = conn.execute(
            sa.select(sa.func.count()).where(_ended_grants(site, before))
        ).scalar()
    return {"cutoff": before, "entries": entries, "grants": grants, "people": None}


def apply_retention(
    store, site: str, keep_days: int, now: int | None = None, actor: str = "retention"
) -> dict:
    """Removes personal data older than `keep_days` days; returns what was done.

    Trail entries (events and host actions) written before the cut-off lose their personal fields
    (the store's `redact_before`); grants that ended before it are deleted; people who left the
    roster and are no longer referred to are deleted, and so are conflicting events kept aside
    that last came before it. The whole chain still verifies.
    """
    before = cutoff(keep_days, now)
    entries = store.redact_before(site, before, actor=actor)
    g = st_mod.grants
    with store.engine.connect().execution_options(classlocker_write=True) as conn:
        with conn.begin():
            grants = conn.execute(g.delete().where(_ended_grants(site, before))).rowcount
            # conflicting events kept aside (issue 13) hold person ids too: gone with the rest
            c = st_mod.event_conflicts
            conn.execute(c.delete().where(c.c.site == site, c.c.last_at < before))
            gone = _departed_people(conn, site, before)
            for i in range(0, len(gone), 500):
                conn.execute(
                    st_mod.people.delete().where(
                        st_mod.people.c.site == site,
                        st_mod.people.c.person_id.in_(gone[i : i + 500]),
                    )
                )
    result = {"cutoff": before, "entries": entries, "grants": grants, "people": len(gone)}
    store.record_action(site, actor, "retention", {"keep_days": keep_days, **result})
    return result


# --- subject access ------------------------------------------------------------------------


def _iso(ts, tz: str):
    """Local ISO time, None for None, `invalid time (ts=...)` for a value that is no time."""
    if ts is None:
        return None
    from .display import format_ts

    return format_ts(ts, tz)


def _mentions(value, person_id: str) -> bool:
    if isinstance(value, str):
        return value == person_id
    if isinstance(value, dict):
        return any(_mentions(v, person_id) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, person_id) for v in value)
    return False


def subject_access(store, site: str, person_id: str, now: int | None = None) -> dict:
    """Everything the store holds about `person_id` at `site`, as one JSON-able object.

    Roster rows (card UIDs masked), events where the person is the subject (`person`) or the
    actor (`by`), exception grants to or by them, host actions that name them, dashboard accounts
    linked to them, bays they hold now. Events whose personal fields were removed by retention no
    longer name anyone, so they are not part of it.
    """
    if not st_mod.PERSON_ID_RE.match(person_id or ""):
        raise PrivacyError(f"{person_id!r} is not a person id (1-28 of A-Z a-z 0-9 . _ -)")
    now = int(time.time()) if now is None else int(now)
    tz = store.timezone(site)
    out: dict = {
        "subject": person_id,
        "site": site,
        "generated": _iso(now, tz),
        "timezone": tz,
        "person": None,
        "cards": [],
        "events": [],
        "grants": [],
        "actions": [],
        "dashboard_accounts": [],
        "holding": [],
    }
    person = store.person(site, person_id)
    if person is not None:
        out["person"] = {
            "person_id": person.person_id,
            "name": person.name,
            "role": person.role,
            "on_roster": bool(person.active),
        }
    for c in store.person_cards(site, person_id):
        out["cards"].append(
            {
                "card": st_mod.mask_uid(c.uid),
                "role": c.role,
                "year": c.year or None,
                "walk_home": bool(c.walk_home),
                "revoked": bool(c.revoked),
            }
        )
    for e in store.events(site, person=person_id):
        roles = [r for r, v in (("subject", e.person), ("actor", e.by)) if v == person_id]
        out["events"].append(
            {
                "time": event_time(e.ts, e.received_at, tz),
                "received": _iso(e.received_at, tz),
                "locker": e.locker_id,
                "seq": e.seq,
                "bay": e.bay,
                "event": e.type,
                "as": roles,
                "person": e.person,
                "by": e.by,
                "reason": e.reason,
            }
        )
    for g in store.grants(site, include_ended=True, now=now):
        if person_id not in (g.person_id, g.by):
            continue
        out["grants"].append(
            {
                "id": g.id,
                "as": [
                    r
                    for r, v in (("subject", g.person_id), ("granted_by", g.by))
                    if v == person_id
                ],
                "person": g.person_id,
                "by": g.by,
                "locker": g.locker_id,
                "from": _iso(g.from_ts, tz),
                "until": _iso(g.until_ts, tz),
                "reason": g.reason,
                "created": _iso(g.created_at, tz),
                "revoked": _iso(g.revoked_at, tz),
            }
        )
    u = st_mod.users
    t = st_mod.trail_entries
    with store.engine.connect() as conn:
        accounts = conn.execute(
            sa.select(u.c.username, u.c.role, u.c.created_at, u.c.disabled)
            .where(u.c.site == site, u.c.person_id == person_id)
            .order_by(u.c.username)
        ).all()
        usernames = {a.username for a in accounts}
        for a in accounts:
            out["dashboard_accounts"].append(
                {
                    "username": a.username,
                    "role": a.role,
                    "created": _iso(a.created_at, tz),
                    "disabled": bool(a.disabled),
                }
            )
        rows = conn.execution_options(yield_per=2000, stream_results=True).execute(
            sa.select(t.c.id, t.c.content)
            .where(t.c.site == site, t.c.kind == trail.ACTION, t.c.redacted.is_(False))
            .order_by(t.c.id)
        )
        for r in rows:
            try:
                content = json.loads(r.content or "{}")
            except ValueError:
                continue
            if not isinstance(content, dict):
                continue
            actor = str(content.get("actor") or "")
            by_account = actor.rpartition(":")[2] in usernames if usernames else False
            if by_account or _mentions(content.get("detail"), person_id):
                out["actions"].append(
                    {
                        "entry": r.id,
                        "time": _iso(content.get("at"), tz),
                        "actor": actor,
                        "action": content.get("action"),
                        "detail": content.get("detail"),
                    }
                )
    for locker in store.lockers(site):
        for bay in read_state(locker.state).bays:
            if bay["holder"] == person_id:
                out["holding"].append({"locker": locker.id, "bay": bay["bay"]})
    return out


def is_empty(report: dict) -> bool:
    return report["person"] is None and not any(
        report[k]
        for k in ("cards", "events", "grants", "actions", "dashboard_accounts", "holding")
    )
