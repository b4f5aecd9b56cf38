"""Alembic's environment for the store: runs the revisions on the connection that
`lockerctl.migrations` puts in `config.attributes` (inside its transaction, which holds the
store's write lock). There is no offline (`--sql`) mode and no URL of its own: the store is
migrated by opening it (`Store.open`, e.g. `lockerctl setup`), not with the `alembic` command,
which serves to write a new revision (`alembic revision`, docs/architecture.md)."""

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise SystemExit(
        "lockerctl's store migrates when it is opened (lockerctl setup, or any command):"
        " the alembic command only writes new revisions here"
    )
context.configure(
    connection=connection,
    # The store's SQLite engine begins its own transactions (BEGIN / BEGIN IMMEDIATE), so
    # DDL is transactional there as on PostgreSQL.
    transactional_ddl=True,
    on_version_apply=config.attributes.get("on_version_apply"),  # what `upgrade` reports
)
with context.begin_transaction():
    context.run_migrations()
