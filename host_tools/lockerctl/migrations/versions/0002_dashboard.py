"""The dashboard's sessions (`web_sessions`) and alert acknowledgements (`alert_acks`)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0002_dashboard"
down_revision: str | None = "0001_initial"
branch_labels = None
depends_on = None

metadata = sa.MetaData()

web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_web_sessions_user", "user_id"),
)

alert_acks = sa.Table(
    "alert_acks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("by", sa.String(64), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
)


def upgrade() -> None:
    conn = op.get_bind()
    web_sessions.create(conn, checkfirst=True)
    alert_acks.create(conn, checkfirst=True)


def downgrade() -> None:
    conn = op.get_bind()
    alert_acks.drop(conn)
    web_sessions.drop(conn)
