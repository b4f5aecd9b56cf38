"""The store's schema history: one ordered list of Alembic revisions, applied by `Store.open`.

Each schema change is a file in `versions/` whose revision id is its name, `NNNN_what` (at most
32 characters: Alembic's version table holds that), and whose `down_revision` is the revision
before it, so there is one order whatever the command that opens the store. A version file is
self-contained: it defines the tables it touches itself and imports nothing of `lockerctl`,
because the code it would import changes later and the history must not. The database records
the revision it is at in `alembic_version`.

`upgrade(engine)` brings a database to the newest revision in one transaction that holds the
write lock (SQLite `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so two processes opening a
new store at once apply each revision once, and a revision that fails leaves the database as it
was. No `alembic.ini` is read: the `Config` is built here, with the connection in its
`attributes` (`env.py` runs on it). An up-to-date store is recognised without loading Alembic
(`HEAD`).

A database made before Alembic (lockerctl up to commit 403e30d) has instead a `migrations` table
of the names applied, each name now a revision id, with gaps where a module holding a migration
was never imported by the commands run on it. It is adopted on its first `upgrade`: the
revisions are walked in order, one already applied is stamped, one missing is applied, then the
rest as for any store. The `migrations` table is left as it was, a record of that history (and
what an older lockerctl reads, should one be run on it again); nothing reads it once
`alembic_version` exists.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

HERE = Path(__file__).resolve().parent
# The newest revision. Only a shortcut (tests/host/test_migrations.py checks it is the history's
# head): a store at it opens without loading Alembic; any other store runs `upgrade` in full.
HEAD = "0016_mail_seen"
VERSION_TABLE = "alembic_version"
LEGACY_TABLE = "migrations"  # the names applied by lockerctl before Alembic
_PG_LOCK = 0x6C6F636B  # pg_advisory_xact_lock key held while a PostgreSQL store migrates


class MigrationError(Exception):
    """A database this lockerctl cannot bring up to date; the message is for the user."""


def config(connection: sa.Connection) -> Config:
    """Alembic's configuration for this package's history, running on `connection`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def script() -> ScriptDirectory:
    """The revisions (read once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(HERE))


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    return [s.revision for s in reversed(list(script().walk_revisions()))]


def current(conn: sa.Connection) -> str | None:
    """The revision the database is at (None: none recorded)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _legacy_names(conn: sa.Connection) -> set[str] | None:
    """The names in the pre-Alembic `migrations` table (None: there is none)."""
    if not sa.inspect(conn).has_table(LEGACY_TABLE):
        return None
    return set(conn.execute(sa.text(f"SELECT name FROM {LEGACY_TABLE}")).scalars())


def applied(engine: sa.Engine) -> list[str]:
    """The revisions the database has, oldest first. A database not yet adopted (made before
    Alembic and not opened since): the names its `migrations` table records, in order."""
    with engine.connect() as conn, conn.begin():
        at = current(conn)
        old = _legacy_names(conn) if at is None else None
    if at is None:
        return sorted(old or ())
    _check_known(at)
    return [s.revision for s in script().iterate_revisions(at, "base")][::-1]


def upgrade(engine: sa.Engine) -> list[str]:
    """Brings the database to the newest revision (adopting a pre-Alembic one); returns the
    revisions applied now, in order. MigrationError for a database this code does not know."""
    with engine.connect() as conn, conn.begin():
        if current(conn) == HEAD:
            return []
    # classlocker_write: the store's SQLite engine begins this transaction BEGIN IMMEDIATE
    with engine.connect().execution_options(classlocker_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        return _upgrade(conn)


def _upgrade(conn: sa.Connection) -> list[str]:
    from alembic import command

    done: list[str] = []

    def applied_step(ctx, step, heads, run_args) -> None:
        if step.is_upgrade and not step.is_stamp:
            done.append(step.up_revision_id)

    cfg = config(conn)
    cfg.attributes["on_version_apply"] = applied_step
    at = current(conn)
    if at is None:
        old = _legacy_names(conn)
        if old is not None:
            _adopt(cfg, old)
    else:
        _check_known(at)
    command.upgrade(cfg, "head")
    return done


def _adopt(cfg: Config, old: set[str]) -> None:
    from alembic import command

    ordered = revisions()
    unknown = sorted(old - set(ordered))
    if unknown:
        raise MigrationError(
            f"the store records migrations this lockerctl does not know ({', '.join(unknown)}):"
            " it was made by another version; nothing changed"
        )
    for revision in ordered:
        if revision in old:
            command.stamp(cfg, revision)
        else:
            command.upgrade(cfg, revision)


def _check_known(at: str) -> None:
    if at not in revisions():
        raise MigrationError(
            f"the store's schema is at revision {at}, which this lockerctl does not know (a"
            " newer version made it?); nothing changed"
        )
