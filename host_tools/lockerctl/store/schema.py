"""The store's schema history is Alembic's (`lockerctl/migrations`, one ordered chain of
revisions); this module is the store's way in: `Store.migrate` and `Store.applied_migrations`.
A later change of schema is a new revision there, never an edit of a table in `tables.py`
alone (docs/architecture.md: "The schema's history")."""

from __future__ import annotations

from .. import migrations
from .engine import StoreBase, StoreError


class SchemaMixin(StoreBase):
    """`Store.migrate` and `Store.applied_migrations`."""

    def migrate(self) -> list[str]:
        """Brings the schema to the newest revision; returns the revisions applied now, in
        order (a store of the named-migrations era is adopted first)."""
        try:
            return migrations.upgrade(self.engine)
        except migrations.MigrationError as e:
            raise StoreError(str(e)) from None

    def applied_migrations(self) -> list[str]:
        """The schema revisions the database has, oldest first."""
        try:
            return migrations.applied(self.engine)
        except migrations.MigrationError as e:
            raise StoreError(str(e)) from None
