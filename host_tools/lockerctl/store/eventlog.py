"""Queries of the stored events: the trail page, exports and reports read through these."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from .engine import StoreBase
from .tables import events, people


def events_query(site, start=None, end=None, locker=None, person=None, types=None):
    e, p = events, people
    q = (
        sa.select(
            e.c.id,
            e.c.locker_id,
            e.c.seq,
            e.c.ts,
            e.c.type,
            e.c.bay,
            e.c.person,
            e.c.by,
            e.c.reason,
            e.c.received_at,
            e.c.sort_ts,
            p.c.name,
            p.c.role,
            e.c.jid,
            e.c.unknown_type,
        )
        .select_from(e.outerjoin(p, sa.and_(p.c.site == e.c.site, p.c.person_id == e.c.person)))
        .where(e.c.site == site)
    )
    if start is not None:
        q = q.where(e.c.sort_ts >= int(start))
    if end is not None:
        q = q.where(e.c.sort_ts < int(end))
    if locker is not None:
        q = q.where(e.c.locker_id == locker)
    if person is not None:
        q = q.where(sa.or_(e.c.person == person, e.c.by == person))
    if types:
        q = q.where(e.c.type.in_(list(types)))
    return q


class EventsMixin(StoreBase):
    """The events' queries of `Store`."""

    def events(
        self,
        site: str,
        start: int | None = None,
        end: int | None = None,
        locker: str | None = None,
        person: str | None = None,
        types=None,
        newest_first: bool = False,
        limit: int | None = None,
        batch: int = 1000,
        batches: bool = False,
    ) -> Iterator:
        """Streams the site's events (rows: id, locker_id, seq, ts, type, bay, person, by,
        reason, received_at, sort_ts, name, role), in time order (`sort_ts`: the locker's ts,
        or the arrival time when that is unknown). `start`/`end` are unix seconds [start, end);
        `person` matches the person or the `by` of an event. The connection is held while the
        iterator is consumed and released when it ends or is closed. `batches=True` yields lists
        of up to `batch` rows instead (an export's fast read: no step per row)."""
        q = events_query(site, start, end, locker, person, types)
        columns = [events.c.sort_ts, events.c.locker_id, events.c.seq]
        order = [c.desc() for c in columns] if newest_first else columns
        q = q.order_by(*order)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            with conn.begin():
                result = conn.execution_options(yield_per=batch, stream_results=True).execute(q)
                if batches:
                    yield from result.partitions()
                else:
                    yield from result

    def count_events(
        self, site: str, start=None, end=None, locker=None, person=None, types=None
    ) -> int:
        q = events_query(site, start, end, locker, person, types).subquery()
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(q)).scalar()
