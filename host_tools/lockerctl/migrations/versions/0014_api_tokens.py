"""The JSON API's tokens (`api_tokens`): the SHA-256 of each token, its owner's username, a
label, when it was made and by whom, when it was last used."""

import sqlalchemy as sa
from alembic import op

revision: str = "0014_api_tokens"
down_revision: str | None = "0012_firmware_offers"
branch_labels = None
depends_on = None

MAX_LABEL = 64

api_tokens = sa.Table(
    "api_tokens",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("label", sa.String(MAX_LABEL), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("last_used_at", sa.BigInteger, nullable=True),
    sa.Index("ix_api_tokens_user", "site", "username"),
)


def upgrade() -> None:
    api_tokens.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    api_tokens.drop(op.get_bind())
