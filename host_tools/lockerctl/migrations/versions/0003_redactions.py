"""Redaction records: one `redactions` row per redacted trail entry, the hash of what stays of it
(its public content: the content without the personal fields) and the `redact` action whose
digest covers it.

Entries redacted before this table existed get their rows now, as they stand: per site, one
`redact` action by the actor `migration`, detail {"legacy": true, "entries": N, "digest": D},
appended to the chain. The chain's format (canonical JSON, SHA-256 links, the redaction digest)
is written out here as it was when this revision was made, so that the revision never changes.
"""

import hashlib
import json
import time

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "0003_redactions"
down_revision: str | None = "0002_dashboard"
branch_labels = None
depends_on = None

CHUNK = 2000
EVENT, ACTION = "event", "action"
PERSONAL = {EVENT: ("person", "by", "reason", "mac"), ACTION: ("detail",)}

metadata = sa.MetaData()

redactions = sa.Table(
    "redactions",
    metadata,
    sa.Column("entry_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("public_hash", sa.String(64), nullable=False),
    sa.Column("action_id", sa.BigInteger, nullable=False),
)

trail = sa.Table(
    "trail",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("event_id", sa.Integer, nullable=True),
    sa.Column("content", sa.Text, nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("redacted", sa.Boolean, nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
)

trail_head = sa.Table(
    "trail_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("site", sa.String(64)),
    sa.Column("locker_id", sa.String(28)),
    sa.Column("seq", sa.BigInteger),
    sa.Column("ts", sa.BigInteger),
    sa.Column("type", sa.String(32)),
    sa.Column("bay", sa.Integer),
    sa.Column("person", sa.String(255)),
    sa.Column("by", sa.String(255)),
    sa.Column("reason", sa.String(255)),
    sa.Column("received_at", sa.BigInteger),
    sa.Column("sort_ts", sa.BigInteger),
    sa.Column("jid", sa.String(16)),
    sa.Column("mac", sa.String(32)),
    sa.Column("unknown_type", sa.Boolean),
    sa.Column("hash_v", sa.SmallInteger),
)


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def link(prev_hash: str, chash: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(chash)).hexdigest()


def public_hash(content: bytes) -> str:
    obj = json.loads(content)
    for name in PERSONAL.get(obj.get("kind"), ()):
        obj.pop(name, None)
    return content_hash(canonical(obj))


def event_content(r) -> bytes:
    """An event entry's content from its row: format 0 (before 0005) or 2."""
    obj = {
        "kind": EVENT,
        "site": r.e_site,
        "locker": r.locker_id,
        "seq": r.seq,
        "ts": r.ts,
        "type": r.type,
        "bay": r.bay,
        "person": r.person,
        "by": r.by,
        "reason": r.reason,
        "received_at": r.received_at,
    }
    if getattr(r, "hash_v", 0):
        obj |= {"jid": r.jid, "mac": r.mac, "sort_ts": r.sort_ts, "unknown_type": r.unknown_type}
        obj["v"] = 2
    return canonical(obj)


def upgrade() -> None:
    conn = op.get_bind()
    redactions.create(conn, checkfirst=True)
    sites = conn.execute(sa.select(trail.c.site).where(trail.c.redacted.is_(True)).distinct())
    for site in list(sites.scalars()):
        record_legacy(conn, site)


def record_legacy(conn, site: str) -> None:
    """The redaction records of `site`'s entries redacted without them, under one action."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("events")}
    e = events
    # a store from before 0005 has no jid, mac, unknown_type or hash_v (nor sort_ts, earlier)
    columns: list[sa.ColumnElement] = [e.c.id.label("e_id"), e.c.site.label("e_site")]
    columns += [c for c in e.c if c.name not in ("id", "site") and c.name in have]
    head = conn.execute(
        sa.select(trail_head.c.last_id, trail_head.c.hash)
        .where(trail_head.c.id == 1)
        .with_for_update()
    ).one()
    action_id = head.last_id + 1
    digest, count, last = hashlib.sha256(), 0, 0
    query = sa.select(trail, *columns).select_from(trail.outerjoin(e, e.c.id == trail.c.event_id))
    while True:
        rows = conn.execute(
            query.where(trail.c.site == site, trail.c.redacted.is_(True), trail.c.id > last)
            .order_by(trail.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        records = []
        for r in rows:
            if r.kind == EVENT:
                content = None if r.e_id is None else event_content(r)
            else:
                content = r.content.encode() if r.content is not None else None
            if content is None:
                continue  # already broken: `audit verify` reports it
            public = public_hash(content)
            digest.update(f"{r.id} {public}\n".encode())
            count += 1
            records.append({"entry_id": r.id, "public_hash": public, "action_id": action_id})
        if records:
            ids = [rec["entry_id"] for rec in records]
            taken = conn.execute(
                sa.select(redactions.c.entry_id).where(redactions.c.entry_id.in_(ids)).limit(1)
            ).first()
            if taken is not None:
                raise CommandError(
                    f"trail entry {taken.entry_id} already has a redaction record but is not"
                    " redacted (edited): run `lockerctl audit verify`; nothing was redacted"
                )
            conn.execute(redactions.insert(), records)
    if not count:
        return
    at = int(time.time())
    detail = {"legacy": True, "entries": count, "digest": digest.hexdigest()}
    content = canonical(
        {
            "kind": ACTION,
            "site": site,
            "at": at,
            "actor": "migration",
            "action": "redact",
            "detail": detail,
        }
    )
    chash = content_hash(content)
    new_head = link(head.hash, chash)
    conn.execute(
        trail.insert().values(
            id=action_id,
            site=site,
            kind=ACTION,
            event_id=None,
            content=content.decode(),
            content_hash=chash,
            hash=new_head,
            redacted=False,
            at=at,
        )
    )
    conn.execute(
        trail_head.update().where(trail_head.c.id == 1).values(last_id=action_id, hash=new_head)
    )


def downgrade() -> None:
    raise NotImplementedError(
        "0003_redactions has no downgrade (its `redact` actions are in the trail for good)"
    )
