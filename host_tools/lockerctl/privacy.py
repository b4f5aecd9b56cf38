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

from .display import event_time, read_state
from .store import PERSON_ID_RE, mask_uid
from .store import privacy as rows

DAY = 86400


class PrivacyError(ValueError):
    """A request that cannot be carried out (the message is for the user)."""


def cutoff(keep_days: int, now: int | None = None) -> int:
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 0:
        raise PrivacyError(f"--keep-days must be a whole number of days >= 0, not {keep_days!r}")
    now = int(time.time()) if now is None else int(now)
    return now - keep_days * DAY


# --- retention -----------------------------------------------------------------------------


def retention_preview(store, site: str, keep_days: int, now: int | None = None) -> dict:
    """What `apply_retention` would do, changing nothing."""
    before = cutoff(keep_days, now)
    entries, grants = rows.retention_counts(store, site, before)
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
    grants, people = rows.delete_expired(store, site, before)
    result = {"cutoff": before, "entries": entries, "grants": grants, "people": people}
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
    if not PERSON_ID_RE.match(person_id or ""):
        raise PrivacyError(f"{person_id!r} is not a person id (1-28 of A-Z a-z 0-9 . _ -)")
    now = int(time.time()) if now is None else int(now)
    tz = store.timezone(site)
    accounts = _accounts(store, site, person_id, tz)
    usernames = {a["username"] for a in accounts}
    return {
        "subject": person_id,
        "site": site,
        "generated": _iso(now, tz),
        "timezone": tz,
        "person": _person(store, site, person_id),
        "cards": _cards(store, site, person_id),
        "events": _events(store, site, person_id, tz),
        "grants": _grants(store, site, person_id, now, tz),
        "actions": _actions(store, site, person_id, usernames, tz),
        "dashboard_accounts": accounts,
        "holding": _holding(store, site, person_id),
    }


def _person(store, site: str, person_id: str) -> dict | None:
    person = store.person(site, person_id)
    if person is None:
        return None
    return {
        "person_id": person.person_id,
        "name": person.name,
        "role": person.role,
        "on_roster": bool(person.active),
    }


def _cards(store, site: str, person_id: str) -> list[dict]:
    return [
        {
            "card": mask_uid(c.uid),
            "role": c.role,
            "year": c.year or None,
            "walk_home": bool(c.walk_home),
            "revoked": bool(c.revoked),
        }
        for c in store.person_cards(site, person_id)
    ]


def _events(store, site: str, person_id: str, tz: str) -> list[dict]:
    out = []
    for e in store.events(site, person=person_id):
        roles = [r for r, v in (("subject", e.person), ("actor", e.by)) if v == person_id]
        out.append(
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
    return out


def _grants(store, site: str, person_id: str, now: int, tz: str) -> list[dict]:
    out = []
    for g in store.grants(site, include_ended=True, now=now):
        if person_id not in (g.person_id, g.by):
            continue
        out.append(
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
    return out


def _accounts(store, site: str, person_id: str, tz: str) -> list[dict]:
    return [
        {
            "username": a.username,
            "role": a.role,
            "created": _iso(a.created_at, tz),
            "disabled": bool(a.disabled),
        }
        for a in rows.linked_accounts(store, site, person_id)
    ]


def _actions(store, site: str, person_id: str, usernames: set, tz: str) -> list[dict]:
    """Host actions by one of the person's accounts or naming them in their detail."""
    out = []
    for r in rows.unredacted_actions(store, site):
        try:
            content = json.loads(r.content or "{}")
        except ValueError:
            continue
        if not isinstance(content, dict):
            continue
        actor = str(content.get("actor") or "")
        by_account = actor.rpartition(":")[2] in usernames if usernames else False
        if by_account or _mentions(content.get("detail"), person_id):
            out.append(
                {
                    "entry": r.id,
                    "time": _iso(content.get("at"), tz),
                    "actor": actor,
                    "action": content.get("action"),
                    "detail": content.get("detail"),
                }
            )
    return out


def _holding(store, site: str, person_id: str) -> list[dict]:
    out = []
    for locker in store.lockers(site):
        for bay in read_state(locker.state).bays:
            if bay["holder"] == person_id:
                out.append({"locker": locker.id, "bay": bay["bay"]})
    return out


def is_empty(report: dict) -> bool:
    return report["person"] is None and not any(
        report[k]
        for k in ("cards", "events", "grants", "actions", "dashboard_accounts", "holding")
    )
