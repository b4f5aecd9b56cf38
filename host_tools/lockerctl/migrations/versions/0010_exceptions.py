"""The everyday exceptions: keep-safe consents, exemptions and visitors."""

import sqlalchemy as sa
from alembic import op

revision: str = "0010_exceptions"
down_revision: str | None = "0008_settings"
branch_labels = None
depends_on = None

MAX_TEXT = 200

metadata = sa.MetaData()

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("reason", sa.String(MAX_TEXT), nullable=True),
    sa.Column("until_date", sa.String(10), nullable=True),
    sa.Column("until_ts", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Index("ix_consents_site_person", "site", "person_id"),
)

exemptions = sa.Table(
    "exemptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("windows", sa.String(100), nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("review_date", sa.String(10), nullable=False),
    sa.Column("from_date", sa.String(10), nullable=False),
    sa.Column("until_date", sa.String(10), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Index("ix_exemptions_site", "site", "ended_at"),
)

visitors = sa.Table(
    "visitors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("card_uid", sa.String(14), nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("from_ts", sa.BigInteger, nullable=False),
    sa.Column("until_ts", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_visitors_site_until", "site", "until_ts"),
)

TABLES = [consents, exemptions, visitors]


def upgrade() -> None:
    conn = op.get_bind()
    for table in TABLES:
        table.create(conn, checkfirst=True)


def downgrade() -> None:
    conn = op.get_bind()
    for table in reversed(TABLES):
        table.drop(conn)
