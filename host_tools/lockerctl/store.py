"""The host's store: SQLAlchemy Core schema and every read and write the host
tools make (ingest, configuration inputs, lockers, grants, the audit trail).

SQLite (the default) runs with WAL and foreign keys on; every write transaction starts with
`BEGIN IMMEDIATE`, so two processes (`serve` and a command) never fail upgrading a read lock.
Nothing here is SQLite-only: types are portable and the chain's head row is read `FOR UPDATE`,
which serialises appends on PostgreSQL.

The schema's history is the Alembic revisions of `lockerctl.migrations`, applied in order by
`Store.open`; the Table objects here are the schema those revisions make (a change to one is a
new revision there, and an edit here).
"""

from __future__ import annotations

import itertools
import json
import operator
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from . import trail

PERSON_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,28}\Z")
LOCKER_ID_RE = PERSON_ID_RE
ROLES = ("pupil", "staff", "slt", "office")
MAX_TEXT = 200
EVENT_TEXT = 255  # an event's text fields: the firmware's limit (bytes of UTF-8, so characters)

metadata = sa.MetaData()

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("config_version", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

people = sa.Table(
    "people",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("person_id", sa.String(28), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    # The role on the person's first roster row (what an export shows next to the name).
    sa.Column("role", sa.String(16), nullable=False),
    # False once a re-import no longer lists the person: kept so old events still show a name
    # until the retention job removes it.
    sa.Column("active", sa.Boolean, nullable=False, default=True),
)

cards = sa.Table(
    "cards",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("uid", sa.String(14), primary_key=True),  # upper-case hex, 8 or 14 digits
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("year", sa.Integer, nullable=False, default=0),  # 1-6 for pupils, else 0
    sa.Column("walk_home", sa.Boolean, nullable=False, default=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.ForeignKeyConstraint(["site", "person_id"], ["people.site", "people.person_id"]),
)

lockers = sa.Table(
    "lockers",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("id", sa.String(28), primary_key=True),
    sa.Column("bays", sa.Integer, nullable=False),
    sa.Column("board", sa.String(16), nullable=False, default="sim"),
    sa.Column("secret", sa.LargeBinary(32), nullable=False),
    sa.Column("broker_password", sa.String(100), nullable=False),
    sa.Column("cmd_counter", sa.BigInteger, nullable=False, default=0),
    sa.Column("online", sa.Boolean, nullable=True),  # None: never heard from
    sa.Column("last_seen", sa.Float, nullable=True),
    sa.Column("state", sa.JSON, nullable=True),  # the locker's last retained `state`
    sa.Column("control_port", sa.Integer, nullable=True),
    sa.Column("data_dir", sa.String(300), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

timetables = sa.Table(
    "timetables",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),  # the TOML text as given
    sa.Column("parsed", sa.JSON, nullable=False),  # what parse_timetable made of it
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=True),  # None: every locker of the site
    sa.Column("from_ts", sa.BigInteger, nullable=False),
    sa.Column("until_ts", sa.BigInteger, nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("reason", sa.String(MAX_TEXT), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Index("ix_grants_site_until", "site", "until_ts"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=True),  # None: the locker's clock was not trusted
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("bay", sa.Integer, nullable=True),
    # up to the firmware's 255 bytes of text (0005 widened them from 200 on PostgreSQL)
    sa.Column("person", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("by", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("reason", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    # `ts`, or `received_at` when the ts is unknown: what exports order and filter by.
    sa.Column("sort_ts", sa.BigInteger, nullable=False),
    # Revision 0005_journal_ids (lockerctl/migrations) adds them to older stores: the journal id
    # ("" for events stored before it), the event's MAC, whether its type is one no firmware
    # version knows, and the format of its trail content (0 before 0005, 2 since).
    sa.Column("jid", sa.String(16), nullable=False, server_default=""),
    sa.Column("mac", sa.String(32), nullable=True),
    sa.Column("unknown_type", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("hash_v", sa.SmallInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("site", "locker_id", "jid", "seq", name="uq_events_site_locker_jid_seq"),
    sa.Index("ix_events_site_sort", "site", "sort_ts"),
    sa.Index("ix_events_site_person", "site", "person"),
)

# Per locker: the acknowledged watermark and the duplicates counted (events from lockers that
# are not (yet) registered are still stored, so this is not a column of `lockers`).
ingest_marks = sa.Table(
    "ingest_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("ack_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("duplicates", sa.BigInteger, nullable=False, default=0),
)

trail_entries = sa.Table(
    "trail",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # "event" or "action"
    sa.Column("event_id", sa.Integer, nullable=True),  # events.id for kind "event"
    sa.Column("content", sa.Text, nullable=True),  # canonical JSON for kind "action"
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("redacted", sa.Boolean, nullable=False, default=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Index("ix_trail_event", "event_id"),
)

# One row (id 1): the last entry written. Read FOR UPDATE to serialise appends; compared by
# `audit verify` to catch a truncated tail.
trail_head = sa.Table(
    "trail_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

broker_accounts = sa.Table(
    "broker_accounts",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("user", sa.String(100), nullable=False),
    sa.Column("password", sa.String(200), nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("password_hash", sa.String(300), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # office, slt, admin
    sa.Column("person_id", sa.String(28), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("site", "username", name="uq_users_site_username"),
)

# One row per redacted trail entry (migration 0003_redactions): the hash of what stays of it
# (`trail.public_content`) and the `redact` action whose digest covers it.
redactions = sa.Table(
    "redactions",
    metadata,
    sa.Column("entry_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("public_hash", sa.String(64), nullable=False),
    sa.Column("action_id", sa.BigInteger, nullable=False),
)


# How far each locker's clock is from the host's (migration 0004_locker_clocks): `offset_s` is the
# locker's time minus the host's, in seconds, as `lockerctl serve` measured it from the locker's
# latest live `state` (its `time` against the moment it arrived), at `checked_at` (host time).
locker_clocks = sa.Table(
    "locker_clocks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("offset_s", sa.Float, nullable=False),
    sa.Column("checked_at", sa.Float, nullable=False),
)


# Migration 0005: events are told apart by (locker, journal id, seq); the watermark is kept per
# journal; what ingest refused and what conflicted is kept; the host's checkpoint key.
journal_marks = sa.Table(
    "journal_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("jid", sa.String(16), primary_key=True),
    sa.Column("ack_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("duplicates", sa.BigInteger, nullable=False, default=0),
)

# An event whose (locker, jid, seq) was already stored with other content: kept here, never
# stored over the first nor acknowledged. One row per distinct content, `count` its arrivals.
event_conflicts = sa.Table(
    "event_conflicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=False),
    sa.Column("jid", sa.String(16), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.Integer, nullable=True),  # the row stored first
    sa.Column("content", sa.Text, nullable=False),  # the event received, canonical JSON
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("first_at", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False, default=1),
    sa.UniqueConstraint(
        "site", "locker_id", "jid", "seq", "content_hash", name="uq_event_conflicts"
    ),
)

# What ingest refused or found wrong, per locker and kind (`REFUSALS`): an urgent alert each.
# At most one new row per (locker, kind) every `REFUSAL_ALERT_EVERY` seconds; arrivals within
# that add to the row's `count`, so a flood of forgeries is one alert with a count.
ingest_refusals = sa.Table(
    "ingest_refusals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("first_at", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False, default=1),
    sa.Column("detail", sa.String(300), nullable=False, default=""),
    sa.Index("ix_ingest_refusals_site_locker", "site", "locker_id", "kind", "first_at"),
)
REFUSALS = {
    "bad_mac": "Event with a bad or missing MAC (forged?)",
    "conflict": "Event conflicts with the one stored (same journal and seq)",
    "seq_ahead": "Event seq beyond what the journal can hold",
    "impossible": "Event no firmware can send",
    # not an event: `serve` found the trail behind a checkpoint a locker holds (locker "-")
    "checkpoint": "Trail behind a checkpoint a locker holds: no checkpoint signed",
}
REFUSAL_ALERT_EVERY = 600

# The host's own keys (one row per purpose; `checkpoint`: the Ed25519 key that signs the trail's
# checkpoints). Kept with the lockers' secrets, in the store; the private key never leaves it.
host_keys = sa.Table(
    "host_keys",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("private_key", sa.LargeBinary(64), nullable=False),
    sa.Column("public_key", sa.LargeBinary(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# When each site's configuration version was last set (migration 0007_config_changes): an online
# locker still running an older version two minutes after it is an alert.
config_changes = sa.Table(
    "config_changes",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("changed_at", sa.BigInteger, nullable=False),
)

# A locker's reported configuration version above this is not believed (a locker can only
# report what it was sent, but one with stolen credentials could report anything; this keeps
# such a report from pushing the site's version to the end of its 32-bit range).
MAX_REPORTED_VERSION = 2**31


# A site's remembered settings (migration 0008_settings): e.g. the broker's address given to
# `broker config --listen`, which later commands use unless told otherwise. Values are text.
settings = sa.Table(
    "settings",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(1000), nullable=False),
)


# Other modules' additions to every locker's bundle (store_exceptions: visitors' cards and the
# rule table of consents, exemptions and visitors): fn(conn, site, locker_id, now) ->
# (extra card rows as `build_bundle` takes them, rule dicts as `bundle.rule_record` takes them).
CONFIG_EXTRAS: list[Callable] = []


def register_config_extra(fn: Callable) -> None:
    if fn not in CONFIG_EXTRAS:
        CONFIG_EXTRAS.append(fn)


class StoreError(Exception):
    """A request the store refuses (unknown locker, bad value): the message is for the user."""


def _now() -> int:
    return int(time.time())


def _text(value, limit=MAX_TEXT):
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return value[:limit]


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
# Placeholder of each DB-API parameter style `_insert_many` writes SQL for itself.
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_INSERT_PARAMS = 10_000  # bound values per multi-row INSERT (SQLite 3.32+ allows 32,766)


def _insert_many(
    conn, table: sa.Table, columns: tuple, rows: list, returning=(), skip_existing=()
) -> list:
    """Inserts `rows` (tuples of plain str/int/bool/None in `columns` order) into `table`;
    the `returning` columns of every row inserted, in no particular order.

    Thousands of rows per batch: SQLAlchemy's per-row parameter processing would cost more than
    the database's work, so the statement is written here for the driver (the values need no
    conversion on SQLite or PostgreSQL): one prepared row executed many times, or with
    `returning`, multi-row VALUES lists. Other drivers get the same through SQLAlchemy Core.
    With `skip_existing` (the columns of a unique key), a row whose key is stored already is
    left out (ON CONFLICT ... DO NOTHING; SQLite and PostgreSQL only) and returns nothing.
    """
    if not rows:
        return []
    dialect = conn.dialect
    ph = _PLACEHOLDER.get(dialect.paramstyle)
    if ph is None and skip_existing:
        raise StoreError(f"ON CONFLICT is not written for the {dialect.name} driver")
    if ph is None:
        dicts = [dict(zip(columns, r, strict=True)) for r in rows]
        if not returning:
            conn.execute(table.insert(), dicts)
            return []
        return conn.execute(table.insert().returning(*returning), dicts).all()
    q = dialect.identifier_preparer
    if dialect.name == "postgresql" and ph == "%s":
        return _insert_unnest(conn, table, columns, rows, returning, skip_existing)
    head = "INSERT INTO {} ({}) VALUES ".format(
        q.format_table(table), ", ".join(q.quote(c) for c in columns)
    )
    one = "(" + ", ".join([ph] * len(columns)) + ")"
    if not returning:
        conn.exec_driver_sql(head + one, rows)
        return []
    tail = " RETURNING " + ", ".join(q.quote(c.name) for c in returning)
    if skip_existing:
        keys = ", ".join(q.quote(c) for c in skip_existing)
        tail = f" ON CONFLICT ({keys}) DO NOTHING" + tail
    per = max(1, _INSERT_PARAMS // len(columns))
    out = []
    for chunk in _chunks(rows, per):
        sql = head + ", ".join([one] * len(chunk)) + tail
        out.extend(conn.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(chunk))).all())
    return out


def _insert_unnest(conn, table, columns, rows, returning, skip_existing) -> list:
    """`_insert_many` on PostgreSQL: one statement with one array parameter per column,
    `INSERT ... SELECT * FROM unnest(...)`. Multi-row VALUES cost psycopg more than the server's
    work (it parses a statement of thousands of placeholders with a regular expression on every
    call: 40 us an event), and executemany one round of the protocol per row."""
    dialect = conn.dialect
    q = dialect.identifier_preparer
    types = [table.c[c].type.compile(dialect=dialect) for c in columns]
    sql = "INSERT INTO {} ({}) SELECT * FROM unnest({})".format(
        q.format_table(table),
        ", ".join(q.quote(c) for c in columns),
        ", ".join(f"%b::{t}[]" for t in types),  # binary: no quoting of each element
    )
    if skip_existing:
        sql += " ON CONFLICT ({}) DO NOTHING".format(", ".join(q.quote(c) for c in skip_existing))
    if returning:
        sql += " RETURNING " + ", ".join(q.quote(c.name) for c in returning)
    out = []
    for chunk in _chunks(rows, 50_000):
        arrays = tuple(list(col) for col in zip(*chunk, strict=True))
        result = conn.exec_driver_sql(sql, arrays)
        if returning:
            out.extend(result.all())
    return out


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _int_or_none(value):
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


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
        seq = _int_or_none(ev.get("seq"))
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


class Store:
    """The store behind `lockerctl`. Open with `Store.open(url)`."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.url = engine.url

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> Store:
        """Connects to `url`, creating a new SQLite file owner-only, and applies migrations."""
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise StoreError(f"bad database URL {url!r}") from None
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed)
        else:
            if parsed.drivername in ("postgresql", "postgres"):
                # Plain `postgresql://` (docs/cli.md) means psycopg 3, the driver the package's
                # `postgres` extra installs (SQLAlchemy's default would be psycopg2).
                parsed = parsed.set(drivername="postgresql+psycopg")
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _write(self):
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.engine.connect().execution_options(classlocker_write=True) as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self):
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def migrate(self) -> list[str]:
        """Brings the schema to the newest revision (`lockerctl.migrations`); returns the
        revisions applied now, in order."""
        from . import migrations

        try:
            return migrations.upgrade(self.engine)
        except migrations.MigrationError as e:
            raise StoreError(str(e)) from None

    def applied_migrations(self) -> list[str]:
        """The schema revisions the database has, oldest first."""
        from . import migrations

        try:
            return migrations.applied(self.engine)
        except migrations.MigrationError as e:
            raise StoreError(str(e)) from None

    # -- sites and configuration versions ------------------------------------------------------

    def _ensure_site(self, conn, site: str) -> None:
        if conn.execute(sa.select(sites.c.name).where(sites.c.name == site)).first() is None:
            conn.execute(sites.insert().values(name=site, config_version=0, created_at=_now()))

    def config_version(self, site: str) -> int:
        with self._read() as conn:
            v = conn.execute(
                sa.select(sites.c.config_version).where(sites.c.name == site)
            ).scalar()
        return v or 0

    def _bump(self, conn, site: str) -> int:
        """Sets the site's next configuration version in this transaction: one above both the
        current one and the highest any of its lockers reports (a database restored from a
        backup must not publish versions the lockers ignore as stale). StoreError, so the whole
        change is rolled back, if any locker's bundle would then be larger than a locker takes.
        """
        self._ensure_site(conn, site)
        reported = self._reported_version(conn, site)
        v = sites.c.config_version
        conn.execute(
            sites.update()
            .where(sites.c.name == site)
            .values(config_version=sa.case((v > reported, v), else_=reported) + 1)
        )
        version = conn.execute(sa.select(v).where(sites.c.name == site)).scalar()
        self._check_bundles_fit(conn, site, version)
        values = {"version": version, "changed_at": _now()}
        if (
            conn.execute(
                config_changes.update().where(config_changes.c.site == site).values(**values)
            ).rowcount
            == 0
        ):
            conn.execute(config_changes.insert().values(site=site, **values))
        return version

    def _reported_version(self, conn, site: str) -> int:
        """The highest configuration version the site's lockers report running (0: none)."""
        best = 0
        for (state,) in conn.execute(sa.select(lockers.c.state).where(lockers.c.site == site)):
            v = state.get("config") if isinstance(state, dict) else None
            if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_REPORTED_VERSION:
                best = max(best, v)
        return best

    def reported_config_version(self, site: str) -> int:
        """The highest configuration version the site's lockers report running (0: none)."""
        with self._read() as conn:
            return self._reported_version(conn, site)

    def raise_config_version(self, site: str, actor: str = "lockerctl") -> int:
        """Puts the site's configuration version above every version its lockers report, if it
        is not already (a database restored from a backup); returns the version in force."""
        with self._write() as conn:
            self._ensure_site(conn, site)
            current = conn.execute(
                sa.select(sites.c.config_version).where(sites.c.name == site)
            ).scalar()
            reported = self._reported_version(conn, site)
            if reported < current:
                return current
            version = self._bump(conn, site)
            _append_action(
                conn,
                site,
                actor,
                "config_version_raised",
                {"from": current, "to": version, "reported": reported},
            )
            return version

    def config_changed_at(self, site: str) -> tuple[int, int] | None:
        """(version, when it was set) of the site's configuration, or None if unknown."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(config_changes.c.version, config_changes.c.changed_at).where(
                    config_changes.c.site == site
                )
            ).first()
        return (row.version, row.changed_at) if row else None

    def _next_version(self, conn, site: str) -> int:
        current = conn.execute(
            sa.select(sites.c.config_version).where(sites.c.name == site)
        ).scalar()
        return max(current or 0, self._reported_version(conn, site)) + 1

    def _check_bundles_fit(self, conn, site: str, version: int, ncards: int | None = None) -> None:
        """StoreError naming the locker and the limit if a bundle at `version` (with `ncards`
        cards, else the cards stored) would be more than a locker takes."""
        from .bundle import bundle_header, check_size

        ids = list(conn.execute(sa.select(lockers.c.id).where(lockers.c.site == site)).scalars())
        if not ids:
            return
        now = _now()
        if ncards is None:
            ncards = conn.execute(
                sa.select(sa.func.count()).select_from(cards).where(cards.c.site == site)
            ).scalar()
        compiled = None
        for locker_id in ids:
            _, timetable, grant_rows = self._config_inputs(conn, site, locker_id, now, False)
            if timetable is not None and compiled is None:
                from .timetable import compile_timetable

                try:
                    compiled = compile_timetable(timetable, now)
                except (ValueError, KeyError) as e:
                    raise StoreError(f"the timetable cannot be compiled: {e}") from None
            header = bundle_header(
                locker_id, site, version, now, compiled, [_grant_obj(g) for g in grant_rows]
            )
            extra_cards, rules = self._config_extras(conn, site, locker_id, now)
            try:
                check_size(locker_id, len(header), ncards + len(extra_cards), len(rules))
            except ValueError as e:
                raise StoreError(f"{e}; nothing was changed") from None

    def bump_config(self, site: str) -> int:
        """Marks the site's configuration changed; returns the new version."""
        with self._write() as conn:
            return self._bump(conn, site)

    # -- the trail ---------------------------------------------------------------------------

    def record_action(self, site: str, actor: str, action: str, detail: dict) -> int:
        """Appends a host action (who did what, with a JSON-able detail) to the trail."""
        with self._write() as conn:
            self._ensure_site(conn, site)
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
        e = events
        q = (
            _entries_with_events()
            .add_columns(
                redactions.c.public_hash.label("r_public"),
                redactions.c.action_id.label("r_action"),
            )
            .outerjoin(redactions, redactions.c.entry_id == trail_entries.c.id)
            .order_by(trail_entries.c.id)
        )
        check = _RedactionCheck()
        oldest_kept = check.oldest_kept
        with self.engine.connect() as conn:
            with conn.begin():
                rows = conn.execution_options(yield_per=2000, stream_results=True).execute(q)
                EVENT, ACTION, V2 = trail.EVENT, trail.ACTION, trail.EVENT_V2
                # an event row's content fields by position (format 2, the common case: one
                # C call instead of fourteen attribute look-ups per row)
                names = list(rows.keys())
                v2_fields = operator.itemgetter(*(names.index(n) for n in _V2_FIELDS))
                v2_content = trail.event_content_v2
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
                                content = _entry_content(r)
                                missing = _legacy_row_edited(r)
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
                            content = _entry_content(r)
                            missing = check.entry(r, content)
                    else:
                        missing = f"unknown kind {kind!r} (edited)"
                    v.feed(r.id, r.content_hash, r.hash, content, bool(redacted), missing)
                    if want and r.id in want:
                        heads[r.id] = r.hash
                    if progress:
                        progress(1)
                head = conn.execute(
                    sa.select(trail_head.c.last_id, trail_head.c.hash).where(trail_head.c.id == 1)
                ).first()
                v.finish(head.last_id if head else None, head.hash if head else None)
                if check.digests:
                    action_id = min(check.digests)
                    raise trail.Broken(
                        "-",
                        f"redaction records name entry {action_id}, which is no redaction"
                        " (edited)",
                    )
                orphan = conn.execute(
                    sa.select(redactions.c.entry_id)
                    .select_from(
                        redactions.outerjoin(
                            trail_entries, trail_entries.c.id == redactions.c.entry_id
                        )
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
            self._ensure_site(conn, site)
            where = sa.and_(trail_entries.c.at < cutoff_ts, trail_entries.c.redacted.is_(False))
            return _redact(conn, site, where, actor, {"before": cutoff_ts})

    # -- ingest ------------------------------------------------------------------------------

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
        received = _now()
        with self._write() as conn:
            self._ensure_site(conn, site)
            chain = _chain(conn)
            self._ingest_journals(conn, chain, site, by_journal, dups, received, max_ahead, result)
            _save_chain(conn, chain)
        return result

    def _ingest_journals(
        self, conn, chain, site, by_journal, dups, received, max_ahead, result
    ) -> None:
        marks = self._marks(conn, site, list(by_journal))
        legacy = self._legacy_acks(conn, site, by_journal, marks)
        rows: list[tuple] = []  # the new events (_EVENT_COLUMNS order), in the order written
        add = rows.append
        conflicts = []  # (key, seq, event received, id of the row stored)
        for key, fresh in by_journal.items():
            locker_id, jid = key
            ack, stored_dups, _, top = marks[key]
            seqs = sorted(fresh)
            # Only a seq at or below the highest stored one can be stored already (a resend):
            # look those up, with what was stored, nothing else.
            maybe = [s for s in seqs if s <= top]
            stored = self._stored_events(conn, site, locker_id, jid, maybe) if maybe else {}
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
                sort_ts = ts if ts is not None else received
                add(
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
                        sort_ts,
                        jid,
                        _text(ev.get("mac"), 32),
                        bool(ev.get("unknown_type")),
                        trail.EVENT_V2,
                    )
                )
            dups[key] += stored_dups + n
        new_seqs: dict[tuple[str, str], list[int]] = {}
        ids: dict[tuple[str, str, int], int] = {}
        if rows:
            ids = self._insert_events(conn, site, rows)
            entries = []
            append = chain.append
            content_of = trail.event_content
            kind = trail.EVENT
            for r in rows:
                _, locker_id, seq, ts, type_, bay, person, by, reason, _, sort_ts = r[:11]
                jid, mac, unknown = r[11], r[12], r[13]
                content = content_of(
                    site, locker_id, seq, ts, type_, bay, person, by, reason, received,
                    trail.EVENT_V2, jid, mac, sort_ts, unknown,
                )  # fmt: skip
                entry_id, chash, h = append(content)
                entries.append(
                    (
                        entry_id,
                        site,
                        kind,
                        ids[(locker_id, jid, seq)],
                        None,
                        chash,
                        h,
                        False,
                        received,
                    )
                )
                journal_seqs = new_seqs.get((locker_id, jid))
                if journal_seqs is None:
                    new_seqs[(locker_id, jid)] = [seq]
                else:
                    journal_seqs.append(seq)
            _insert_many(conn, trail_entries, _TRAIL_COLUMNS, entries)
            result.stored = len(rows)
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
                ack = self._advance(conn, site, locker_id, jid, ack)
            if ack == 0 and key in legacy:
                ack = self._continued(conn, site, locker_id, jid, legacy[key])
            result.acks[key] = ack
            mark = {"b_locker": locker_id, "b_jid": jid, "b_ack": ack, "b_dups": dups[key]}
            (updates if known else inserts).append(mark)
        m = journal_marks
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
                .values(ack_seq=sa.bindparam("b_ack"), duplicates=sa.bindparam("b_dups")),
                updates,
            )
        # Two versions of one seq in the same batch: the first is handled above, the others
        # conflict with it.
        for key, seq, ev in result.pending_conflicts:
            conflicts.append((key, seq, ev, ids.get((key[0], key[1], seq))))
        result.pending_conflicts = []
        for key, seq, ev, event_id in conflicts:
            self._keep_conflict(conn, site, key, seq, ev, event_id, received)
            result.conflicts.setdefault(key, []).append(seq)
        if result.refused:
            _record_refusals(
                conn,
                site,
                [
                    (lid, kind, f"journal {jid} seq {seq}")
                    for lid, jid, seq, kind in result.refused
                ],
                received,
            )

    def _legacy_acks(self, conn, site, by_journal, marks) -> dict[tuple[str, str], int]:
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

    def _continued(self, conn, site, locker_id, jid, legacy_ack: int) -> int:
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
        return self._advance(conn, site, locker_id, jid, legacy_ack)

    def _keep_conflict(self, conn, site, key, seq, ev, event_id, now) -> None:
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

    def _marks(self, conn, site, keys) -> dict[tuple[str, str], tuple[int, int, bool, int]]:
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
                sa.select(
                    m.c.locker_id, m.c.jid, m.c.ack_seq, m.c.duplicates, top.label("top")
                ).where(m.c.site == site, m.c.locker_id.in_(chunk))
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

    def _stored_events(self, conn, site, locker_id, jid, seqs) -> dict[int, dict]:
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

    def _insert_events(self, conn, site, rows) -> dict[tuple[str, str, int], int]:
        """Inserts the event rows in their order; {(locker_id, jid, seq): id}. Where the database
        returns rows from an insert (SQLite 3.35+, PostgreSQL), multi-row INSERT ... RETURNING;
        else one executemany and a query for the ids."""
        e = events
        if conn.dialect.insert_returning:
            ret = (e.c.id, e.c.locker_id, e.c.jid, e.c.seq)
            return {
                (lid, jid, seq): id_
                for id_, lid, jid, seq in _insert_many(conn, e, _EVENT_COLUMNS, rows, ret)
            }
        _insert_many(conn, e, _EVENT_COLUMNS, rows)
        by_journal: dict[tuple[str, str], list[int]] = {}
        for r in rows:
            by_journal.setdefault((r[1], r[11]), []).append(r[2])
        ids = {}
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
                    ids[(locker_id, jid, seq)] = id_
        return ids

    def _advance(self, conn, site, locker_id, jid, ack: int) -> int:
        """Moves the watermark over every contiguous seq stored after it."""
        e = events
        while True:
            nxt = (
                conn.execute(
                    sa.select(e.c.seq)
                    .where(
                        e.c.site == site, e.c.locker_id == locker_id, e.c.jid == jid, e.c.seq > ack
                    )
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
                _record_refusals(conn, site, items, _now())

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

    # -- the host's checkpoint key -------------------------------------------------------------

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
                        name=name, private_key=private, public_key=public, created_at=_now()
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

    # -- lockers -----------------------------------------------------------------------------

    _LOCKER_COLS = (
        lockers.c.id,
        lockers.c.bays,
        lockers.c.secret,
        lockers.c.broker_password,
        lockers.c.online,
        lockers.c.last_seen,
        lockers.c.state,
        lockers.c.board,
        lockers.c.cmd_counter,
        lockers.c.control_port,
        lockers.c.data_dir,
        lockers.c.site,
    )

    def lockers(self, site: str) -> list:
        """Rows (id, bays, secret bytes, broker_password, online, last_seen, state dict or None,
        board, cmd_counter, control_port, data_dir, site), ordered by id."""
        with self._read() as conn:
            return conn.execute(
                sa.select(*self._LOCKER_COLS).where(lockers.c.site == site).order_by(lockers.c.id)
            ).all()

    def locker(self, site: str, locker_id: str):
        with self._read() as conn:
            return conn.execute(
                sa.select(*self._LOCKER_COLS).where(
                    lockers.c.site == site, lockers.c.id == locker_id
                )
            ).first()

    def add_locker(
        self,
        site: str,
        locker_id: str,
        bays: int,
        secret: bytes,
        password: str,
        board: str = "sim",
        control_port: int | None = None,
        data_dir: str | None = None,
        actor: str = "lockerctl",
    ) -> int:
        """Registers a locker; returns the new configuration version. StoreError if it exists."""
        if not LOCKER_ID_RE.match(locker_id or ""):
            raise StoreError(f"bad locker id {locker_id!r}: 1-28 of A-Z a-z 0-9 . _ -")
        with self._write() as conn:
            self._ensure_site(conn, site)
            if conn.execute(
                sa.select(lockers.c.id).where(lockers.c.site == site, lockers.c.id == locker_id)
            ).first():
                raise StoreError(f"locker {locker_id} already exists at site {site}")
            conn.execute(
                lockers.insert().values(
                    site=site,
                    id=locker_id,
                    bays=bays,
                    board=board,
                    secret=bytes(secret),
                    broker_password=password,
                    cmd_counter=0,
                    online=None,
                    last_seen=None,
                    state=None,
                    control_port=control_port,
                    data_dir=data_dir,
                    created_at=_now(),
                )
            )
            _append_action(
                conn,
                site,
                actor,
                "locker_add",
                {"locker": locker_id, "bays": bays, "board": board},
            )
            return self._bump(conn, site)

    def set_locker_secret(
        self,
        site: str,
        locker_id: str,
        secret: bytes,
        password: str | None = None,
        actor: str = "lockerctl",
    ) -> int:
        """Rekeys a locker (and its broker password if given); returns the new config version."""
        values: dict[str, bytes | str] = {"secret": bytes(secret)}
        if password is not None:
            values["broker_password"] = password
        with self._write() as conn:
            n = conn.execute(
                lockers.update()
                .where(lockers.c.site == site, lockers.c.id == locker_id)
                .values(**values)
            ).rowcount
            if not n:
                raise StoreError(f"no locker {locker_id} at site {site}")
            _append_action(
                conn,
                site,
                actor,
                "locker_rekey",
                {"locker": locker_id, "password": password is not None},
            )
            return self._bump(conn, site)

    def next_command_id(self, site: str, locker_id: str) -> int:
        """The next id of a signed command to this locker: persisted, strictly increasing."""
        with self._write() as conn:
            n = conn.execute(
                lockers.update()
                .where(lockers.c.site == site, lockers.c.id == locker_id)
                .values(cmd_counter=lockers.c.cmd_counter + 1)
            ).rowcount
            if not n:
                raise StoreError(f"no locker {locker_id} at site {site}")
            return conn.execute(
                sa.select(lockers.c.cmd_counter).where(
                    lockers.c.site == site, lockers.c.id == locker_id
                )
            ).scalar()

    def set_clock_offset(self, site: str, locker_id: str, offset: float, checked_at: float):
        """Records how far the locker's clock is from the host's (locker minus host, seconds)."""
        c = locker_clocks
        key = (c.c.site == site, c.c.locker_id == locker_id)
        values = {"offset_s": float(offset), "checked_at": float(checked_at)}
        with self._write() as conn:
            if not conn.execute(c.update().where(*key).values(**values)).rowcount:
                conn.execute(c.insert().values(site=site, locker_id=locker_id, **values))

    def clock_offsets(self, site: str) -> dict[str, tuple[float, float]]:
        """{locker id: (offset seconds, checked_at)} for the site's lockers measured so far."""
        c = locker_clocks
        with self._read() as conn:
            rows = conn.execute(
                sa.select(c.c.locker_id, c.c.offset_s, c.c.checked_at).where(c.c.site == site)
            ).all()
        return {r.locker_id: (r.offset_s, r.checked_at) for r in rows}

    def set_locker_status(
        self, site: str, locker_id: str, online: bool | None = None, state: dict | None = None
    ) -> bool:
        """Records what a locker reported (status and/or state) and when; False if unknown."""
        values: dict = {"last_seen": time.time()}
        if online is not None:
            values["online"] = bool(online)
        if state is not None:
            values["state"] = state
        with self._write() as conn:
            return bool(
                conn.execute(
                    lockers.update()
                    .where(lockers.c.site == site, lockers.c.id == locker_id)
                    .values(**values)
                ).rowcount
            )

    # -- broker credentials ------------------------------------------------------------------

    def broker_credentials(self, site: str) -> tuple[str, str] | None:
        with self._read() as conn:
            r = conn.execute(
                sa.select(broker_accounts.c.user, broker_accounts.c.password).where(
                    broker_accounts.c.site == site
                )
            ).first()
        return (r.user, r.password) if r else None

    def set_broker_credentials(self, site: str, user: str, password: str) -> None:
        with self._write() as conn:
            self._ensure_site(conn, site)
            b = broker_accounts
            if conn.execute(sa.select(b.c.site).where(b.c.site == site)).first():
                conn.execute(
                    b.update().where(b.c.site == site).values(user=user, password=password)
                )
            else:
                conn.execute(b.insert().values(site=site, user=user, password=password))
            _append_action(conn, site, "lockerctl", "broker_credentials", {"user": user})

    # -- remembered settings -----------------------------------------------------------------

    def settings(self, site: str) -> dict[str, str]:
        """The site's remembered settings ({} when none)."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(settings.c.key, settings.c.value).where(settings.c.site == site)
            ).all()
        return {r.key: r.value for r in rows}

    def set_settings(self, site: str, values: dict[str, str | None], actor: str) -> None:
        """Stores (or, for None, forgets) settings in one transaction, with a trail entry."""
        with self._write() as conn:
            self._ensure_site(conn, site)
            for key, value in values.items():
                conn.execute(
                    settings.delete().where(settings.c.site == site, settings.c.key == key)
                )
                if value is not None:
                    conn.execute(settings.insert().values(site=site, key=key, value=str(value)))
            _append_action(conn, site, actor, "settings", dict(values))

    # -- roster ------------------------------------------------------------------------------

    def replace_roster(
        self, site: str, rows: list[dict], actor: str = "lockerctl", detail: dict | None = None
    ) -> dict:
        """Makes `rows` (validated: person_id, name, role, year, walk_home, card_uid) the whole
        roster of the site in one transaction. Cards no longer listed are removed; a card listed
        again keeps its revocation; people no longer listed are kept inactive (their name stays
        on old events). Returns counts {people, cards, added, removed, updated, version}."""
        new_people: dict[str, dict] = {}
        for r in rows:
            new_people.setdefault(r["person_id"], r)
        with self._write() as conn:
            self._ensure_site(conn, site)
            # Refused before anything is written when the lockers could not take it (checked
            # again, with everything else, when the version is bumped).
            self._check_bundles_fit(conn, site, self._next_version(conn, site), len(rows))
            old_cards = {
                r.uid: r for r in conn.execute(sa.select(cards).where(cards.c.site == site)).all()
            }
            old_people = {
                r.person_id
                for r in conn.execute(
                    sa.select(people.c.person_id).where(people.c.site == site)
                ).all()
            }
            new_uids = {r["card_uid"] for r in rows}
            gone = [u for u in old_cards if u not in new_uids]
            for i in range(0, len(gone), 500):
                conn.execute(
                    cards.delete().where(cards.c.site == site, cards.c.uid.in_(gone[i : i + 500]))
                )
            for pid, r in new_people.items():
                values = {"name": r["name"], "role": r["role"], "active": True}
                if pid in old_people:
                    conn.execute(
                        people.update()
                        .where(people.c.site == site, people.c.person_id == pid)
                        .values(**values)
                    )
                else:
                    conn.execute(people.insert().values(site=site, person_id=pid, **values))
            absent = [p for p in old_people if p not in new_people]
            for i in range(0, len(absent), 500):
                conn.execute(
                    people.update()
                    .where(people.c.site == site, people.c.person_id.in_(absent[i : i + 500]))
                    .values(active=False)
                )
            added = updated = 0
            for r in rows:
                values = {
                    "person_id": r["person_id"],
                    "role": r["role"],
                    "year": r["year"],
                    "walk_home": r["walk_home"],
                }
                old = old_cards.get(r["card_uid"])
                if old is None:
                    conn.execute(
                        cards.insert().values(
                            site=site, uid=r["card_uid"], revoked=False, **values
                        )
                    )
                    added += 1
                elif any(getattr(old, k) != v for k, v in values.items()):
                    conn.execute(
                        cards.update()
                        .where(cards.c.site == site, cards.c.uid == r["card_uid"])
                        .values(**values)
                    )
                    updated += 1
            counts = {
                "people": len(new_people),
                "cards": len(rows),
                "added": added,
                "removed": len(gone),
                "updated": updated,
            }
            _append_action(conn, site, actor, "roster_import", {**counts, **(detail or {})})
            counts["version"] = self._bump(conn, site)
        return counts

    def roster(self, site: str) -> list:
        """Rows (person_id, name, role, year, walk_home, card_uid, revoked), one per card."""
        with self._read() as conn:
            return conn.execute(
                sa.select(
                    cards.c.person_id,
                    people.c.name,
                    cards.c.role,
                    cards.c.year,
                    cards.c.walk_home,
                    cards.c.uid.label("card_uid"),
                    cards.c.revoked,
                )
                .select_from(
                    cards.join(
                        people,
                        sa.and_(
                            people.c.site == cards.c.site, people.c.person_id == cards.c.person_id
                        ),
                    )
                )
                .where(cards.c.site == site)
                .order_by(cards.c.person_id, cards.c.uid)
            ).all()

    def person(self, site: str, person_id: str, include_inactive: bool = False):
        """(person_id, name, role, active, roles: set of the roles of their unrevoked cards), or
        None if the roster does not list the person (now, or ever with `include_inactive`)."""
        with self._read() as conn:
            p = conn.execute(
                sa.select(people).where(people.c.site == site, people.c.person_id == person_id)
            ).first()
            if p is None or not (p.active or include_inactive):
                return None
            roles = set(
                conn.execute(
                    sa.select(cards.c.role).where(
                        cards.c.site == site,
                        cards.c.person_id == person_id,
                        cards.c.revoked.is_(False),
                    )
                ).scalars()
            )
        return _Person(p.person_id, p.name, p.role, bool(p.active), roles)

    def person_cards(self, site: str, person_id: str) -> list:
        with self._read() as conn:
            return conn.execute(
                sa.select(cards)
                .where(cards.c.site == site, cards.c.person_id == person_id)
                .order_by(cards.c.uid)
            ).all()

    def revoke_cards(
        self, site: str, person_id: str, uid: str | None = None, actor: str = "lockerctl"
    ) -> int:
        """Revokes the person's cards (or the one with `uid`); returns how many were revoked
        now (already revoked ones are not counted). StoreError if there is no such card."""
        with self._write() as conn:
            q = sa.select(cards.c.uid, cards.c.revoked).where(
                cards.c.site == site, cards.c.person_id == person_id
            )
            if uid is not None:
                q = q.where(cards.c.uid == uid)
            found = conn.execute(q).all()
            if not found:
                if uid is not None:
                    raise StoreError(f"{person_id} has no card {uid}")
                raise StoreError(f"{person_id} has no cards (unknown person?)")
            todo = [r.uid for r in found if not r.revoked]
            if todo:
                conn.execute(
                    cards.update()
                    .where(cards.c.site == site, cards.c.uid.in_(todo))
                    .values(revoked=True)
                )
            _append_action(
                conn,
                site,
                actor,
                "card_revoke",
                {"person": person_id, "cards": [mask_uid(u) for u in todo]},
            )
            self._bump(conn, site)
        return len(todo)

    # -- timetable ---------------------------------------------------------------------------

    def set_timetable(
        self, site: str, source: str, parsed: dict, timezone: str, actor: str = "lockerctl"
    ) -> int:
        """Stores the TOML text and its parsed form; returns the new configuration version."""
        with self._write() as conn:
            self._ensure_site(conn, site)
            t = timetables
            values = {
                "source": source,
                "parsed": parsed,
                "timezone": timezone,
                "updated_at": _now(),
            }
            if conn.execute(sa.select(t.c.site).where(t.c.site == site)).first():
                conn.execute(t.update().where(t.c.site == site).values(**values))
            else:
                conn.execute(t.insert().values(site=site, **values))
            _append_action(conn, site, actor, "timetable_set", {"timezone": timezone})
            return self._bump(conn, site)

    def timetable(self, site: str):
        """Row (source, parsed, timezone, updated_at) or None."""
        with self._read() as conn:
            return conn.execute(sa.select(timetables).where(timetables.c.site == site)).first()

    def timezone(self, site: str, default: str = "Europe/London") -> str:
        """The site's time zone: the timetable's, else `default`."""
        row = self.timetable(site)
        return row.timezone if row else default

    # -- grants ------------------------------------------------------------------------------

    def add_grant(
        self,
        site: str,
        person_id: str,
        from_ts: int,
        until_ts: int,
        by: str,
        reason: str,
        locker_id: str | None = None,
        actor: str = "lockerctl",
    ) -> int:
        """Stores an exception grant (validated by the caller); returns its id."""
        with self._write() as conn:
            self._ensure_site(conn, site)
            gid = conn.execute(
                grants.insert().values(
                    site=site,
                    person_id=person_id,
                    locker_id=locker_id,
                    from_ts=int(from_ts),
                    until_ts=int(until_ts),
                    by=by,
                    reason=_text(reason),
                    created_at=_now(),
                    revoked_at=None,
                )
            ).inserted_primary_key[0]
            _append_action(
                conn,
                site,
                actor,
                "grant",
                {
                    "id": gid,
                    "person": person_id,
                    "from": int(from_ts),
                    "until": int(until_ts),
                    "by": by,
                    "reason": reason,
                    "locker": locker_id,
                },
            )
            self._bump(conn, site)
        return gid

    def grants(self, site: str, include_ended: bool = False, now: int | None = None) -> list:
        """Grant rows, oldest first: by default only those not revoked and not yet ended."""
        now = _now() if now is None else now
        q = sa.select(grants).where(grants.c.site == site)
        if not include_ended:
            q = q.where(grants.c.revoked_at.is_(None), grants.c.until_ts > now)
        with self._read() as conn:
            return conn.execute(q.order_by(grants.c.id)).all()

    def revoke_grant(self, site: str, grant_id: int, actor: str = "lockerctl") -> None:
        with self._write() as conn:
            r = conn.execute(
                sa.select(grants.c.revoked_at).where(
                    grants.c.site == site, grants.c.id == grant_id
                )
            ).first()
            if r is None:
                raise StoreError(f"no grant {grant_id} at site {site}")
            if r.revoked_at is not None:
                raise StoreError(f"grant {grant_id} is already revoked")
            conn.execute(grants.update().where(grants.c.id == grant_id).values(revoked_at=_now()))
            _append_action(conn, site, actor, "grant_revoke", {"id": grant_id})
            self._bump(conn, site)

    # -- what a locker's configuration is built from -------------------------------------------

    def config_inputs(self, site: str, locker_id: str, now: int | None = None):
        """(cards, timetable, grants) for the locker's bundle.

        cards: every card of the site, revoked ones included, ordered by uid; rows with uid,
        person_id, role, year, walk_home, revoked. timetable: the dict `parse_timetable` made
        of the TOML when it was set (JSON-ready; `compile_timetable` takes it), or None.
        grants: rows (id, person_id, locker_id, from_ts, until_ts, by, reason) not revoked, not
        ended, for this locker or for every locker.
        """
        now = _now() if now is None else now
        with self._read() as conn:
            return self._config_inputs(conn, site, locker_id, now)

    def _config_inputs(self, conn, site: str, locker_id: str, now: int, with_cards=True):
        card_rows = []
        if with_cards:
            card_rows = conn.execute(
                sa.select(
                    cards.c.uid,
                    cards.c.person_id,
                    cards.c.role,
                    cards.c.year,
                    cards.c.walk_home,
                    cards.c.revoked,
                )
                .where(cards.c.site == site)
                .order_by(cards.c.uid)
            ).all()
        tt = conn.execute(
            sa.select(timetables.c.source, timetables.c.parsed).where(timetables.c.site == site)
        ).first()
        grant_rows = conn.execute(
            sa.select(
                grants.c.id,
                grants.c.person_id,
                grants.c.locker_id,
                grants.c.from_ts,
                grants.c.until_ts,
                grants.c.by,
                grants.c.reason,
            )
            .where(
                grants.c.site == site,
                grants.c.revoked_at.is_(None),
                grants.c.until_ts > now,
                sa.or_(grants.c.locker_id.is_(None), grants.c.locker_id == locker_id),
            )
            .order_by(grants.c.id)
        ).all()
        return card_rows, (tt.parsed if tt is not None else None), grant_rows

    def config_extras(self, site: str, locker_id: str, now: int | None = None):
        """(extra cards, rules) the registered CONFIG_EXTRAS add to the locker's bundle."""
        now = _now() if now is None else now
        with self._read() as conn:
            return self._config_extras(conn, site, locker_id, now)

    def _config_extras(self, conn, site: str, locker_id: str, now: int):
        extra_cards: list = []
        rules: list = []
        for fn in CONFIG_EXTRAS:
            c, r = fn(conn, site, locker_id, now)
            extra_cards += c
            rules += r
        return extra_cards, rules

    # -- events ------------------------------------------------------------------------------

    def _events_query(self, site, start=None, end=None, locker=None, person=None, types=None):
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
            .select_from(
                e.outerjoin(p, sa.and_(p.c.site == e.c.site, p.c.person_id == e.c.person))
            )
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
    ) -> Iterator:
        """Streams the site's events (rows: id, locker_id, seq, ts, type, bay, person, by,
        reason, received_at, sort_ts, name, role), in time order (`sort_ts`: the locker's ts,
        or the arrival time when that is unknown). `start`/`end` are unix seconds [start, end);
        `person` matches the person or the `by` of an event. The connection is held while the
        iterator is consumed and released when it ends or is closed."""
        q = self._events_query(site, start, end, locker, person, types)
        columns = [events.c.sort_ts, events.c.locker_id, events.c.seq]
        order = [c.desc() for c in columns] if newest_first else columns
        q = q.order_by(*order)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            with conn.begin():
                result = conn.execution_options(yield_per=batch, stream_results=True).execute(q)
                yield from result

    def count_events(
        self, site: str, start=None, end=None, locker=None, person=None, types=None
    ) -> int:
        q = self._events_query(site, start, end, locker, person, types).subquery()
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(q)).scalar()


class _Person:
    __slots__ = ("person_id", "name", "role", "active", "roles")

    def __init__(self, person_id, name, role, active, roles):
        self.person_id, self.name, self.role = person_id, name, role
        self.active, self.roles = active, roles


def _grant_obj(g) -> dict:
    """A grant row as the bundle header carries it (docs/protocol.md)."""
    return {
        "id": g.id,
        "person": g.person_id,
        "from": int(g.from_ts),
        "until": int(g.until_ts),
        "by": g.by,
    }


def mask_uid(uid: str) -> str:
    """A card UID as shown outside the store: only its last four digits."""
    return "****" + uid[-4:]


def _sqlite_engine(url) -> sa.Engine:
    path = url.database
    if path and path != ":memory:" and not path.startswith("file:"):
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot create database {path}: no directory {directory}")
        if not os.path.exists(path):
            # Owner-only from the start: the store holds lockers' secrets.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Transactions are begun below, not by the driver.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if path and path != ":memory:":
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("classlocker_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


# -- the trail's head, actions and redaction (module level: other store modules use them) ----


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
    at = _now()
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


_REDACT_CHUNK = 2000
_REDACT_WORD = '"action":"redact"'  # how a redact action's canonical content says what it is


def _is_redact_action(content: bytes | None) -> dict | None:
    """The detail of a `redact` action's content ({} if blank), else None."""
    if content is None or _REDACT_WORD.encode() not in content:
        return None
    try:
        obj = json.loads(content)
    except ValueError:
        raise ValueError("content is not valid JSON") from None
    if not isinstance(obj, dict) or obj.get("kind") != trail.ACTION:
        return None
    if obj.get("action") != "redact":
        return None
    detail = obj.get("detail")
    return detail if isinstance(detail, dict) else {}


def _entry_content(r) -> bytes | None:
    """The canonical content of a trail row joined with its event row (None: the row is gone)."""
    if r.kind == trail.EVENT:
        if r.e_id is None:
            return None
        return trail.event_content(
            r.e_site,
            r.locker_id,
            r.seq,
            r.ts,
            r.type,
            r.bay,
            r.person,
            r.by,
            r.reason,
            r.received_at,
            r.hash_v,
            r.jid,
            r.mac,
            r.sort_ts,
            r.unknown_type,
        )
    return r.content.encode() if r.content is not None else None


# The columns of `_entries_with_events` that `trail.event_content_v2` takes, in its order.
_V2_FIELDS = (
    "e_site",
    "locker_id",
    "seq",
    "ts",
    "type",
    "bay",
    "person",
    "by",
    "reason",
    "received_at",
    "jid",
    "mac",
    "sort_ts",
    "unknown_type",
)


def _legacy_row_edited(r) -> str | None:
    """What is wrong with an event row of content format 0 (stored before 0005) in the columns
    its content does not hold: `sort_ts` must be what ingest derived then, the 0005 columns
    their defaults."""
    want = r.ts if r.ts is not None else r.received_at
    if r.sort_ts != want:
        return f"sort_ts {r.sort_ts} is not the event's time {want} (edited)"
    if r.jid != "" or r.mac is not None or r.unknown_type:
        return "journal id, MAC or type mark set on an event stored without them (edited)"
    if r.hash_v != 0:
        return f"unknown content format {r.hash_v} (edited)"
    return None


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
    With `detail={"legacy": True}` (migration 0003) the entries are already blank: their
    public hashes are recorded as they are. Returns the number of entries."""
    legacy = bool(detail and detail.get("legacy"))
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
        records, event_ids, entry_ids, actions = [], [], [], []
        for r in rows:
            content = _entry_content(r)
            if r.kind == trail.ACTION and not legacy and _is_redact_action(content):
                continue
            if content is None:
                if legacy:
                    continue  # already broken: `audit verify` reports it
                raise StoreError(
                    f"trail entry {r.id} has lost its content: run `lockerctl audit verify`;"
                    " nothing was redacted"
                )
            if not legacy and trail.content_hash(content) != r.content_hash:
                raise StoreError(
                    f"trail entry {r.id} does not match its hash (edited): run `lockerctl audit"
                    " verify`; nothing was redacted"
                )
            public = trail.content_hash(trail.public_content(content))
            digest.add(r.id, public)
            records.append({"entry_id": r.id, "public_hash": public, "action_id": action_id})
            entry_ids.append(r.id)
            if r.kind == trail.EVENT:
                event_ids.append(r.e_id)
            elif r.kind == trail.ACTION:
                actions.append((r.id, json.loads(content)))
        if records:
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
        if legacy:
            continue
        if event_ids:
            conn.execute(
                events.update()
                .where(events.c.id.in_(event_ids))
                .values(person=None, by=None, reason=None, mac=None)
            )
        if entry_ids:
            conn.execute(
                trail_entries.update()
                .where(trail_entries.c.id.in_(entry_ids))
                .values(redacted=True)
            )
        blanked = []
        for entry_id, obj in actions:
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


class _RedactionCheck:
    """What `verify_trail` checks of redaction, entry by entry in id order (O(sites) memory):

    - a redacted entry has its record, blank personal fields, and what stays of it matches the
      recorded public hash; an entry that is not redacted has no record;
    - a `redact` action's count and digest are those of the records that name it, and it left no
      older entry of its site unredacted (retention redacts all of them): a `redact` action
      appended by someone to dress up a recent edit would have to redact everything before it.
    """

    def __init__(self):
        self.digests: dict[int, trail.RedactionDigest] = {}
        self.oldest_kept: dict[str, int] = {}  # per site: the oldest `at` not redacted so far

    def entry(self, r, content: bytes | None) -> str | None:
        try:
            if r.redacted:
                return self._redacted(r, content)
            if r.r_public is not None:
                return "a redaction record for an entry that is not redacted (edited)"
            if r.kind == trail.ACTION:
                detail = _is_redact_action(content)
                if detail is not None:
                    return self._redact_action(r, detail)
                _json_kind(content, trail.ACTION)
            if r.at < self.oldest_kept.get(r.site, r.at + 1):
                self.oldest_kept[r.site] = r.at
        except ValueError as e:
            return f"{e} (edited)"
        return None

    def _redacted(self, r, content: bytes | None) -> str | None:
        if r.r_public is None:
            return "marked redacted without a redaction record (edited)"
        if content is None:
            return "content missing"
        _json_kind(content, r.kind)
        public, held = trail.split_personal(content)
        if held:
            return "edited after its redaction (personal fields written back)"
        if trail.content_hash(public) != r.r_public:
            return "edited after its redaction (what stays of it does not match its record)"
        self.digests.setdefault(r.r_action, trail.RedactionDigest()).add(r.id, r.r_public)
        return None

    def _redact_action(self, r, detail: dict) -> str | None:
        got = self.digests.pop(r.id, None) or trail.RedactionDigest()
        if "digest" not in detail:
            return None if got.count == 0 else "a redaction without a digest names records"
        if got.count != detail.get("entries") or got.hexdigest() != detail["digest"]:
            return (
                f"the {detail.get('entries')} entries this redaction covers do not match their"
                f" records ({got.count} found): a redaction record was edited, deleted or added"
            )
        before = detail.get("before")
        if isinstance(before, int) and self.oldest_kept.get(r.site, before) < before:
            return (
                "a redaction that left older entries of its site unredacted: not made by"
                " retention (appended to hide an edit?)"
            )
        return None


def _json_kind(content: bytes | None, kind: str) -> None:
    """ValueError unless `content` is a JSON object of this kind."""
    if content is None:
        return
    try:
        obj = json.loads(content)
    except ValueError:
        raise ValueError("content is not valid JSON") from None
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise ValueError(f"content of another kind than the entry's {kind!r}")
