"""Who may approve keep-safe consents (`consent_approvers`: the Headteacher and the SLT members
an admin names; a row is an approver)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0015_consent_approvers"
down_revision: str | None = "0014_api_tokens"
branch_labels = None
depends_on = None

MAX_TEXT = 200

consent_approvers = sa.Table(
    "consent_approvers",
    sa.MetaData(),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("person_id", sa.String(28), primary_key=True),
    sa.Column("added_by", sa.String(MAX_TEXT), nullable=False),
    sa.Column("added_at", sa.BigInteger, nullable=False),
)


def upgrade() -> None:
    consent_approvers.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    consent_approvers.drop(op.get_bind())
