"""Keep-safe consents in the store (migration `0010_exceptions`) and who may approve them
(migration `0015_consent_approvers`). Each change is one transaction with its trail entry and a
new configuration version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from .chain import _append_action
from .engine import StoreError, ensure_site
from .exceptions import (
    _check_consent_approver,
    _check_person,
    _is_approver,
    _person,
    _roles,
    _timezone,
    day_end,
)
from .siteconfig import bump
from .tables import MAX_TEXT, cards, consent_approvers, consents, people

# -- consents -----------------------------------------------------------------------------------


def add_consent(
    st,
    site: str,
    person_id: str,
    by: str,
    until: dt.date | None,
    reason: str | None,
    actor: str,
    now: int,
) -> int:
    """The Headteacher's keep-safe consent for a pupil; its id. StoreError (nothing stored) for
    a person who is not a pupil, `by` not a named approver (`add_approver`) with an slt card,
    or a consent already in force."""
    with st._write() as conn:
        ensure_site(conn, site)
        _check_person(conn, site, person_id)
        if "pupil" not in _roles(conn, site, person_id):
            raise StoreError(f"{person_id} is not a pupil (consent is for pupils' phones)")
        _check_consent_approver(conn, site, by)
        tz = _timezone(conn, site)
        until_ts = day_end(until, tz) if until else None
        if until_ts is not None and until_ts <= now:
            raise StoreError(f"--until {until} has already passed")
        held = conn.execute(
            sa.select(consents.c.id).where(
                consents.c.site == site,
                consents.c.person_id == person_id,
                consents.c.ended_at.is_(None),
                sa.or_(consents.c.until_ts.is_(None), consents.c.until_ts > now),
            )
        ).first()
        if held is not None:
            raise StoreError(
                f"{person_id} already has consent {held.id} in force "
                f"(lockerctl consent end {person_id} first)"
            )
        cid = conn.execute(
            consents.insert().values(
                site=site,
                person_id=person_id,
                by=by,
                reason=reason,
                until_date=until.isoformat() if until else None,
                until_ts=until_ts,
                created_at=now,
                ended_at=None,
            )
        ).inserted_primary_key[0]
        _append_action(
            conn,
            site,
            actor,
            "consent_add",
            {
                "id": cid,
                "person": person_id,
                "by": by,
                "until": until.isoformat() if until else None,
                "reason": reason,
            },
        )
        bump(conn, site)
    return cid


def end_consent(st, site: str, person_id: str, actor: str, now: int) -> list[int]:
    """Ends the person's consents in force; their ids. StoreError when there is none."""
    with st._write() as conn:
        ids = list(
            conn.execute(
                sa.select(consents.c.id).where(
                    consents.c.site == site,
                    consents.c.person_id == person_id,
                    consents.c.ended_at.is_(None),
                    sa.or_(consents.c.until_ts.is_(None), consents.c.until_ts > now),
                )
            ).scalars()
        )
        if not ids:
            raise StoreError(f"{person_id} has no consent in force")
        conn.execute(consents.update().where(consents.c.id.in_(ids)).values(ended_at=now))
        _append_action(conn, site, actor, "consent_end", {"person": person_id, "ids": ids})
        bump(conn, site)
    return ids


def list_consents(st, site: str, include_ended: bool, now: int) -> list:
    q = (
        sa.select(consents, people.c.name)
        .select_from(
            consents.outerjoin(
                people,
                sa.and_(
                    people.c.site == consents.c.site,
                    people.c.person_id == consents.c.person_id,
                ),
            )
        )
        .where(consents.c.site == site)
    )
    if not include_ended:
        q = q.where(
            consents.c.ended_at.is_(None),
            sa.or_(consents.c.until_ts.is_(None), consents.c.until_ts > now),
        )
    with st._read() as conn:
        return conn.execute(q.order_by(consents.c.id)).all()


# -- who may approve consents ---------------------------------------------------------------


def add_approver(st, site: str, person_id: str, actor: str, now: int) -> None:
    """Names `person_id` (on the roster with an slt card) an approver of keep-safe consents;
    StoreError (nothing stored) otherwise or when they already are one."""
    with st._write() as conn:
        ensure_site(conn, site)
        p = _person(conn, site, person_id)
        if p is None or not p.active:
            raise StoreError(f"{person_id} is not on the roster of site {site}")
        if "slt" not in _roles(conn, site, person_id):
            raise StoreError(
                f"{person_id} is not an SLT member (no slt card): only the Headteacher or an "
                "SLT member may approve keep-safe consents"
            )
        if _is_approver(conn, site, person_id):
            raise StoreError(f"{person_id} already approves keep-safe consents")
        conn.execute(
            consent_approvers.insert().values(
                site=site, person_id=person_id, added_by=actor[:MAX_TEXT], added_at=now
            )
        )
        _append_action(conn, site, actor, "consent_approver_add", {"person": person_id})


def remove_approver(st, site: str, person_id: str, actor: str) -> None:
    """No longer lets `person_id` approve keep-safe consents (the consents they gave stand);
    StoreError when they are not an approver."""
    with st._write() as conn:
        gone = conn.execute(
            consent_approvers.delete().where(
                consent_approvers.c.site == site, consent_approvers.c.person_id == person_id
            )
        ).rowcount
        if not gone:
            raise StoreError(
                f"{person_id} is not an approver of keep-safe consents "
                "(lockerctl consent approver list)"
            )
        _append_action(conn, site, actor, "consent_approver_remove", {"person": person_id})


@dataclass
class Approver:
    person_id: str
    name: str | None
    added_by: str
    added_at: int
    slt: bool  # still on the roster with an slt card (else `consent add` refuses them)


def list_approvers(st, site: str) -> list[Approver]:
    """The site's approvers of keep-safe consents, by name."""
    a, p, c = consent_approvers, people, cards
    with st._read() as conn:
        rows = conn.execute(
            sa.select(a, p.c.name, p.c.active)
            .select_from(
                a.outerjoin(p, sa.and_(p.c.site == a.c.site, p.c.person_id == a.c.person_id))
            )
            .where(a.c.site == site)
        ).all()
        slt = set(
            conn.execute(
                sa.select(c.c.person_id).where(
                    c.c.site == site, c.c.role == "slt", c.c.revoked.is_(False)
                )
            ).scalars()
        )
    out = [
        Approver(
            r.person_id,
            r.name,
            r.added_by,
            int(r.added_at),
            bool(r.active) and r.person_id in slt,
        )
        for r in rows
    ]
    return sorted(out, key=lambda x: (x.name or "", x.person_id))


def is_approver(st, site: str, person_id: str | None) -> bool:
    """Whether `person_id` may record a keep-safe consent now (named, on the roster, slt)."""
    if not person_id:
        return False
    return any(a.person_id == person_id and a.slt for a in list_approvers(st, site))
