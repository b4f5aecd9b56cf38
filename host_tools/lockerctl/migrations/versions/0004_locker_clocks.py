"""How far each locker's clock is from the host's (`locker_clocks`): `offset_s` is the locker's
time minus the host's, in seconds, measured by `lockerctl serve` at `checked_at` (host time)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0004_locker_clocks"
down_revision: str | None = "0003_redactions"
branch_labels = None
depends_on = None

locker_clocks = sa.Table(
    "locker_clocks",
    sa.MetaData(),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("offset_s", sa.Float, nullable=False),
    sa.Column("checked_at", sa.Float, nullable=False),
)


def upgrade() -> None:
    locker_clocks.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    locker_clocks.drop(op.get_bind())
