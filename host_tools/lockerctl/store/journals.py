"""Each locker's journals in the store: the watermarks, duplicates, conflicts and refusals
that ingest keeps, and the queries both ingest paths (`ingest.py`) share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from .. import trail
from . import engine
from .engine import StoreBase, _chunks, _insert_many, _int_or_none
from .tables import event_conflicts, events, ingest_refusals, journal_marks

REFUSALS = {
    "bad_mac": "Event with a bad or missing MAC (forged?)",
    "conflict": "Event conflicts with the one stored (same journal and seq)",
    "seq_ahead": "Event seq beyond what the journal can hold",
    "impossible": "Event no firmware can send",
    # not an event: `serve` found the trail behind a checkpoint a locker holds (locker "-")
    "checkpoint": "Trail behind a checkpoint a locker holds: no checkpoint signed",
}
REFUSAL_ALERT_EVERY = 600


# Column order of the tuples `_ingest_lockers` builds.
_EVENT_COLUMNS = (
    "site",
    "locker_id",
    "seq",
    "ts",
    "type",
    "bay",
    "person",
    "by",
    "reason",
    "received_at",
    "sort_ts",
    "jid",
    "mac",
    "unknown_type",
    "hash_v",
)
_TRAIL_COLUMNS = (
    "id",
    "site",
    "kind",
    "event_id",
    "content",
    "content_hash",
    "hash",
    "redacted",
    "at",
)


@dataclass
class IngestResult:
    """What `Store.ingest_journals` did with a batch."""

    # (locker, jid) -> ack watermark, for each journal in the batch without a conflict
    acks: dict[tuple[str, str], int] = field(default_factory=dict)
    # (locker, jid) -> seqs kept aside as conflicts (that journal is not acknowledged)
    conflicts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    refused: list[tuple[str, str, int, str]] = field(
        default_factory=list
    )  # (locker, jid, seq, kind)
    stored: int = 0
    pending_conflicts: list = field(default_factory=list)


_SAME_FIELDS = ("ts", "type", "bay")
_PERSONAL_FIELDS = ("person", "by", "reason")


def _same_event(stored: dict, ev: dict) -> bool:
    """Whether `ev` is the event `stored` (a row or an event dict) again. The MAC covers every
    field; without two MACs (events stored before 0005, store-level callers) the fields are
    compared."""
    for name in _SAME_FIELDS:
        if stored.get(name) != ev.get(name):
            return False
    a, b = stored.get("mac"), ev.get("mac")
    if a is not None and b is not None:
        return a == b
    return all(stored.get(n) == ev.get(n) for n in _PERSONAL_FIELDS)


def group_batch(batch, result: IngestResult):
    """The events of a batch by journal: ({(locker, jid): {seq: event}}, {(locker, jid): the
    duplicates within the batch}); a seq sent twice with other content goes to
    `result.pending_conflicts`."""
    by_journal: dict[tuple[str, str], dict[int, dict]] = {}
    dups: dict[tuple[str, str], int] = {}
    for locker_id, ev in batch:
        if not isinstance(ev, dict):
            by_journal.setdefault((locker_id, ""), {})
            dups.setdefault((locker_id, ""), 0)
            continue
        jid = ev.get("jid")
        key = (locker_id, jid if isinstance(jid, str) else "")
        fresh = by_journal.get(key)
        if fresh is None:
            fresh = by_journal[key] = {}
            dups[key] = 0
        seq = ev.get("seq")
        if type(seq) is not int:  # (an int is what `_int_or_none` gives back as it is)
            seq = _int_or_none(seq)
        if seq is None or seq < 1:
            continue  # not an event at all: nothing to store or acknowledge
        if seq in fresh:
            if _same_event(fresh[seq], ev):
                dups[key] += 1
            else:
                result.pending_conflicts.append((key, seq, ev))
        else:
            fresh[seq] = ev
    return by_journal, dups


def _record_refusals(conn, site: str, items, now: int) -> None:
    """Adds (locker_id, kind, detail) arrivals to `ingest_refusals`: to the (locker, kind) row
    begun within `REFUSAL_ALERT_EVERY` seconds, else a new row (a new alert)."""
    r = ingest_refusals
    counts: dict[tuple[str, str], list] = {}
    for locker_id, kind, detail in items:
        entry = counts.setdefault((locker_id, kind), [0, ""])
        entry[0] += 1
        entry[1] = str(detail)[:300]
    for (locker_id, kind), (n, detail) in counts.items():
        recent = conn.execute(
            sa.select(r.c.id)
            .where(
                r.c.site == site,
                r.c.locker_id == locker_id,
                r.c.kind == kind,
                r.c.first_at > now - REFUSAL_ALERT_EVERY,
            )
            .order_by(r.c.id.desc())
            .limit(1)
        ).scalar()
        if recent is not None:
            conn.execute(
                r.update()
                .where(r.c.id == recent)
                .values(count=r.c.count + n, last_at=now, detail=detail)
            )
        else:
            conn.execute(
                r.insert().values(
                    site=site,
                    locker_id=locker_id,
                    kind=kind,
                    first_at=now,
                    last_at=now,
                    count=n,
                    detail=detail,
                )
            )


def _legacy_acks(conn, site, by_journal, marks) -> dict[tuple[str, str], int]:
    """{(locker, jid): the locker's watermark of journal ""} for each journal of the batch
    with an id and nothing acknowledged yet, whose locker has events from before journal
    ids: such a journal may be that old one, given its id on the firmware's upgrade and
    going on from its seq (see `_continued`)."""
    waiting = {key for key in by_journal if key[1] and marks[key][0] == 0}
    if not waiting:
        return {}
    m = journal_marks
    acks = dict(
        conn.execute(
            sa.select(m.c.locker_id, m.c.ack_seq).where(
                m.c.site == site,
                m.c.jid == "",
                m.c.locker_id.in_(sorted({lid for lid, _ in waiting})),
                m.c.ack_seq > 0,
            )
        ).all()
    )
    return {key: acks[key[0]] for key in waiting if key[0] in acks}


def _continued(conn, site, locker_id, jid, legacy_ack: int) -> int:
    """The watermark of a journal with nothing acknowledged yet: a new journal starts at seq 1
    (0 until it is stored); one that holds no seq 1 but the seq after the locker's old
    journal's watermark is that old journal under its new id (the firmware gives a journal
    from before ids one at its upgrade and goes on counting): it goes on from there."""
    e = events

    def stored(seq):
        return conn.execute(
            sa.select(e.c.id).where(
                e.c.site == site, e.c.locker_id == locker_id, e.c.jid == jid, e.c.seq == seq
            )
        ).first()

    if stored(1) is not None or stored(legacy_ack + 1) is None:
        return 0
    return _advance(conn, site, locker_id, jid, legacy_ack)


def _keep_conflict(conn, site, key, seq, ev, event_id, now) -> None:
    locker_id, jid = key
    content = trail.canonical(
        {
            k: ev.get(k)
            for k in ("seq", "ts", "type", "bay", "person", "by", "reason", "jid", "mac")
        }
    ).decode()
    chash = trail.content_hash(content.encode())
    c = event_conflicts
    where = sa.and_(
        c.c.site == site,
        c.c.locker_id == locker_id,
        c.c.jid == jid,
        c.c.seq == seq,
        c.c.content_hash == chash,
    )
    if conn.execute(c.update().where(where).values(count=c.c.count + 1, last_at=now)).rowcount:
        return
    conn.execute(
        c.insert().values(
            site=site,
            locker_id=locker_id,
            jid=jid,
            seq=seq,
            event_id=event_id,
            content=content[:4000],
            content_hash=chash,
            first_at=now,
            last_at=now,
            count=1,
        )
    )
    _record_refusals(conn, site, [(locker_id, "conflict", f"journal {jid} seq {seq}")], now)


def _marks(conn, site, keys) -> dict[tuple[str, str], tuple[int, int, bool, int]]:
    """{(locker, jid): (ack_seq, duplicates, has a mark row, highest stored seq or 0)} with
    one query per 500 lockers: each highest seq is a correlated max over the unique index
    (site, locker_id, jid, seq), one index seek per journal on SQLite and PostgreSQL alike."""
    m, e = journal_marks, events
    top = (
        sa.select(sa.func.max(e.c.seq))
        .where(e.c.site == m.c.site, e.c.locker_id == m.c.locker_id, e.c.jid == m.c.jid)
        .scalar_subquery()
    )
    out: dict[tuple[str, str], tuple[int, int, bool, int]] = {}
    wanted = set(keys)
    locker_ids = sorted({locker_id for locker_id, _ in keys})
    for chunk in _chunks(locker_ids, 500):
        for r in conn.execute(
            sa.select(m.c.locker_id, m.c.jid, m.c.ack_seq, m.c.duplicates, top.label("top")).where(
                m.c.site == site, m.c.locker_id.in_(chunk)
            )
        ):
            key = (r.locker_id, r.jid)
            if key in wanted:
                out[key] = (r.ack_seq, r.duplicates, True, r.top or 0)
    for key in keys:
        if key not in out:
            # No mark yet (the journal's first batch). Rows stored without one cannot come
            # from `ingest`, but look, so that they are never stored twice.
            top = conn.execute(
                sa.select(sa.func.max(e.c.seq)).where(
                    e.c.site == site, e.c.locker_id == key[0], e.c.jid == key[1]
                )
            ).scalar()
            out[key] = (0, 0, False, top or 0)
    return out


def _stored_events(conn, site, locker_id, jid, seqs) -> dict[int, dict]:
    e = events
    stored = {}
    for chunk in _chunks(seqs, 500):
        for r in conn.execute(
            sa.select(
                e.c.id, e.c.seq, e.c.ts, e.c.type, e.c.bay, e.c.person, e.c.by, e.c.reason,
                e.c.mac,
            ).where(
                e.c.site == site,
                e.c.locker_id == locker_id,
                e.c.jid == jid,
                e.c.seq.in_(chunk),
            )
        ):  # fmt: skip
            stored[r.seq] = dict(r._mapping)
    return stored


def _insert_events(conn, site, rows) -> list[int]:
    """Inserts the event rows in their order (one writer: the single writer's transaction);
    their ids, in the same order.

    On SQLite the ids are given here: what SQLite would give them (`events.id` is the rowid, so
    a new row gets the highest id + 1; no AUTOINCREMENT), known before the insert, which is
    then one executemany. Measured on ingest's batches of 2,000: 1 µs an event less than a
    multi-row INSERT ... RETURNING with its rows read back and matched by key. Elsewhere, where
    the database returns rows from an insert (PostgreSQL), INSERT ... RETURNING; else one
    executemany and a query for the ids (SQLite before 3.35 too)."""
    e = events
    if conn.dialect.name == "sqlite" and conn.dialect.insert_returning:
        top = conn.exec_driver_sql("SELECT max(id) FROM events").scalar() or 0
        ids = list(range(top + 1, top + 1 + len(rows)))
        _insert_many(
            conn, e, ("id", *_EVENT_COLUMNS), [(i, *r) for i, r in zip(ids, rows, strict=True)]
        )
        return ids
    by_key: dict[tuple[str, str, int], int] = {}
    if conn.dialect.insert_returning:
        ret = (e.c.id, e.c.locker_id, e.c.jid, e.c.seq)
        by_key = {
            (lid, jid, seq): id_
            for id_, lid, jid, seq in _insert_many(conn, e, _EVENT_COLUMNS, rows, ret)
        }
        return [by_key[(r[1], r[11], r[2])] for r in rows]
    _insert_many(conn, e, _EVENT_COLUMNS, rows)
    by_journal: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        by_journal.setdefault((r[1], r[11]), []).append(r[2])
    for (locker_id, jid), seqs in by_journal.items():
        for chunk in _chunks(seqs, 500):
            for seq, id_ in conn.execute(
                sa.select(e.c.seq, e.c.id).where(
                    e.c.site == site,
                    e.c.locker_id == locker_id,
                    e.c.jid == jid,
                    e.c.seq.in_(chunk),
                )
            ):
                by_key[(locker_id, jid, seq)] = id_
    return [by_key[(r[1], r[11], r[2])] for r in rows]


def _advance(conn, site, locker_id, jid, ack: int) -> int:
    """Moves the watermark over every contiguous seq stored after it."""
    e = events
    while True:
        nxt = (
            conn.execute(
                sa.select(e.c.seq)
                .where(e.c.site == site, e.c.locker_id == locker_id, e.c.jid == jid, e.c.seq > ack)
                .order_by(e.c.seq)
                .limit(1000)
            )
            .scalars()
            .all()
        )
        for seq in nxt:
            if seq != ack + 1:
                return ack
            ack = seq
        if len(nxt) < 1000:
            return ack


class JournalsMixin(StoreBase):
    """The journals' methods of `Store`."""

    def ack_seq(self, site: str, locker_id: str, jid: str = "") -> int:
        with self._read() as conn:
            v = conn.execute(
                sa.select(journal_marks.c.ack_seq).where(
                    journal_marks.c.site == site,
                    journal_marks.c.locker_id == locker_id,
                    journal_marks.c.jid == jid,
                )
            ).scalar()
        return v or 0

    def duplicates(self, site: str) -> int:
        """Events received again (same locker, journal and seq) and not stored, for the site."""
        with self._read() as conn:
            v = conn.execute(
                sa.select(sa.func.sum(journal_marks.c.duplicates)).where(
                    journal_marks.c.site == site
                )
            ).scalar()
        return int(v or 0)

    def highest_seq(self, site: str, locker_id: str) -> int:
        """The highest seq stored for the locker, over all its journals (0: none)."""
        with self._read() as conn:
            v = conn.execute(
                sa.select(sa.func.max(events.c.seq)).where(
                    events.c.site == site, events.c.locker_id == locker_id
                )
            ).scalar()
        return int(v or 0)

    def record_refusals(self, site: str, items: list[tuple[str, str, str]]) -> None:
        """Counts what ingest refused: (locker_id, kind in REFUSALS, detail) each; rate-limited
        alerts (see `ingest_refusals`)."""
        if items:
            with self._write() as conn:
                _record_refusals(conn, site, items, engine._now())

    def refusals(self, site: str, since: int = 0) -> list:
        """Rows of `ingest_refusals` (id, locker_id, kind, first_at, last_at, count, detail)
        whose last arrival is at or after `since`, newest first."""
        r = ingest_refusals
        with self._read() as conn:
            return conn.execute(
                sa.select(
                    r.c.id, r.c.locker_id, r.c.kind, r.c.first_at, r.c.last_at, r.c.count,
                    r.c.detail,
                )
                .where(r.c.site == site, r.c.last_at >= since)
                .order_by(r.c.last_at.desc(), r.c.id.desc())
            ).all()  # fmt: skip

    def refusal_counts(self, site: str) -> dict[tuple[str, str], int]:
        """{(locker_id, kind): how many} over everything recorded."""
        r = ingest_refusals
        with self._read() as conn:
            return {
                (row.locker_id, row.kind): int(row.n)
                for row in conn.execute(
                    sa.select(r.c.locker_id, r.c.kind, sa.func.sum(r.c.count).label("n"))
                    .where(r.c.site == site)
                    .group_by(r.c.locker_id, r.c.kind)
                )
            }

    def conflicts(self, site: str) -> list:
        c = event_conflicts
        with self._read() as conn:
            return conn.execute(sa.select(c).where(c.c.site == site).order_by(c.c.id)).all()
