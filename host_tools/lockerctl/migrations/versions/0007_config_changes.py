"""When each site's configuration version was last set (`config_changes`), for the
"configuration not applied" alert."""

import sqlalchemy as sa
from alembic import op

revision: str = "0007_config_changes"
down_revision: str | None = "0005_journal_ids"
branch_labels = None
depends_on = None

config_changes = sa.Table(
    "config_changes",
    sa.MetaData(),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("changed_at", sa.BigInteger, nullable=False),
)


def upgrade() -> None:
    config_changes.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    config_changes.drop(op.get_bind())
