"""Ingest: a batch of locker events stored in one transaction, their trail entries appended.

Two paths store the same rows and give the same `IngestResult`. `Store.ingest_journals` is the
single writer's: it takes the chain's head first and does everything under it.
`ingest_shared(store, site, batch, max_ahead)` is for several workers at once:
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

from collections.abc import Iterable

import sqlalchemy as sa

from .. import trail
from . import engine
from .chain import _chain, _save_chain
from .engine import StoreBase, _insert_many, _int_or_none, _text, ensure_site
from .journals import (
    _EVENT_COLUMNS,
    _TRAIL_COLUMNS,
    IngestResult,
    _advance,
    _continued,
    _insert_events,
    _keep_conflict,
    _legacy_acks,
    _marks,
    _record_refusals,
    _same_event,
    _stored_events,
    group_batch,
)
from .tables import EVENT_TEXT, events, journal_marks, sites, trail_entries

_KEY = ("site", "locker_id", "jid", "seq")


class IngestMixin(StoreBase):
    """The single writer's ingest of `Store`."""

    def ingest(self, site: str, batch: Iterable[tuple[str, dict]]) -> dict[str, int]:
        """`ingest_journals` for callers that know lockers, not journals: {locker_id: ack_seq}
        (of the locker's last journal in the batch; events without `jid` are journal "")."""
        result = self.ingest_journals(site, batch)
        return {locker_id: ack for (locker_id, _), ack in result.acks.items()}

    def ingest_journals(
        self, site: str, batch: Iterable[tuple[str, dict]], max_ahead: int | None = None
    ) -> IngestResult:
        """Stores a batch of (locker_id, event) in one transaction; see the module doc.

        An event is identified by (site, locker, `jid`, `seq`): `jid` is the locker's journal
        id (absent: ""), so a new board or a wiped journal starting again at seq 1 is a new
        sequence, stored in full. An event already stored with the same content is counted as a
        duplicate; with other content it is a conflict: kept in `event_conflicts` (and as a
        `conflict` refusal), not stored, and its journal gets no ack from this batch (`acks`
        leaves it out), since an ack would tell the locker it was stored. With `max_ahead`, a
        seq more than that beyond its journal's watermark is refused (`seq_ahead`): no journal
        holds that many unacknowledged events. Each stored event is appended to the trail
        (content format 2). `acks` has, for every other journal in the batch, the highest N
        such that its seqs 1..N are all stored (for a locker's first journal with an id that
        goes on from its journal of before ids, N from that one's watermark: `_continued`).

        The work is done in a handful of statements for the whole batch, however many lockers
        it holds: the marks and each journal's highest stored seq in one query; a look-up only
        for seqs at or below that (resends, compared with what is stored); one insert of every
        new event (ids returned); one of their trail entries; one update of the marks. Events
        and trail entries are written journals in order of first appearance, seqs ascending.
        """
        result = IngestResult()
        by_journal, dups = group_batch(batch, result)
        received = engine._now()
        with self._write() as conn:
            ensure_site(conn, site)
            chain = _chain(conn)
            _ingest_journals(conn, chain, site, by_journal, dups, received, max_ahead, result)
            _save_chain(conn, chain)
        return result


def _ingest_journals(conn, chain, site, by_journal, dups, received, max_ahead, result) -> None:
    marks = _marks(conn, site, list(by_journal))
    legacy = _legacy_acks(conn, site, by_journal, marks)
    items = by_journal.items()
    rows, conflicts = _fresh_rows(
        conn, site, items, marks, legacy, dups, received, max_ahead, result, True
    )
    new_seqs: dict[tuple[str, str], list[int]] = {}
    ids: dict[tuple[str, str, int], int] = {}
    if rows:
        id_list = _insert_events(conn, site, rows)
        new_seqs = _append_entries(conn, chain, site, rows, id_list, received)
        result.stored = len(rows)
        if result.pending_conflicts:
            ids = {(r[1], r[11], r[2]): i for r, i in zip(rows, id_list, strict=True)}
    _write_marks_alone(conn, site, by_journal, dups, marks, legacy, new_seqs, result)
    _keep_conflicts(conn, site, conflicts, ids, received, result)


def _fresh_rows(conn, site, items, marks, legacy, dups, received, max_ahead, result, all_dups):
    """(the new events of `items` ((locker, jid), {seq: event}) as rows in `_EVENT_COLUMNS`
    order, in the order to write them; the conflicts with rows stored: (key, seq, event
    received, id of the row stored)). Counts each journal's duplicates into `dups` (with
    `all_dups`, the stored count too) and its refused seqs into `result`."""
    rows: list[tuple] = []
    add = rows.append
    conflicts = []
    v2 = trail.EVENT_V2
    for key, fresh in items:
        locker_id, jid = key
        ack, stored_dups, _, top = marks[key]
        seqs = sorted(fresh)
        # Only a seq at or below the highest stored one can be stored already (a resend):
        # look those up, with what was stored, nothing else.
        maybe = [s for s in seqs if s <= top]
        stored = _stored_events(conn, site, locker_id, jid, maybe) if maybe else {}
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
            # `_int_or_none` and `_text` of each field, called only where a value is not
            # already what they would return (an int; None or a str within the limit): what
            # `payloads.check_event` hands over never needs them. Measured: these rows take 0.8 µs
            # an event, 1.1 with a call per field.
            g = ev.get
            ts, etype, bay, person, by, reason, mac = (
                g("ts"), g("type"), g("bay"), g("person"), g("by"), g("reason"), g("mac")
            )  # fmt: skip
            if type(ts) is not int:
                ts = _int_or_none(ts)
            if type(etype) is not str or not 0 < len(etype) <= 32:
                etype = _text(etype, 32) or "unknown"
            if type(bay) is not int:
                bay = _int_or_none(bay)
            if person is not None and (type(person) is not str or len(person) > EVENT_TEXT):
                person = _text(person, EVENT_TEXT)
            if by is not None and (type(by) is not str or len(by) > EVENT_TEXT):
                by = _text(by, EVENT_TEXT)
            if reason is not None and (type(reason) is not str or len(reason) > EVENT_TEXT):
                reason = _text(reason, EVENT_TEXT)
            if mac is not None and (type(mac) is not str or len(mac) > 32):
                mac = _text(mac, 32)
            add(
                (
                    site,
                    locker_id,
                    seq,
                    ts,
                    etype,
                    bay,
                    person,
                    by,
                    reason,
                    received,
                    received if ts is None else ts,
                    jid,
                    mac,
                    bool(g("unknown_type")),
                    v2,
                )
            )
        # the shared path adds the stored count in its part 2, under the head
        dups[key] += stored_dups + n if all_dups else n
    return rows, conflicts


def _append_entries(conn, chain, site, rows, ids, received) -> dict[tuple[str, str], list[int]]:
    """Appends the new events' trail entries to `chain` (`ids`: each row's events.id, in
    order); {(locker, jid): seqs appended}."""
    content_of = trail.event_content_v2  # every row is of content format 2 (`_fresh_rows`)
    first = chain.last_id + 1
    hashes = chain.extend(
        [
            content_of(
                site, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], received, r[11], r[12],
                r[10], r[13],
            )
            for r in rows
        ]
    )  # fmt: skip
    kind = trail.EVENT
    entries = [
        (first + i, site, kind, event_id, None, chash, h, False, received)
        for i, (event_id, (chash, h)) in enumerate(zip(ids, hashes, strict=True))
    ]
    _insert_many(conn, trail_entries, _TRAIL_COLUMNS, entries)
    new_seqs: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        journal_seqs = new_seqs.get((r[1], r[11]))
        if journal_seqs is None:
            new_seqs[(r[1], r[11])] = [r[2]]
        else:
            journal_seqs.append(r[2])
    return new_seqs


def _write_marks_alone(conn, site, by_journal, dups, marks, legacy, new_seqs, result) -> None:
    """The single writer's watermarks: advanced in memory where nothing lay beyond them."""
    inserts: list[dict] = []
    updates: list[dict] = []
    for key in by_journal:
        locker_id, jid = key
        ack, _, known, top = marks[key]
        if top <= ack:
            # Nothing was stored beyond the watermark before this batch: what lies beyond it
            # now is exactly what this batch stored (ascending), so advance in memory.
            for seq in new_seqs.get(key, ()):
                if seq != ack + 1:
                    break
                ack = seq
        else:
            ack = _advance(conn, site, locker_id, jid, ack)
        if ack == 0 and key in legacy:
            ack = _continued(conn, site, locker_id, jid, legacy[key])
        result.acks[key] = ack
        mark = {"b_locker": locker_id, "b_jid": jid, "b_ack": ack, "b_dups": dups[key]}
        (updates if known else inserts).append(mark)
    m = journal_marks
    _insert_marks(conn, site, inserts)
    if updates:
        conn.execute(
            m.update()
            .where(
                m.c.site == site,
                m.c.locker_id == sa.bindparam("b_locker"),
                m.c.jid == sa.bindparam("b_jid"),
            )
            .values(ack_seq=sa.bindparam("b_ack"), duplicates=sa.bindparam("b_dups")),
            updates,
        )


def _insert_marks(conn, site, inserts: list[dict]) -> None:
    if inserts:
        m = journal_marks
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


def _keep_conflicts(conn, site, conflicts, ids, received, result) -> None:
    """Keeps the batch's conflicts and counts its refusals."""
    # Two versions of one seq in the same batch: the first is handled above, the others
    # conflict with it.
    for key, seq, ev in result.pending_conflicts:
        conflicts.append((key, seq, ev, ids.get((key[0], key[1], seq))))
    result.pending_conflicts = []
    for key, seq, ev, event_id in conflicts:
        _keep_conflict(conn, site, key, seq, ev, event_id, received)
        result.conflicts.setdefault(key, []).append(seq)
    if result.refused:
        _record_refusals(
            conn,
            site,
            [(lid, kind, f"journal {jid} seq {seq}") for lid, jid, seq, kind in result.refused],
            received,
        )


# -- several workers at once (module doc) --------------------------------------------------------


def ingest_shared(store, site: str, batch, max_ahead: int | None = None) -> IngestResult:
    """`Store.ingest_journals` for one of several concurrent workers (module doc)."""
    result = IngestResult()
    by_journal, dups = group_batch(batch, result)
    received = engine._now()
    with store._write() as conn:
        _ensure_site_shared(conn, site)
        _ingest(conn, site, by_journal, dups, received, max_ahead, result)
    return result


def _ensure_site_shared(conn, site: str) -> None:
    """The site's row, which two workers' first batches may both find missing."""
    if conn.execute(sa.select(sites.c.name).where(sites.c.name == site)).first() is None:
        cols = ("name", "config_version", "created_at")
        _insert_many(conn, sites, cols, [(site, 0, engine._now())], (sites.c.name,), ("name",))


def _ingest(conn, site, by_journal, dups, received, max_ahead, result) -> None:
    # -- part 1: without the chain ----------------------------------------------------------
    marks = _marks(conn, site, list(by_journal))
    legacy = _legacy_acks(conn, site, by_journal, marks)
    items = sorted(by_journal.items())
    rows, conflicts = _fresh_rows(
        conn, site, items, marks, legacy, dups, received, max_ahead, result, False
    )
    rows, ids = _insert_new(conn, site, by_journal, rows, dups, conflicts)
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
    _write_marks(conn, site, by_journal, dups, legacy, result)
    _keep_conflicts(conn, site, conflicts, ids, received, result)
    _save_chain(conn, chain)


def _insert_new(conn, site, by_journal, rows, dups, conflicts):
    """Inserts the new rows, skipping those another worker stored meanwhile (counted as
    duplicates or conflicts); (the rows this batch stored, {(locker, jid, seq): id})."""
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
            stored = _stored_events(conn, site, key[0], key[1], seqs)
            for seq in seqs:
                row = stored.get(seq)
                if row is not None and _same_event(row, by_journal[key][seq]):
                    dups[key] += 1
                else:
                    conflicts.append((key, seq, by_journal[key][seq], row and row["id"]))
        rows = [r for r in rows if (r[1], r[11], r[2]) in ids]
    return rows, ids


def _write_marks(conn, site, by_journal, dups, legacy, result) -> None:
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
            ack = _continued(conn, site, locker_id, jid, legacy[key])
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
    with one query per hundred journals (`journals._advance` asks once per journal): the seqs
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
