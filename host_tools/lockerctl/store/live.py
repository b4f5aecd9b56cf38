"""The dashboard's queries on the store: names, recent events, the trail page, the live
signature and the monitoring counters. Every function takes a `Store`; the web layer
(`lockerctl.web`) writes no SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from .eventlog import events_query
from .tables import events, lockers, people, sites, trail_head

# -- people, events ---------------------------------------------------------------------------


def names_of(store, site: str, ids) -> dict[str, str]:
    """{person_id: name} of those of `ids` on the roster."""
    wanted = [i for i in set(ids) if isinstance(i, str) and i]
    if not wanted:
        return {}
    with store._read() as conn:
        rows = conn.execute(
            sa.select(people.c.person_id, people.c.name).where(
                people.c.site == site, people.c.person_id.in_(wanted)
            )
        ).all()
    return {r.person_id: r.name for r in rows}


def last_event_id(store) -> int:
    """The newest event's id (0 without any): ids grow in commit order."""
    with store._read() as conn:
        return int(conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)


def outcomes(store, site: str, after: int, locker_ids: list[str], types) -> list:
    """The events of `types` from `locker_ids` committed after event id `after`, in order."""
    if not locker_ids:
        return []
    with store._read() as conn:
        return conn.execute(
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
                events.c.id > after,
                events.c.locker_id.in_(locker_ids),
                events.c.type.in_(list(types)),
            )
            .order_by(events.c.id)
        ).all()


def trail_page(store, site: str, start, end, locker, person, limit: int, offset: int) -> list:
    """One page of the trail's search (events that happened in [start, end)), the latest the
    host received first: a locker with a wrong clock does not pin its events above new ones
    (rows as `Store.events` gives them)."""
    q = (
        events_query(site, start, end, locker, person)
        .order_by(events.c.received_at.desc(), events.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    with store._read() as conn:
        return conn.execute(q).all()


def recent_events(store, site: str, limit: int) -> list:
    """The site's latest events by the time the host received them, newest first (rows as
    `Store.events` gives them; the index on (site, received_at) serves it)."""
    q = events_query(site).order_by(events.c.received_at.desc(), events.c.id.desc()).limit(limit)
    with store._read() as conn:
        return conn.execute(q).all()


def events_after(store, site: str, after: int, limit: int) -> list:
    """Events with an id above `after`, oldest first, at most `limit` (for API clients that
    follow the trail by id)."""
    q = events_query(site).where(events.c.id > after).order_by(events.c.id).limit(limit)
    with store._read() as conn:
        return conn.execute(q).all()


def live_signature(store, site: str) -> tuple:
    """What the live pages show changes when this changes: the newest event, the trail's last
    entry (every action), and each locker's status and state (the ingest process writes
    them)."""
    with store._read() as conn:
        top = conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
        head = conn.execute(sa.select(trail_head.c.last_id)).scalar()
        rows = conn.execute(
            sa.select(lockers.c.id, lockers.c.online, lockers.c.last_seen, lockers.c.state)
            .where(lockers.c.site == site)
            .order_by(lockers.c.id)
        ).all()
    return (top, head, tuple((r.id, r.online, r.last_seen, repr(r.state)) for r in rows))


def ping(store) -> None:
    """A query that works when the store answers (raises otherwise)."""
    with store._read() as conn:
        conn.execute(sa.select(sites.c.name).limit(1))


# -- monitoring ---------------------------------------------------------------------------------


def last_event_per_locker(store, site: str) -> tuple[int, dict[str, int]]:
    """(the newest event id, {locker: received_at of its newest event})."""
    with store._read() as conn:
        top = conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
        rows = conn.execute(
            sa.select(events.c.locker_id, sa.func.max(events.c.received_at))
            .where(events.c.site == site)
            .group_by(events.c.locker_id)
        ).all()
    return int(top or 0), {r[0]: int(r[1]) for r in rows}


@dataclass
class NewEvents:
    top: int  # the newest event id now
    per_locker: list  # (locker, newest received_at, count) of the events after the watermark
    latencies: list  # (received_at - ts in seconds, count), events with a locker time


def events_since(store, site: str, watermark: int | None) -> NewEvents:
    """What was committed after event id `watermark` (nothing when it is None or not below the
    newest id); the store is checked to answer on the way."""
    with store._read() as conn:
        conn.execute(sa.select(sites.c.name).limit(1))
        top = int(conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)
        if watermark is None or top <= watermark:
            return NewEvents(top, [], [])
        new = sa.and_(events.c.site == site, events.c.id > watermark, events.c.id <= top)
        per_locker = conn.execute(
            sa.select(events.c.locker_id, sa.func.max(events.c.received_at), sa.func.count())
            .where(new)
            .group_by(events.c.locker_id)
        ).all()
        latency = events.c.received_at - events.c.ts
        latencies = conn.execute(
            sa.select(latency, sa.func.count())
            .where(new, events.c.ts.is_not(None))
            .group_by(latency)
        ).all()
    return NewEvents(top, [tuple(r) for r in per_locker], [tuple(r) for r in latencies])
