"""Ingest by several workers at once (`lockerctl serve --workers N`, docs/scale.md).

`ingest_shared(store, site, batch, max_ahead)` does what `Store.ingest_journals` does (same
arguments, same `IngestResult`, same rows), written so that several processes can run it on one
store at the same time, each with its share of the lockers' stream (an MQTT shared subscription
hands each message to one of them; a locker's events are spread over all of them, and a resent
event may reach another worker than the first copy).

The audit trail is one chain, numbered without gaps, and an entry's hash depends on the one
before: appending is serial by nature, and an entry must never be numbered by a transaction that
then rolls back. So each batch is one transaction in two parts:

1. **Without the chain** (workers in parallel): the journals' marks as they are (only to choose
   which seqs to look up as resends, and for `max_ahead`), the look-up of resends, then one
   `INSERT ... ON CONFLICT (site, locker_id, jid, seq) DO NOTHING RETURNING` of every new event.
   The unique key settles a race between two workers holding the same event: the second waits for
   the first's transaction and, if it committed, stores nothing (it finds the row and counts a
   duplicate, or a conflict if the content differs). Each entry's content and content hash are
   computed here too: they do not depend on the chain.
2. **With the chain** (one writer at a time, from `SELECT ... FOR UPDATE` of the chain's head row
   to the commit): link the entries (one SHA-256 each), insert them, then compute each journal's
   watermark again from what is stored (`_advance`: this transaction sees every batch committed
   before it took the head, and its own rows; a batch still in part 1 will count itself when it
   gets here), write the marks (`duplicates` added to, not overwritten), conflicts, refusals and
   the head. The commit releases the head.

Every ingest transaction takes the head, so commits are ordered by it: the last one sees every
event stored and its ack is the true watermark. Acks are sent after the commit, as always. Locks
are taken in one order (event keys in part 1, sorted; the head; then marks rows), so workers do
not deadlock one another; PostgreSQL would find one anyway, and the batch would be retried.

On SQLite every write transaction is `BEGIN IMMEDIATE`, so there the two parts run one worker at
a time, the whole transaction (`lockerctl serve` refuses `--workers` above 1 on SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa

from . import trail
from .store import (
    _EVENT_COLUMNS,
    _TRAIL_COLUMNS,
    EVENT_TEXT,
    IngestResult,
    _chain,
    _insert_many,
    _int_or_none,
    _now,
    _record_refusals,
    _same_event,
    _save_chain,
    _text,
    events,
    group_batch,
    journal_marks,
    sites,
    trail_entries,
)

_KEY = ("site", "locker_id", "jid", "seq")


def ingest_shared(store, site: str, batch, max_ahead: int | None = None) -> IngestResult:
    """`Store.ingest_journals` for one of several concurrent workers (module doc)."""
    result = IngestResult()
    by_journal, dups = group_batch(batch, result)
    received = _now()
    with store._write() as conn:
        _ensure_site(conn, site)
        _ingest(store, conn, site, by_journal, dups, received, max_ahead, result)
    return result


def _ensure_site(conn, site: str) -> None:
    """The site's row, which two workers' first batches may both find missing."""
    if conn.execute(sa.select(sites.c.name).where(sites.c.name == site)).first() is None:
        cols = ("name", "config_version", "created_at")
        _insert_many(conn, sites, cols, [(site, 0, _now())], (sites.c.name,), ("name",))


def _ingest(store, conn, site, by_journal, dups, received, max_ahead, result) -> None:
    # -- part 1: without the chain ----------------------------------------------------------
    marks = store._marks(conn, site, list(by_journal))
    legacy = store._legacy_acks(conn, site, by_journal, marks)
    rows: list[tuple] = []
    conflicts = []  # (key, seq, event received, id of the row stored)
    for key, fresh in sorted(by_journal.items()):
        locker_id, jid = key
        ack, _, _, top = marks[key]
        seqs = sorted(fresh)
        maybe = [s for s in seqs if s <= top]
        stored = store._stored_events(conn, site, locker_id, jid, maybe) if maybe else {}
        n = 0
        for seq in seqs:
            ev = fresh[seq]
            row = stored.get(seq)
            if row is not None:
                if _same_event(row, ev):
                    n += 1
                else:
                    conflicts.append((key, seq, ev, row["id"]))
                continue
            if seq <= ack:
                n += 1  # below the watermark, row gone: `audit verify` reports the deletion
                continue
            if max_ahead is not None and seq > max(ack, legacy.get(key, 0)) + max_ahead:
                result.refused.append((locker_id, jid, seq, "seq_ahead"))
                continue
            ts = _int_or_none(ev.get("ts"))
            rows.append(
                (
                    site,
                    locker_id,
                    seq,
                    ts,
                    _text(ev.get("type"), 32) or "unknown",
                    _int_or_none(ev.get("bay")),
                    _text(ev.get("person"), EVENT_TEXT),
                    _text(ev.get("by"), EVENT_TEXT),
                    _text(ev.get("reason"), EVENT_TEXT),
                    received,
                    ts if ts is not None else received,
                    jid,
                    _text(ev.get("mac"), 32),
                    bool(ev.get("unknown_type")),
                    trail.EVENT_V2,
                )
            )
        dups[key] += n  # this batch's duplicates (added to the stored count in part 2)
    e = events
    ids: dict[tuple[str, str, int], int] = {}
    if rows:
        returned = _insert_many(
            conn, e, _EVENT_COLUMNS, rows, (e.c.id, e.c.locker_id, e.c.jid, e.c.seq), _KEY
        )
        ids = {(lid, jid, seq): id_ for id_, lid, jid, seq in returned}
    if len(ids) < len(rows):
        # Stored meanwhile by another worker (committed: ON CONFLICT waited for it).
        lost: dict[tuple[str, str], list[int]] = {}
        for r in rows:
            if (r[1], r[11], r[2]) not in ids:
                lost.setdefault((r[1], r[11]), []).append(r[2])
        for key, seqs in lost.items():
            stored = store._stored_events(conn, site, key[0], key[1], seqs)
            for seq in seqs:
                row = stored.get(seq)
                if row is not None and _same_event(row, by_journal[key][seq]):
                    dups[key] += 1
                else:
                    conflicts.append((key, seq, by_journal[key][seq], row and row["id"]))
        rows = [r for r in rows if (r[1], r[11], r[2]) in ids]
    hashes = []
    content_of, content_hash = trail.event_content, trail.content_hash
    for r in rows:
        _, locker_id, seq, ts, type_, bay, person, by, reason, _, sort_ts = r[:11]
        content = content_of(
            site, locker_id, seq, ts, type_, bay, person, by, reason, received,
            trail.EVENT_V2, r[11], r[12], sort_ts, r[13],
        )  # fmt: skip
        hashes.append(content_hash(content))

    # -- part 2: with the chain, one writer at a time until the commit ----------------------
    chain = _chain(conn)
    last_id, head = chain.last_id, chain.head
    link, kind = trail.link, trail.EVENT
    entries = []
    for r, chash in zip(rows, hashes, strict=True):
        last_id += 1
        head = link(head, chash)
        locker_id, jid, seq = r[1], r[11], r[2]
        entries.append(
            (last_id, site, kind, ids[(locker_id, jid, seq)], None, chash, head, False, received)
        )
    if entries:
        _insert_many(conn, trail_entries, _TRAIL_COLUMNS, entries)
    chain.last_id, chain.head = last_id, head
    result.stored = len(rows)
    _write_marks(store, conn, site, by_journal, dups, legacy, result)
    for key, seq, ev in result.pending_conflicts:
        conflicts.append((key, seq, ev, ids.get((key[0], key[1], seq))))
    result.pending_conflicts = []
    for key, seq, ev, event_id in conflicts:
        store._keep_conflict(conn, site, key, seq, ev, event_id, received)
        result.conflicts.setdefault(key, []).append(seq)
    if result.refused:
        _record_refusals(
            conn,
            site,
            [(lid, k, f"journal {jid} seq {seq}") for lid, jid, seq, k in result.refused],
            received,
        )
    _save_chain(conn, chain)


def _write_marks(store, conn, site, by_journal, dups, legacy, result) -> None:
    """Each journal's watermark from what is stored now (under the chain's head: every batch
    committed before is visible), and its duplicates added to."""
    m = journal_marks
    known: dict[tuple[str, str], int] = {}
    locker_ids = sorted({lid for lid, _ in by_journal})
    for i in range(0, len(locker_ids), 500):
        for r in conn.execute(
            sa.select(m.c.locker_id, m.c.jid, m.c.ack_seq).where(
                m.c.site == site, m.c.locker_id.in_(locker_ids[i : i + 500])
            )
        ):
            known[(r.locker_id, r.jid)] = r.ack_seq
    inserts: list[dict] = []
    updates: list[dict] = []
    advanced = _advance_all(conn, site, {key: known.get(key, 0) for key in by_journal})
    for key in sorted(by_journal):
        locker_id, jid = key
        ack = advanced[key]
        if ack == 0 and key in legacy:
            ack = store._continued(conn, site, locker_id, jid, legacy[key])
        result.acks[key] = ack
        mark = {"b_locker": locker_id, "b_jid": jid, "b_ack": ack, "b_dups": dups[key]}
        (updates if key in known else inserts).append(mark)
    if inserts:
        conn.execute(
            m.insert().values(
                site=site,
                locker_id=sa.bindparam("b_locker"),
                jid=sa.bindparam("b_jid"),
                ack_seq=sa.bindparam("b_ack"),
                duplicates=sa.bindparam("b_dups"),
            ),
            inserts,
        )
    if updates:
        conn.execute(
            m.update()
            .where(
                m.c.site == site,
                m.c.locker_id == sa.bindparam("b_locker"),
                m.c.jid == sa.bindparam("b_jid"),
            )
            .values(
                ack_seq=sa.func.greatest(m.c.ack_seq, sa.bindparam("b_ack"))
                if conn.dialect.name == "postgresql"
                else sa.func.max(m.c.ack_seq, sa.bindparam("b_ack")),
                duplicates=m.c.duplicates + sa.bindparam("b_dups"),
            ),
            updates,
        )


def _advance_all(conn, site: str, acks: dict) -> dict:
    """{journal: its watermark moved over every contiguous seq stored after `acks[journal]`},
    with one query per hundred journals (`Store._advance` asks once per journal): the seqs
    beyond each watermark in runs of consecutive numbers (`seq - row_number()` is the same
    along a run), one row per run; the run that begins right after the watermark moves it."""
    e = events
    out = dict(acks)
    keys = sorted(acks)
    for i in range(0, len(keys), 100):
        chunk = keys[i : i + 100]
        where = sa.or_(
            *(
                sa.and_(e.c.locker_id == lid, e.c.jid == jid, e.c.seq > acks[(lid, jid)])
                for lid, jid in chunk
            )
        )
        run = (e.c.seq - sa.func.row_number().over(
            partition_by=(e.c.locker_id, e.c.jid), order_by=e.c.seq
        )).label("run")  # fmt: skip
        beyond = (
            sa.select(e.c.locker_id, e.c.jid, e.c.seq, run)
            .where(e.c.site == site, where)
            .subquery()
        )
        q = sa.select(
            beyond.c.locker_id, beyond.c.jid, sa.func.min(beyond.c.seq), sa.func.max(beyond.c.seq)
        ).group_by(beyond.c.locker_id, beyond.c.jid, beyond.c.run)
        for lid, jid, first, last in conn.execute(q):
            key = (lid, jid)
            if first == acks[key] + 1:
                out[key] = last
    return out
