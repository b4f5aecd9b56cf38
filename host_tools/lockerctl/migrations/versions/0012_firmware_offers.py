"""The firmware offered to each locker (`firmware_offers`: the latest offer `lockerctl firmware
publish` made, its version, files, bytes, when and by whom)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0012_firmware_offers"
down_revision: str | None = "0011_alerts_mail"
branch_labels = None
depends_on = None

firmware_offers = sa.Table(
    "firmware_offers",
    sa.MetaData(),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(40), nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("offered_at", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(120), nullable=False),
)


def upgrade() -> None:
    firmware_offers.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    firmware_offers.drop(op.get_bind())
