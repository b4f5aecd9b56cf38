"""The urgent events and refusals the mailer has already turned into messages (`mail_seen`: by
alert key, with the time the host received them)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0016_mail_seen"
down_revision: str | None = "0015_consent_approvers"
branch_labels = None
depends_on = None

mail_seen = sa.Table(
    "mail_seen",
    sa.MetaData(),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Index("ix_mail_seen_at", "site", "at"),
)


def upgrade() -> None:
    mail_seen.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    mail_seen.drop(op.get_bind())
