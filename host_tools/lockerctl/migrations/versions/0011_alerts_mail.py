"""Alerts' notes and their e-mail: `alert_notes`, the queue `mail_outbox`, the mailer's
`mail_marks` and `mail_conditions`; and an index on `events (site, received_at)` (alerts, the
review and the report list events by the time the host received them)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0011_alerts_mail"
down_revision: str | None = "0010_exceptions"
branch_labels = None
depends_on = None

MAX_NOTE = 200

metadata = sa.MetaData()

alert_notes = sa.Table(
    "alert_notes",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("note", sa.String(MAX_NOTE), nullable=False),
)

mail_outbox = sa.Table(
    "mail_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("fold_key", sa.String(200), nullable=False),
    sa.Column("alert", sa.String(120), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=True),
    sa.Column("bay", sa.Integer, nullable=True),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("recipients", sa.String(2000), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("next_try_at", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("sent_at", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.String(300), nullable=True),
    sa.Column("repeats", sa.Integer, nullable=False, default=0),
    sa.Index("ix_mail_outbox_due", "site", "sent_at", "next_try_at"),
    sa.Index("ix_mail_outbox_fold", "site", "fold_key", "created_at"),
)

mail_marks = sa.Table(
    "mail_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

mail_conditions = sa.Table(
    "mail_conditions",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("since", sa.BigInteger, nullable=False),
)

# Only the columns the index names: the table is 0001's.
events = sa.Table(
    "events",
    metadata,
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
)
RECEIVED_INDEX = sa.Index("ix_events_site_received", events.c.site, events.c.received_at)

TABLES = [alert_notes, mail_outbox, mail_marks, mail_conditions]


def upgrade() -> None:
    conn = op.get_bind()
    for table in TABLES:
        table.create(conn, checkfirst=True)
    RECEIVED_INDEX.create(conn, checkfirst=True)


def downgrade() -> None:
    conn = op.get_bind()
    RECEIVED_INDEX.drop(conn)
    for table in reversed(TABLES):
        table.drop(conn)
