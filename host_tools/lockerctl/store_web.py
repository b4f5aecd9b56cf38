"""The dashboard's queries on the store (moved out of the web's routes): every function takes a
`Store` and uses its tables; the web layer (`lockerctl.web`) writes no SQL.

API tokens (`api_tokens`, migration `0014_api_tokens`): a token is shown once when it is made;
the store keeps only its SHA-256, its owner's username, a label and when it was made and last
used. Removing the account removes its tokens (`Accounts.remove_user` ends its sessions; the
token lookup also checks the account still exists).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from . import store as store_mod
from .store import events, lockers, metadata, people, sites, trail_head, users

TOKEN_PREFIX = "clt_"  # so a leaked token is recognisable (secret scanners, logs)
MAX_TOKENS_PER_ACCOUNT = 20
MAX_LABEL = 64

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("label", sa.String(MAX_LABEL), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("last_used_at", sa.BigInteger, nullable=True),
    sa.Index("ix_api_tokens_user", "site", "username"),
)


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
        store._events_query(site, start, end, locker, person)
        .order_by(events.c.received_at.desc(), events.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    with store._read() as conn:
        return conn.execute(q).all()


def recent_events(store, site: str, limit: int) -> list:
    """The site's latest events by the time the host received them, newest first (rows as
    `Store.events` gives them; the index on (site, received_at) serves it)."""
    q = (
        store._events_query(site)
        .order_by(events.c.received_at.desc(), events.c.id.desc())
        .limit(limit)
    )
    with store._read() as conn:
        return conn.execute(q).all()


def events_after(store, site: str, after: int, limit: int) -> list:
    """Events with an id above `after`, oldest first, at most `limit` (for API clients that
    follow the trail by id)."""
    q = store._events_query(site).where(events.c.id > after).order_by(events.c.id).limit(limit)
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


# -- API tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiToken:
    id: int
    username: str
    label: str
    created_at: int
    created_by: str
    last_used_at: int | None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_row(r) -> ApiToken:
    return ApiToken(r.id, r.username, r.label, r.created_at, r.created_by, r.last_used_at)


def add_token(store, site: str, username: str, label: str, actor: str) -> tuple[str, ApiToken]:
    """A new API token for the account `username`: (the token, shown once; its record).
    StoreError for an unknown account, a bad label or too many tokens."""
    from .bounds import BoundError, check_text

    label = (label or "").strip() or "API token"
    try:
        check_text(label, "the label", MAX_LABEL)
    except BoundError as err:
        raise store_mod.StoreError(str(err)) from None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = int(time.time())
    with store._write() as conn:
        if (
            conn.execute(
                sa.select(users.c.id).where(users.c.site == site, users.c.username == username)
            ).first()
            is None
        ):
            raise store_mod.StoreError(f"no account {username!r}")
        held = conn.execute(
            sa.select(sa.func.count()).where(
                api_tokens.c.site == site, api_tokens.c.username == username
            )
        ).scalar()
        if held >= MAX_TOKENS_PER_ACCOUNT:
            raise store_mod.StoreError(
                f"{username} already has {MAX_TOKENS_PER_ACCOUNT} API tokens: revoke one first"
            )
        tid = conn.execute(
            api_tokens.insert().values(
                site=site,
                token_hash=_token_hash(token),
                username=username,
                label=label,
                created_at=now,
                created_by=actor[:80],
            )
        ).inserted_primary_key[0]
    store.record_action(
        site, actor, "api_token_add", {"username": username, "token": tid, "label": label}
    )
    return token, ApiToken(tid, username, label, now, actor[:80], None)


def tokens(store, site: str, username: str | None = None) -> list[ApiToken]:
    """The site's API tokens (of one account), oldest first."""
    q = sa.select(api_tokens).where(api_tokens.c.site == site).order_by(api_tokens.c.id)
    if username is not None:
        q = q.where(api_tokens.c.username == username)
    with store._read() as conn:
        return [_token_row(r) for r in conn.execute(q).all()]


def revoke_token(store, site: str, token_id: int, actor: str, username: str | None = None):
    """Deletes token `token_id` (only of `username` when given); StoreError if there is none."""
    with store._write() as conn:
        q = sa.select(api_tokens).where(api_tokens.c.site == site, api_tokens.c.id == token_id)
        if username is not None:
            q = q.where(api_tokens.c.username == username)
        row = conn.execute(q).first()
        if row is None:
            raise store_mod.StoreError(f"no API token {token_id}")
        conn.execute(api_tokens.delete().where(api_tokens.c.id == token_id))
    store.record_action(
        site, actor, "api_token_revoke", {"username": row.username, "token": token_id}
    )


def token_user(store, site: str, token: str) -> str | None:
    """The username a valid token belongs to (its use is noted, at most once a minute)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = _token_hash(token)
    with store._read() as conn:
        row = conn.execute(
            sa.select(api_tokens.c.id, api_tokens.c.username, api_tokens.c.last_used_at).where(
                api_tokens.c.site == site, api_tokens.c.token_hash == digest
            )
        ).first()
    if row is None:
        return None
    now = int(time.time())
    if row.last_used_at is None or now - row.last_used_at >= 60:
        with store._write() as conn:
            conn.execute(
                api_tokens.update().where(api_tokens.c.id == row.id).values(last_used_at=now)
            )
    return row.username


def drop_tokens_of(store, site: str, username: str) -> int:
    """Deletes every token of `username` (its account is gone); how many."""
    with store._write() as conn:
        return conn.execute(
            api_tokens.delete().where(api_tokens.c.site == site, api_tokens.c.username == username)
        ).rowcount
