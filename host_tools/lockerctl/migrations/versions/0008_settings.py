"""A site's remembered settings (`settings`: site, key, text value), e.g. the broker's address
given to `broker config --listen`."""

import sqlalchemy as sa
from alembic import op

revision: str = "0008_settings"
down_revision: str | None = "0007_config_changes"
branch_labels = None
depends_on = None

settings = sa.Table(
    "settings",
    sa.MetaData(),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(1000), nullable=False),
)


def upgrade() -> None:
    settings.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    settings.drop(op.get_bind())
