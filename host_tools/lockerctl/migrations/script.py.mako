"""${message}

Revision ${up_revision}, after ${down_revision | comma,n} (written ${create_date}).
Self-contained: the tables it touches are defined here; it imports nothing of lockerctl.
"""

import sqlalchemy as sa
from alembic import op

revision: str = "${up_revision}"
down_revision: str | None = ${repr(down_revision).replace("'", '"')}
branch_labels = None
depends_on = None

metadata = sa.MetaData()
# The tables this revision creates, defined here as they are today, e.g.
# things = sa.Table("things", metadata, sa.Column("id", sa.Integer, primary_key=True))


def upgrade() -> None:
    conn = op.get_bind()
    metadata.create_all(conn)  # and any other change: op.add_column(...), conn.execute(...)


def downgrade() -> None:
    raise NotImplementedError("${up_revision} has no downgrade: restore a backup instead")
