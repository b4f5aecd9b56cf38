"""The audit trail in the store: the chain's head, host actions, the walk that verifies the
trail, retention's redaction, and the host's keys. The chain's pure logic (hashes, contents,
what a redaction must look like) is `lockerctl.trail`; this module reads and writes its rows.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable

import sqlalchemy as sa

from .. import trail
from . import engine
from .engine import StoreBase, StoreError, ensure_site
from .tables import events, host_keys, redactions, trail_entries, trail_head

_REDACT_CHUNK = 2000


# -- the trail's head, actions and redaction (module level: migrations use them too) -----------


def _chain(conn) -> trail.Chain:
    row = conn.execute(
        sa.select(trail_head.c.last_id, trail_head.c.hash)
        .where(trail_head.c.id == 1)
        .with_for_update()
    ).first()
    return trail.Chain(row.last_id, row.hash)


def _save_chain(conn, chain: trail.Chain) -> None:
    conn.execute(
        trail_head.update()
        .where(trail_head.c.id == 1)
        .values(last_id=chain.last_id, hash=chain.head)
    )


def _append_action(conn, site, actor, action, detail, chain=None) -> int:
    own = chain is None
    if own:
        chain = _chain(conn)
    at = engine._now()
    content = trail.action_content(site, at, actor, action, detail)
    entry_id, chash, h = chain.append(content)
    conn.execute(
        trail_entries.insert().values(
            id=entry_id,
            site=site,
            kind=trail.ACTION,
            event_id=None,
            content=content.decode(),
            content_hash=chash,
            hash=h,
            redacted=False,
            at=at,
        )
    )
    if own:
        _save_chain(conn, chain)
    return entry_id


def _entries_with_events():
    e = events
    return sa.select(
        trail_entries,
        e.c.id.label("e_id"),
        e.c.site.label("e_site"),
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
        e.c.jid,
        e.c.mac,
        e.c.unknown_type,
        e.c.hash_v,
    ).select_from(trail_entries.outerjoin(e, e.c.id == trail_entries.c.event_id))


def _redact(conn, site: str, where, actor: str, detail: dict | None = None) -> int:
    """Redacts the site's trail entries matching `where`, in chunks, in id order: each is checked
    against its content hash first (StoreError, nothing redacted, if one fails), its public hash
    recorded in `redactions`, its personal fields blanked; then one `redact` action holds the
    count and the digest. `redact` actions themselves are never redacted (nothing personal).
    Returns the number of entries."""
    chain = _chain(conn)
    action_id = chain.last_id + 1  # this transaction holds the write lock: the next entry
    digest = trail.RedactionDigest()
    last = 0
    while True:
        rows = conn.execute(
            _entries_with_events()
            .where(trail_entries.c.site == site, where, trail_entries.c.id > last)
            .order_by(trail_entries.c.id)
            .limit(_REDACT_CHUNK)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        chunk = _RedactChunk(action_id)
        for r in rows:
            chunk.add(r, digest)
        _record_public_hashes(conn, chunk.records)
        _blank(conn, chunk)
    if digest.count:
        entry = _append_action(
            conn,
            site,
            actor,
            "redact",
            {**(detail or {}), "entries": digest.count, "digest": digest.hexdigest()},
            chain,
        )
        if entry != action_id:
            raise StoreError(f"trail head moved during redaction ({entry} != {action_id})")
        _save_chain(conn, chain)
    return digest.count


class _RedactChunk:
    """What one chunk of `_redact` records and blanks, entry by entry."""

    def __init__(self, action_id: int):
        self.action_id = action_id
        self.records: list[dict] = []
        self.event_ids: list[int] = []
        self.entry_ids: list[int] = []
        self.actions: list[tuple[int, dict]] = []

    def add(self, r, digest: trail.RedactionDigest) -> None:
        content = trail.entry_content(r)
        if r.kind == trail.ACTION and trail.is_redact_action(content):
            return
        if content is None:
            raise StoreError(
                f"trail entry {r.id} has lost its content: run `lockerctl audit verify`;"
                " nothing was redacted"
            )
        if trail.content_hash(content) != r.content_hash:
            raise StoreError(
                f"trail entry {r.id} does not match its hash (edited): run `lockerctl audit"
                " verify`; nothing was redacted"
            )
        public = trail.content_hash(trail.public_content(content))
        digest.add(r.id, public)
        self.records.append({"entry_id": r.id, "public_hash": public, "action_id": self.action_id})
        self.entry_ids.append(r.id)
        if r.kind == trail.EVENT:
            self.event_ids.append(r.e_id)
        elif r.kind == trail.ACTION:
            self.actions.append((r.id, json.loads(content)))


def _record_public_hashes(conn, records: list[dict]) -> None:
    if not records:
        return
    ids = [rec["entry_id"] for rec in records]
    taken = conn.execute(
        sa.select(redactions.c.entry_id).where(redactions.c.entry_id.in_(ids)).limit(1)
    ).first()
    if taken is not None:
        raise StoreError(
            f"trail entry {taken.entry_id} already has a redaction record but is not"
            " redacted (edited): run `lockerctl audit verify`; nothing was redacted"
        )
    conn.execute(redactions.insert(), records)


def _blank(conn, chunk: _RedactChunk) -> None:
    """Blanks the personal fields of a chunk's events and actions and marks its entries."""
    if chunk.event_ids:
        conn.execute(
            events.update()
            .where(events.c.id.in_(chunk.event_ids))
            .values(person=None, by=None, reason=None, mac=None)
        )
    if chunk.entry_ids:
        conn.execute(
            trail_entries.update()
            .where(trail_entries.c.id.in_(chunk.entry_ids))
            .values(redacted=True)
        )
    blanked = []
    for entry_id, obj in chunk.actions:
        if obj.get("detail") is not None:
            obj["detail"] = None
            blanked.append({"b_id": entry_id, "b_content": trail.canonical(obj).decode()})
    if blanked:  # one statement executed for many rows
        conn.execute(
            trail_entries.update()
            .where(trail_entries.c.id == sa.bindparam("b_id"))
            .values(content=sa.bindparam("b_content")),
            blanked,
        )


# -- verifying ----------------------------------------------------------------------------------


def _walk(rows, v: trail.Verifier, check: trail.RedactionCheck, want: set, heads: dict, progress):
    """Feeds every trail row (joined with its event row and redaction record) to `v`."""
    oldest_kept = check.oldest_kept
    EVENT, ACTION, V2 = trail.EVENT, trail.ACTION, trail.EVENT_V2
    # an event row's content fields by position (format 2, the common case: one
    # C call instead of fourteen attribute look-ups per row)
    names = list(rows.keys())
    v2_fields = operator.itemgetter(*(names.index(n) for n in trail.V2_FIELDS))
    v2_content = trail.event_content_v2
    entry_content, legacy_row_edited = trail.entry_content, trail.legacy_row_edited
    for r in rows:
        missing = None
        content = None
        kind, redacted = r.kind, r.redacted
        if kind == EVENT:
            if r.e_id is None:
                missing = f"event row {r.event_id} is missing (deleted)"
            elif r.content is not None:
                missing = "an event entry holding content of its own (edited)"
            else:
                if r.hash_v == V2:
                    content = v2_content(*v2_fields(r))
                else:
                    content = entry_content(r)
                    missing = legacy_row_edited(r)
                if missing:
                    pass
                elif not redacted and r.r_public is None:
                    # the common case, inline: an event as it was stored
                    site, r_at = r.site, r.at
                    kept = oldest_kept.get(site)
                    if kept is None or r_at < kept:
                        oldest_kept[site] = r_at
                else:
                    missing = check.entry(r, content)
        elif kind == ACTION:
            if r.event_id is not None:
                missing = "an action entry pointing at an event row (edited)"
            else:
                content = entry_content(r)
                missing = check.entry(r, content)
        else:
            missing = f"unknown kind {kind!r} (edited)"
        v.feed(r.id, r.content_hash, r.hash, content, bool(redacted), missing)
        if want and r.id in want:
            heads[r.id] = r.hash
        if progress:
            progress(1)


def _check_outside_chain(conn, check: trail.RedactionCheck) -> None:
    """`trail.Broken` for a redaction record or an event row the walk did not account for."""
    if check.digests:
        action_id = min(check.digests)
        raise trail.Broken(
            "-",
            f"redaction records name entry {action_id}, which is no redaction (edited)",
        )
    orphan = conn.execute(
        sa.select(redactions.c.entry_id)
        .select_from(
            redactions.outerjoin(trail_entries, trail_entries.c.id == redactions.c.entry_id)
        )
        .where(trail_entries.c.id.is_(None))
        .limit(1)
    ).first()
    if orphan is not None:
        raise trail.Broken(
            "-",
            f"a redaction record names entry {orphan.entry_id}, which is not there",
        )
    # An event row the chain does not cover was inserted behind its back.
    e = events
    stray = conn.execute(
        sa.select(e.c.id, e.c.locker_id, e.c.seq)
        .select_from(e.outerjoin(trail_entries, trail_entries.c.event_id == e.c.id))
        .where(trail_entries.c.id.is_(None))
        .order_by(e.c.id)
        .limit(1)
    ).first()
    if stray is not None:
        raise trail.Broken(
            "-",
            f"event {stray.id} (locker {stray.locker_id} seq {stray.seq}) is "
            "not in the trail (inserted)",
        )


class TrailMixin(StoreBase):
    """The trail's methods of `Store`."""

    def record_action(self, site: str, actor: str, action: str, detail: dict) -> int:
        """Appends a host action (who did what, with a JSON-able detail) to the trail."""
        with self._write() as conn:
            ensure_site(conn, site)
            return _append_action(conn, site, actor, action, detail)

    def trail_actions(self, site: str, limit: int = 100) -> list[dict]:
        """The latest host actions, newest first (for the dashboard)."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(trail_entries.c.id, trail_entries.c.content, trail_entries.c.redacted)
                .where(trail_entries.c.site == site, trail_entries.c.kind == trail.ACTION)
                .order_by(trail_entries.c.id.desc())
                .limit(limit)
            ).all()
        out = []
        for r in rows:
            d = json.loads(r.content) if r.content else {}
            d["id"] = r.id
            d["redacted"] = bool(r.redacted)
            out.append(d)
        return out

    def verify_trail(self, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
        """Walks the whole trail in order; (count, head hash), or raises `trail.Broken`.

        Besides every link and every content hash: what stays of each redacted entry must match
        its recorded public hash, and each `redact` action's digest the entries it covers; an
        event row stored before migration 0005 must have the `sort_ts` its times give (later
        rows hold it in their content)."""
        count, head, _ = self.verify_trail_at((), progress)
        return count, head

    def verify_trail_at(
        self, at: Iterable[int], progress: Callable[[int], None] | None = None
    ) -> tuple[int, str, dict[int, str]]:
        """`verify_trail`, also returning {n: the chain's hash after entry n} for each n in `at`
        that the trail reaches (what a checkpoint of n entries must name)."""
        want = set(at)
        heads: dict[int, str] = {}
        v = trail.Verifier()
        q = (
            _entries_with_events()
            .add_columns(
                redactions.c.public_hash.label("r_public"),
                redactions.c.action_id.label("r_action"),
            )
            .outerjoin(redactions, redactions.c.entry_id == trail_entries.c.id)
            .order_by(trail_entries.c.id)
        )
        check = trail.RedactionCheck()
        with self.engine.connect() as conn:
            with conn.begin():
                rows = conn.execution_options(yield_per=2000, stream_results=True).execute(q)
                _walk(rows, v, check, want, heads, progress)
                head = conn.execute(
                    sa.select(trail_head.c.last_id, trail_head.c.hash).where(trail_head.c.id == 1)
                ).first()
                v.finish(head.last_id if head else None, head.hash if head else None)
                _check_outside_chain(conn, check)
        return v.count, v.head, heads

    def trail_count(self) -> int:
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(trail_entries)).scalar()

    def redact_before(self, site: str, cutoff_ts: int, actor: str = "retention") -> int:
        """The retention hook: blanks the personal fields (person, by, reason; an action's
        detail) of the site's trail entries written before `cutoff_ts` and marks them redacted,
        keeping what stays of each tamper-evident (`_redact`). The chain still verifies.
        Returns the number of entries redacted; StoreError (nothing redacted) if one of them no
        longer matches its hash."""
        with self._write() as conn:
            ensure_site(conn, site)
            where = sa.and_(trail_entries.c.at < cutoff_ts, trail_entries.c.redacted.is_(False))
            return _redact(conn, site, where, actor, {"before": cutoff_ts})

    def host_key(
        self, site: str, name: str, make: Callable[[], tuple[bytes, bytes]]
    ) -> tuple[bytes, bytes]:
        """(private, public) of the host key `name`, made with `make()` and kept the first time
        it is asked for (one transaction: two processes asking at once get the same key)."""
        k = host_keys
        with self._write() as conn:
            row = conn.execute(
                sa.select(k.c.private_key, k.c.public_key).where(k.c.name == name)
            ).first()
            if row is None:
                private, public = make()
                conn.execute(
                    k.insert().values(
                        name=name, private_key=private, public_key=public, created_at=engine._now()
                    )
                )
                return private, public
        return bytes(row.private_key), bytes(row.public_key)

    def host_public_key(self, name: str) -> bytes | None:
        with self._read() as conn:
            v = conn.execute(
                sa.select(host_keys.c.public_key).where(host_keys.c.name == name)
            ).scalar()
        return bytes(v) if v is not None else None

    def trail_hash_at(self, n: int) -> str | None:
        """The recorded chain hash after entry `n` (None: no such entry). Not verified: for the
        cheap look before a checkpoint is signed; `verify_trail_at` is the check."""
        if n == 0:
            return trail.GENESIS
        with self._read() as conn:
            return conn.execute(
                sa.select(trail_entries.c.hash).where(trail_entries.c.id == n)
            ).scalar()

    def trail_head(self) -> tuple[int, str]:
        """(entries written, head hash) as recorded at the last append."""
        with self._read() as conn:
            r = conn.execute(
                sa.select(trail_head.c.last_id, trail_head.c.hash).where(trail_head.c.id == 1)
            ).first()
        return (r.last_id, r.hash) if r else (0, trail.GENESIS)
