"""The store's engine and what every area shares: opening SQLite or PostgreSQL, the read and
write transactions, the multi-row insert of ingest, and small helpers.

SQLite (the default) runs with WAL and foreign keys on; every write transaction starts with
`BEGIN IMMEDIATE`, so two processes (`serve` and a command) never fail upgrading a read lock.
Nothing here is SQLite-only: types are portable and the chain's head row is read `FOR UPDATE`,
which serialises appends on PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import time
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from .tables import MAX_TEXT, sites


class StoreError(Exception):
    """A request the store refuses (unknown locker, bad value): the message is for the user."""


def _now() -> int:
    return int(time.time())


def _text(value, limit=MAX_TEXT):
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return value[:limit]


def ensure_site(conn, site: str) -> None:
    """The site's row, made the first time the site is written to."""
    if conn.execute(sa.select(sites.c.name).where(sites.c.name == site)).first() is None:
        conn.execute(sites.insert().values(name=site, config_version=0, created_at=_now()))


def mask_uid(uid: str) -> str:
    """A card UID as shown outside the store: only its last four digits."""
    return "****" + uid[-4:]


# Placeholder of each DB-API parameter style `_insert_many` writes SQL for itself.
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_INSERT_PARAMS = 10_000  # bound values per multi-row INSERT (SQLite 3.32+ allows 32,766)


def _insert_many(
    conn, table: sa.Table, columns: tuple, rows: list, returning=(), skip_existing=()
) -> list:
    """Inserts `rows` (tuples of plain str/int/bool/None in `columns` order) into `table`;
    the `returning` columns of every row inserted, in no particular order.

    Thousands of rows per batch: SQLAlchemy's per-row parameter processing would cost more than
    the database's work, so the statement is written here for the driver (the values need no
    conversion on SQLite or PostgreSQL): one prepared row executed many times, or with
    `returning`, multi-row VALUES lists. Other drivers get the same through SQLAlchemy Core.
    With `skip_existing` (the columns of a unique key), a row whose key is stored already is
    left out (ON CONFLICT ... DO NOTHING; SQLite and PostgreSQL only) and returns nothing.
    """
    if not rows:
        return []
    dialect = conn.dialect
    ph = _PLACEHOLDER.get(dialect.paramstyle)
    if ph is None and skip_existing:
        raise StoreError(f"ON CONFLICT is not written for the {dialect.name} driver")
    if ph is None:
        dicts = [dict(zip(columns, r, strict=True)) for r in rows]
        if not returning:
            conn.execute(table.insert(), dicts)
            return []
        return conn.execute(table.insert().returning(*returning), dicts).all()
    q = dialect.identifier_preparer
    if dialect.name == "postgresql" and ph == "%s":
        return _insert_unnest(conn, table, columns, rows, returning, skip_existing)
    head = "INSERT INTO {} ({}) VALUES ".format(
        q.format_table(table), ", ".join(q.quote(c) for c in columns)
    )
    one = "(" + ", ".join([ph] * len(columns)) + ")"
    if not returning:
        conn.exec_driver_sql(head + one, rows)
        return []
    tail = " RETURNING " + ", ".join(q.quote(c.name) for c in returning)
    if skip_existing:
        keys = ", ".join(q.quote(c) for c in skip_existing)
        tail = f" ON CONFLICT ({keys}) DO NOTHING" + tail
    per = max(1, _INSERT_PARAMS // len(columns))
    out = []
    for chunk in _chunks(rows, per):
        sql = head + ", ".join([one] * len(chunk)) + tail
        out.extend(conn.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(chunk))).all())
    return out


def _insert_unnest(conn, table, columns, rows, returning, skip_existing) -> list:
    """`_insert_many` on PostgreSQL: one statement with one array parameter per column,
    `INSERT ... SELECT * FROM unnest(...)`. Multi-row VALUES cost psycopg more than the server's
    work (it parses a statement of thousands of placeholders with a regular expression on every
    call: 40 us an event), and executemany one round of the protocol per row."""
    dialect = conn.dialect
    q = dialect.identifier_preparer
    types = [table.c[c].type.compile(dialect=dialect) for c in columns]
    sql = "INSERT INTO {} ({}) SELECT * FROM unnest({})".format(
        q.format_table(table),
        ", ".join(q.quote(c) for c in columns),
        ", ".join(f"%b::{t}[]" for t in types),  # binary: no quoting of each element
    )
    if skip_existing:
        sql += " ON CONFLICT ({}) DO NOTHING".format(", ".join(q.quote(c) for c in skip_existing))
    if returning:
        sql += " RETURNING " + ", ".join(q.quote(c.name) for c in returning)
    out = []
    for chunk in _chunks(rows, 50_000):
        arrays = tuple(list(col) for col in zip(*chunk, strict=True))
        result = conn.exec_driver_sql(sql, arrays)
        if returning:
            out.extend(result.all())
    return out


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _int_or_none(value):
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


# What the database or its driver raises (a connection refused, a table missing): callers that
# report it in one line catch this, not SQLAlchemy's names.
DatabaseError = sa.exc.SQLAlchemyError


def sqlite_database(url: str) -> str | None:
    """The file (or `file:` URI) a SQLite `url` names; None for another database or memory.
    StoreError if `url` is no database URL."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"bad database URL {url!r}") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else parsed.database


def redacted_url(url: str) -> str:
    """`url` without its password (for logs); as given if it is no URL."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def make_engine(url: str) -> sa.Engine:
    """The engine for `url`, creating a new SQLite file owner-only."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"bad database URL {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.drivername in ("postgresql", "postgres"):
        # Plain `postgresql://` (docs/cli.md) means psycopg 3, the driver the package's
        # `postgres` extra installs (SQLAlchemy's default would be psycopg2).
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, pool_pre_ping=True)


def _sqlite_engine(url) -> sa.Engine:
    path = url.database
    if path and path != ":memory:" and not path.startswith("file:"):
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot create database {path}: no directory {directory}")
        if not os.path.exists(path):
            # Owner-only from the start: the store holds lockers' secrets.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Transactions are begun below, not by the driver.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if path and path != ":memory:":
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("classlocker_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


class StoreBase:
    """The engine and its transactions, which every area of `Store` works in."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.url = engine.url

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _write(self):
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.engine.connect().execution_options(classlocker_write=True) as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self):
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def transaction(self):
        """A write transaction for a caller that does several of an area's `fn(conn, ...)` in
        one (the mailer's look: its messages and its marks together, or neither)."""
        return self._write()

    def reading(self):
        """A read transaction, for several of an area's `fn(conn, ...)` over one snapshot."""
        return self._read()
