"""The store's schema history: named migrations, each applied once, in its own transaction,
and recorded in the `migrations` table.

`MIGRATIONS` lists every migration of every area, in the order they apply (numeric); importing
the store registers them all, so a fresh database always gets the same history whichever
command opens it first. A later change of schema is a new migration (`register_migration`),
never an edit of a table in `tables.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa

from .. import trail
from .chain import _redact
from .engine import StoreBase, StoreError, _now
from .tables import (
    EVENT_TEXT,
    RECEIVED_INDEX,
    alert_acks,
    alert_notes,
    api_tokens,
    broker_accounts,
    cards,
    config_changes,
    consent_approvers,
    consents,
    event_conflicts,
    events,
    exemptions,
    firmware_offers,
    grants,
    host_keys,
    ingest_marks,
    ingest_refusals,
    journal_marks,
    locker_clocks,
    lockers,
    mail_conditions,
    mail_marks,
    mail_outbox,
    mail_seen,
    migrations,
    people,
    redactions,
    settings,
    sites,
    timetables,
    trail_entries,
    trail_head,
    users,
    visitors,
    web_sessions,
)

_INITIAL_TABLES = [
    sites,
    people,
    cards,
    lockers,
    timetables,
    grants,
    events,
    ingest_marks,
    trail_entries,
    trail_head,
    broker_accounts,
    users,
]


def _m0001_initial(conn):
    for table in _INITIAL_TABLES:
        table.create(conn, checkfirst=True)
    conn.execute(trail_head.insert().values(id=1, last_id=0, hash=trail.GENESIS))


def _m0002_dashboard(conn):
    web_sessions.create(conn, checkfirst=True)
    alert_acks.create(conn, checkfirst=True)


def _m0003_redactions(conn):
    """The `redactions` table; entries redacted before it get their rows now, covered by one
    `redact` action (actor `migration`) over what they hold today."""
    redactions.create(conn, checkfirst=True)
    sites_with = conn.execute(
        sa.select(trail_entries.c.site).where(trail_entries.c.redacted.is_(True)).distinct()
    ).scalars()
    for site in list(sites_with):
        _redact(conn, site, trail_entries.c.redacted.is_(True), "migration", {"legacy": True})


def _m0004_locker_clocks(conn):
    locker_clocks.create(conn, checkfirst=True)


_EVENTS_0005_COLUMNS = ("jid", "mac", "unknown_type", "hash_v")
_OLD_UNIQUE = "uq_events_site_locker_seq"
_NEW_UNIQUE = "uq_events_site_locker_jid_seq"


def _column_ddl(conn, name: str) -> str:
    col = events.c[name]
    ddl = f"{name} {col.type.compile(conn.dialect)}"
    if isinstance(col.server_default, sa.DefaultClause):
        default = col.server_default.arg
        if isinstance(default, str):
            default = f"'{default}'" if name == "jid" else default
        else:  # sa.false()
            default = "false" if conn.dialect.name == "postgresql" else "0"
        ddl += f" DEFAULT {default}"
    return ddl + (" NOT NULL" if not col.nullable else "")


def _m0005_journal_ids(conn):
    """Adds `jid`, `mac`, `unknown_type` and `hash_v` to `events` (older rows: jid "", format 0)
    and makes (site, locker, jid, seq) the unique key in place of (site, locker, seq); copies
    the watermarks to `journal_marks` (jid ""); creates the conflict, refusal and key tables.
    A store created after this change already has the columns: only what is missing is done."""
    insp = sa.inspect(conn)
    have = {c["name"] for c in insp.get_columns("events")}
    missing = [c for c in _EVENTS_0005_COLUMNS if c not in have]
    uniques = {u["name"] for u in insp.get_unique_constraints("events")}
    if _OLD_UNIQUE in uniques and conn.dialect.name == "sqlite":
        _rebuild_sqlite_events(conn, missing)
    else:
        for name in missing:
            conn.exec_driver_sql(f"ALTER TABLE events ADD COLUMN {_column_ddl(conn, name)}")
        if _OLD_UNIQUE in uniques:
            conn.exec_driver_sql(f"ALTER TABLE events DROP CONSTRAINT {_OLD_UNIQUE}")
        if conn.dialect.name == "postgresql":
            for name in ("person", "by", "reason"):
                conn.exec_driver_sql(
                    f'ALTER TABLE events ALTER COLUMN "{name}" TYPE VARCHAR({EVENT_TEXT})'
                )
        if _NEW_UNIQUE not in uniques:
            conn.exec_driver_sql(
                f"ALTER TABLE events ADD CONSTRAINT {_NEW_UNIQUE}"
                " UNIQUE (site, locker_id, jid, seq)"
            )
    for table in (journal_marks, event_conflicts, ingest_refusals, host_keys):
        table.create(conn, checkfirst=True)
    if (
        insp.has_table("ingest_marks")
        and not conn.execute(sa.select(journal_marks.c.site).limit(1)).first()
    ):
        conn.execute(
            journal_marks.insert().from_select(
                ["site", "locker_id", "jid", "ack_seq", "duplicates"],
                sa.select(
                    ingest_marks.c.site,
                    ingest_marks.c.locker_id,
                    sa.literal(""),
                    ingest_marks.c.ack_seq,
                    ingest_marks.c.duplicates,
                ),
            )
        )


def _rebuild_sqlite_events(conn, missing: list[str]) -> None:
    """SQLite cannot drop a constraint: the table is made again with the new key (SQLite's own
    recipe: create, copy, drop, rename, then the indexes again), every column kept."""
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).scalar()
    indexes = (
        conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
            " AND sql IS NOT NULL"
        )
        .scalars()
        .all()
    )
    pattern = re.compile(
        r"CONSTRAINT\s+\"?"
        + _OLD_UNIQUE
        + r"\"?\s+UNIQUE\s*\(\s*site\s*,\s*locker_id\s*,\s*seq\s*\)"
    )
    new_sql, n = pattern.subn(f"CONSTRAINT {_NEW_UNIQUE} UNIQUE (site, locker_id, jid, seq)", sql)
    head = re.match(r"\s*CREATE\s+TABLE\s+\"?events\"?", new_sql)
    # the new columns go after the last column, before the first table constraint
    first = re.search(r",(\s*)(PRIMARY\s+KEY|CONSTRAINT|UNIQUE|CHECK|FOREIGN\s+KEY)\b", new_sql)
    if n != 1 or head is None or first is None:
        raise StoreError("migration 0005: the events table is not as expected; nothing changed")
    added = "".join(f",{first.group(1)}{_column_ddl(conn, name)}" for name in missing)
    new_sql = new_sql[: first.start()] + added + new_sql[first.start() :]
    new_sql = "CREATE TABLE events_0005" + new_sql[head.end() :]
    old_cols = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(events)")]
    cols = ", ".join(f'"{c}"' for c in old_cols)
    conn.exec_driver_sql(new_sql)
    conn.exec_driver_sql(f"INSERT INTO events_0005 ({cols}) SELECT {cols} FROM events")
    conn.exec_driver_sql("DROP TABLE events")
    conn.exec_driver_sql("ALTER TABLE events_0005 RENAME TO events")
    for index_sql in indexes:
        conn.exec_driver_sql(index_sql)


def _m0007_config_changes(conn):
    config_changes.create(conn, checkfirst=True)


def _m0008_settings(conn):
    settings.create(conn, checkfirst=True)


def _m0010_exceptions(conn):
    for table in (consents, exemptions, visitors):
        table.create(conn, checkfirst=True)


def _m0011_alerts_mail(conn):
    for table in (alert_notes, mail_outbox, mail_marks, mail_conditions):
        table.create(conn, checkfirst=True)
    RECEIVED_INDEX.create(conn, checkfirst=True)


def _m0012_firmware_offers(conn):
    firmware_offers.create(conn, checkfirst=True)


def _m0014_api_tokens(conn):
    api_tokens.create(conn, checkfirst=True)


def _m0015_consent_approvers(conn):
    consent_approvers.create(conn, checkfirst=True)


def _m0016_mail_seen(conn):
    mail_seen.create(conn, checkfirst=True)


# (name, function(connection)) in the order they apply. Names are recorded; never rename one.
MIGRATIONS: list[tuple[str, Callable]] = [
    ("0001_initial", _m0001_initial),
    ("0002_dashboard", _m0002_dashboard),
    ("0003_redactions", _m0003_redactions),
    ("0004_locker_clocks", _m0004_locker_clocks),
    ("0005_journal_ids", _m0005_journal_ids),
    ("0007_config_changes", _m0007_config_changes),
    ("0008_settings", _m0008_settings),
    ("0010_exceptions", _m0010_exceptions),
    ("0011_alerts_mail", _m0011_alerts_mail),
    ("0012_firmware_offers", _m0012_firmware_offers),
    ("0014_api_tokens", _m0014_api_tokens),
    ("0015_consent_approvers", _m0015_consent_approvers),
    ("0016_mail_seen", _m0016_mail_seen),
]


def register_migration(name: str, fn: Callable) -> None:
    """Adds a named migration (another module's schema change); applied by the next `open`."""
    if any(n == name for n, _ in MIGRATIONS):
        return
    MIGRATIONS.append((name, fn))


class SchemaMixin(StoreBase):
    """`Store.migrate` and `Store.applied_migrations`."""

    def migrate(self) -> list[str]:
        """Applies the migrations not yet recorded; returns their names."""
        with self._write() as conn:
            migrations.create(conn, checkfirst=True)
        applied = []
        for name, fn in MIGRATIONS:
            with self._write() as conn:
                done = conn.execute(
                    sa.select(migrations.c.name).where(migrations.c.name == name)
                ).first()
                if done:
                    continue
                fn(conn)
                conn.execute(migrations.insert().values(name=name, applied_at=_now()))
                applied.append(name)
        return applied

    def applied_migrations(self) -> list[str]:
        with self._read() as conn:
            return list(
                conn.execute(sa.select(migrations.c.name).order_by(migrations.c.name)).scalars()
            )
