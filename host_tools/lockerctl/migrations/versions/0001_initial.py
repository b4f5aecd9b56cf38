"""The initial schema: sites, people, cards, lockers, timetables, grants, events, ingest marks,
the trail and its head, the broker's account and dashboard users.

`events` is created as it is since 0005_journal_ids (journal id, MAC, unknown-type mark, content
format; unique on (site, locker_id, jid, seq)): 0005 adds only what an older table lacks.
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels = None
depends_on = None

MAX_TEXT = 200
EVENT_TEXT = 255
GENESIS = "0" * 64

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
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
)

cards = sa.Table(
    "cards",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("uid", sa.String(14), primary_key=True),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("year", sa.Integer, nullable=False, default=0),
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
    sa.Column("online", sa.Boolean, nullable=True),
    sa.Column("last_seen", sa.Float, nullable=True),
    sa.Column("state", sa.JSON, nullable=True),
    sa.Column("control_port", sa.Integer, nullable=True),
    sa.Column("data_dir", sa.String(300), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

timetables = sa.Table(
    "timetables",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("parsed", sa.JSON, nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=True),
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
    sa.Column("ts", sa.BigInteger, nullable=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("bay", sa.Integer, nullable=True),
    sa.Column("person", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("by", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("reason", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("sort_ts", sa.BigInteger, nullable=False),
    sa.Column("jid", sa.String(16), nullable=False, server_default=""),
    sa.Column("mac", sa.String(32), nullable=True),
    sa.Column("unknown_type", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("hash_v", sa.SmallInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("site", "locker_id", "jid", "seq", name="uq_events_site_locker_jid_seq"),
    sa.Index("ix_events_site_sort", "site", "sort_ts"),
    sa.Index("ix_events_site_person", "site", "person"),
)

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
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("event_id", sa.Integer, nullable=True),
    sa.Column("content", sa.Text, nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("redacted", sa.Boolean, nullable=False, default=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Index("ix_trail_event", "event_id"),
)

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
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("site", "username", name="uq_users_site_username"),
)

TABLES = [
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


def upgrade() -> None:
    conn = op.get_bind()
    for table in TABLES:
        table.create(conn, checkfirst=True)
    conn.execute(trail_head.insert().values(id=1, last_id=0, hash=GENESIS))


def downgrade() -> None:
    raise NotImplementedError("0001_initial has no downgrade: a new database is empty already")
