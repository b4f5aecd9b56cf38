"""Data protection's queries (`lockerctl.privacy`): what retention counts and deletes beyond the
trail's redaction (`Store.redact_before`), and what a subject access request reads that no other
area gives: the dashboard accounts linked to a person and the host actions not redacted.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from .. import trail
from .tables import cards, event_conflicts, events, grants, people, trail_entries, users


def _old_entries(site: str, before: int):
    t = trail_entries
    redact_action = sa.and_(t.c.kind == "action", t.c.content.like(f"%{trail.REDACT_WORD}%"))
    return sa.select(sa.func.count()).where(
        t.c.site == site,
        t.c.at < before,
        t.c.redacted.is_(False),
        sa.not_(redact_action),  # never redacted: nothing personal in them
    )


def _ended_grants(site: str, before: int):
    g = grants
    return sa.and_(
        g.c.site == site,
        sa.or_(
            g.c.until_ts < before, sa.and_(g.c.revoked_at.is_not(None), g.c.revoked_at < before)
        ),
    )


def _departed_people(conn, site: str, before: int) -> list[str]:
    """People no longer on the roster (inactive, no card left) whom nothing kept refers to: no
    event that keeps its personal fields, no grant, no dashboard account."""
    p, c, e, g, u = people, cards, events, grants, users
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


def retention_counts(store, site: str, before: int) -> tuple[int, int]:
    """(trail entries retention would redact, grants it would delete), changing nothing."""
    with store._read() as conn:
        entries = conn.execute(_old_entries(site, before)).scalar()
        ended = conn.execute(
            sa.select(sa.func.count()).where(_ended_grants(site, before))
        ).scalar()
    return entries or 0, ended or 0


def delete_expired(store, site: str, before: int) -> tuple[int, int]:
    """Deletes grants that ended before `before`, conflicting events kept aside that last came
    before it, and people who left the roster whom nothing kept refers to; (grants, people)."""
    g = grants
    with store._write() as conn:
        deleted = conn.execute(g.delete().where(_ended_grants(site, before))).rowcount
        # conflicting events kept aside (issue 13) hold person ids too: gone with the rest
        c = event_conflicts
        conn.execute(c.delete().where(c.c.site == site, c.c.last_at < before))
        gone = _departed_people(conn, site, before)
        for i in range(0, len(gone), 500):
            conn.execute(
                people.delete().where(
                    people.c.site == site,
                    people.c.person_id.in_(gone[i : i + 500]),
                )
            )
    return deleted, len(gone)


def linked_accounts(store, site: str, person_id: str) -> list:
    """Rows (username, role, created_at, disabled) of the dashboard accounts linked to the
    person, by username."""
    u = users
    with store._read() as conn:
        return list(
            conn.execute(
                sa.select(u.c.username, u.c.role, u.c.created_at, u.c.disabled)
                .where(u.c.site == site, u.c.person_id == person_id)
                .order_by(u.c.username)
            ).all()
        )


def unredacted_actions(store, site: str) -> Iterator:
    """Streams rows (id, content) of the site's host actions not redacted, in order. The
    connection is held while the iterator is consumed."""
    t = trail_entries
    with store.engine.connect() as conn:
        with conn.begin():
            yield from conn.execution_options(yield_per=2000, stream_results=True).execute(
                sa.select(t.c.id, t.c.content)
                .where(t.c.site == site, t.c.kind == trail.ACTION, t.c.redacted.is_(False))
                .order_by(t.c.id)
            )
