"""Backups of the store, made while `serve` runs, and their restore into an empty database.

SQLite: SQLite's online backup API (`sqlite3.Connection.backup`) copies one consistent snapshot
(the copy is a read transaction; in WAL mode `serve` keeps writing meanwhile). PostgreSQL:
`pg_dump --format=custom` of a snapshot exported by a REPEATABLE READ transaction, the chain
verified inside that same snapshot, so what is checked is exactly what was dumped.

Every copy's audit chain is verified before the copy is kept; the copy is written owner-only
(0600) under a temporary name and renamed into place, so a failed backup leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa  # whole-database copies (snapshots, pg_dump), beneath any area's queries

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"
NAME_RE = re.compile(r"classlocker-\d{4}-\d{2}-\d{2}T\d{6}Z\.(sqlite|pgdump)\Z")
# Tables whose rows make a database "not empty" for `restore`.
CONTENT_TABLES = ("trail_entries", "events", "lockers", "people", "users")


class BackupError(Exception):
    """A backup or restore that cannot be done: the message is one line for the user."""


def _url(db: str) -> sa.engine.URL:
    try:
        return sa.engine.make_url(db)
    except sa.exc.ArgumentError:
        raise BackupError(f"bad database URL {db!r}") from None


def backend(db: str) -> str:
    name = _url(db).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise BackupError(f"backups of {name} databases are not supported")
    return name


def libpq(db: str) -> tuple[str, dict]:
    """The URL for pg_dump/pg_restore (no driver suffix, no password: a command line is
    visible to every user) and the environment carrying the password."""
    url = _url(db).set(drivername="postgresql")
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
        url = url.set(password=None)
    return url.render_as_string(hide_password=False), env


def dated_name(db: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    ext = "sqlite" if backend(db) == "sqlite" else "pgdump"
    return f"classlocker-{now:%Y-%m-%dT%H%M%S}Z.{ext}"


def prune(directory: Path, keep: int) -> list[Path]:
    """Removes all but the newest `keep` dated backups in DIRECTORY; returns the removed."""
    found = sorted(p for p in directory.iterdir() if NAME_RE.match(p.name))
    removed = found[:-keep] if keep > 0 else []
    for path in removed:
        path.unlink()
    return removed


def _private_tmp(target: Path) -> Path:
    directory = target.parent
    if not directory.is_dir():
        raise BackupError(f"cannot write {target}: no directory {directory}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.fchmod(fd, 0o600)
    os.close(fd)
    return Path(tmp)


def _verify(store, progress=None) -> tuple[int, str]:
    from .trail import Broken

    try:
        return store.verify_trail(progress=progress) if progress else store.verify_trail()
    except Broken as e:
        raise BackupError(f"the copy's audit trail does not verify: {e}") from None


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def backup(db: str, target: Path) -> tuple[int, str]:
    """Writes a verified copy of the store DB to TARGET (0600); returns (entries, head)."""
    kind = backend(db)
    target = target.resolve()
    if target.is_dir():
        raise BackupError(f"{target} is a directory (use --dir DIR for dated copies)")
    tmp = _private_tmp(target)
    try:
        if kind == "sqlite":
            result = _backup_sqlite(db, tmp)
        else:
            result = _backup_pg(db, tmp)
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
        raise
    return result


def _sqlite_path(db: str) -> str:
    path = _url(db).database
    if not path or path == ":memory:" or path.startswith("file:"):
        raise BackupError(f"{db}: not a database file")
    if not os.path.exists(path):
        raise BackupError(f"no database at {path}")
    return path


def _backup_sqlite(db: str, tmp: Path) -> tuple[int, str]:
    from .store import Store

    src = sqlite3.connect(_sqlite_path(db), timeout=30)
    dst = sqlite3.connect(tmp)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        src.backup(dst)  # all pages in one step: one read transaction, one snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
    except sqlite3.Error as e:
        raise BackupError(f"cannot copy {db}: {e}") from None
    finally:
        dst.close()
        src.close()
    # A plain engine: no WAL pragma on the copy, which stays one self-contained file.
    engine = sa.create_engine(f"sqlite:///{tmp}")
    try:
        return _verify(Store(engine))
    finally:
        engine.dispose()


def _pg_tool(name: str) -> str:
    import glob

    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise BackupError(f"{name} is not installed (apt install postgresql-client)")
    return found


def _backup_pg(db: str, tmp: Path) -> tuple[int, str]:
    from sqlalchemy import event

    from .store import Store

    url = _url(db).set(drivername="postgresql+psycopg")
    holder = sa.create_engine(url, isolation_level="REPEATABLE READ")
    try:
        with holder.connect() as conn:
            snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
            target, env = libpq(db)
            proc = subprocess.run(
                [
                    _pg_tool("pg_dump"),
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={tmp}",
                    target,
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode:
                lines = proc.stderr.strip().splitlines() or ["failed"]
                raise BackupError(f"pg_dump: {lines[-1]}")
            # The chain of exactly what was dumped: the same snapshot, imported.
            engine = sa.create_engine(url, isolation_level="REPEATABLE READ")

            @event.listens_for(engine, "begin")
            def _same_snapshot(c):
                c.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")

            copy = Store(engine)
            try:
                return _verify(copy)
            finally:
                engine.dispose()
    except sa.exc.SQLAlchemyError as e:
        raise BackupError(f"cannot back up {_safe(db)}: {_one_line(e)}") from None
    finally:
        holder.dispose()


def _safe(db: str) -> str:
    """The URL without its password, for a message."""
    try:
        return _url(db).render_as_string(hide_password=True)
    except BackupError:
        return "the database"


def _one_line(e: Exception) -> str:
    orig = getattr(e, "orig", None)
    return str(orig if orig is not None else e).strip().splitlines()[0]


def kind_of(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise BackupError(f"cannot read {path}: {e.strerror or e}") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_MAGIC):
        return "postgresql"
    raise BackupError(f"{path} is not a classlocker backup (neither SQLite nor pg_dump custom)")


def what_it_holds(engine: sa.Engine) -> list[str]:
    """The content tables with rows ([] for an empty or brand-new database)."""
    names = set(sa.inspect(engine).get_table_names())
    full = []
    with engine.connect() as conn:
        for table in CONTENT_TABLES:
            if table in names and conn.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1").first():
                full.append(table)
    return full


def restore(source: Path, db: str) -> tuple[int, str, list[str]]:
    """Fills the EMPTY database DB from SOURCE, migrates it and verifies it; returns
    (entries, head, migrations applied)."""
    from .store import Store

    kind = kind_of(source)
    target_kind = backend(db)
    if kind != target_kind:
        raise BackupError(f"{source} is a {kind} backup: restore it into a {kind} database")
    path = ""
    if kind == "sqlite":
        path = _url(db).database or ""
        if not path or path == ":memory:":
            raise BackupError(f"{db}: not a database file")
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise BackupError(f"no directory for {path}")
        engine = sa.create_engine(_url(db)) if os.path.exists(path) else None
    else:
        engine = sa.create_engine(_url(db).set(drivername="postgresql+psycopg"))
    if engine is not None:
        try:
            full = what_it_holds(engine)
        except sa.exc.SQLAlchemyError as e:
            raise BackupError(f"cannot open {_safe(db)}: {_one_line(e)}") from None
        finally:
            engine.dispose()
        if full:
            raise BackupError(
                f"{_safe(db)} is not empty (it has {', '.join(full)}): restore only into an empty "
                "database"
            )
    if kind == "sqlite":
        _restore_sqlite(source, path)
    else:
        _restore_pg(source, db)
    store = Store.open(db, migrate=False)
    try:
        applied = store.migrate()
        count, head = _verify(store)
    finally:
        store.close()
    return count, head, applied


def _restore_sqlite(source: Path, path: str) -> None:
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(path, timeout=30)
    try:
        src.backup(dst)  # replaces every page of the (empty) target
    except sqlite3.Error as e:
        raise BackupError(f"cannot restore {source}: {e}") from None
    finally:
        dst.close()
        src.close()
    os.chmod(path, 0o600)


def _restore_pg(source: Path, db: str) -> None:
    target, env = libpq(db)
    proc = subprocess.run(
        [
            _pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={target}",
            str(source),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or ["failed"]
        raise BackupError(f"pg_restore: {lines[-1]}")
