"""Journal ids: events are told apart by (site, locker, journal id, seq).

Adds `jid`, `mac`, `unknown_type` and `hash_v` to `events` (older rows: jid "", content format
0) and makes (site, locker_id, jid, seq) the unique key in place of (site, locker_id, seq):
SQLite cannot drop a constraint, so there the table is made again (every column and index
kept); PostgreSQL also widens the text columns to the firmware's 255. Copies the watermarks of
`ingest_marks` to `journal_marks` (jid ""); creates `event_conflicts`, `ingest_refusals` and
`host_keys`. A store created since 0001 made `events` with the new columns and key: only what is
missing is done.
"""

import re

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "0005_journal_ids"
down_revision: str | None = "0004_locker_clocks"
branch_labels = None
depends_on = None

EVENT_TEXT = 255
OLD_UNIQUE = "uq_events_site_locker_seq"
NEW_UNIQUE = "uq_events_site_locker_jid_seq"

metadata = sa.MetaData()

# The columns this revision adds (their DDL is written from these).
events = sa.Table(
    "events",
    metadata,
    sa.Column("jid", sa.String(16), nullable=False, server_default=""),
    sa.Column("mac", sa.String(32), nullable=True),
    sa.Column("unknown_type", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("hash_v", sa.SmallInteger, nullable=False, server_default="0"),
)
NEW_COLUMNS = ("jid", "mac", "unknown_type", "hash_v")

ingest_marks = sa.Table(
    "ingest_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("ack_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("duplicates", sa.BigInteger, nullable=False, default=0),
)

journal_marks = sa.Table(
    "journal_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("jid", sa.String(16), primary_key=True),
    sa.Column("ack_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("duplicates", sa.BigInteger, nullable=False, default=0),
)

event_conflicts = sa.Table(
    "event_conflicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=False),
    sa.Column("jid", sa.String(16), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.Integer, nullable=True),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("first_at", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False, default=1),
    sa.UniqueConstraint(
        "site", "locker_id", "jid", "seq", "content_hash", name="uq_event_conflicts"
    ),
)

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

host_keys = sa.Table(
    "host_keys",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("private_key", sa.LargeBinary(64), nullable=False),
    sa.Column("public_key", sa.LargeBinary(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)


def column_ddl(conn, name: str) -> str:
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


def upgrade() -> None:
    conn = op.get_bind()
    insp = sa.inspect(conn)
    have = {c["name"] for c in insp.get_columns("events")}
    missing = [c for c in NEW_COLUMNS if c not in have]
    uniques = {u["name"] for u in insp.get_unique_constraints("events")}
    if OLD_UNIQUE in uniques and conn.dialect.name == "sqlite":
        rebuild_sqlite_events(conn, missing)
    else:
        for name in missing:
            conn.exec_driver_sql(f"ALTER TABLE events ADD COLUMN {column_ddl(conn, name)}")
        if OLD_UNIQUE in uniques:
            conn.exec_driver_sql(f"ALTER TABLE events DROP CONSTRAINT {OLD_UNIQUE}")
        if conn.dialect.name == "postgresql":
            for name in ("person", "by", "reason"):
                conn.exec_driver_sql(
                    f'ALTER TABLE events ALTER COLUMN "{name}" TYPE VARCHAR({EVENT_TEXT})'
                )
        if NEW_UNIQUE not in uniques:
            conn.exec_driver_sql(
                f"ALTER TABLE events ADD CONSTRAINT {NEW_UNIQUE}"
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


def rebuild_sqlite_events(conn, missing: list[str]) -> None:
    """SQLite's own recipe: create the table again with the new key, copy, drop, rename, then
    the indexes again; every column kept."""
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
        + OLD_UNIQUE
        + r"\"?\s+UNIQUE\s*\(\s*site\s*,\s*locker_id\s*,\s*seq\s*\)"
    )
    new_sql, n = pattern.subn(f"CONSTRAINT {NEW_UNIQUE} UNIQUE (site, locker_id, jid, seq)", sql)
    head = re.match(r"\s*CREATE\s+TABLE\s+\"?events\"?", new_sql)
    # the new columns go after the last column, before the first table constraint
    first = re.search(r",(\s*)(PRIMARY\s+KEY|CONSTRAINT|UNIQUE|CHECK|FOREIGN\s+KEY)\b", new_sql)
    if n != 1 or head is None or first is None:
        raise CommandError("migration 0005: the events table is not as expected; nothing changed")
    added = "".join(f",{first.group(1)}{column_ddl(conn, name)}" for name in missing)
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


def downgrade() -> None:
    raise NotImplementedError(
        "0005_journal_ids has no downgrade (events of several journals would collide under the"
        " old key): restore a backup made before it"
    )
