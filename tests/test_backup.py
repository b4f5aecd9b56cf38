"""`lockerctl backup` while `serve` runs and a real locker keeps sending events, then `lockerctl
restore` into a fresh database: the copy's chain verifies, every event stored before the backup
began is in it, and a non-empty database is refused (SQLite, and PostgreSQL through pg_dump)."""

import datetime as dt
import json
import stat
import threading
import time

import pytest
import sqlalchemy as sa
from harness import ROOT, lockerctl, wait_for

pytestmark = pytest.mark.slow

SATURDAY_NOON = int(dt.datetime(2026, 11, 7, 12, 0, tzinfo=dt.UTC).timestamp())  # in term
STAFF_CARD = "04B20001"  # Ms Evans, docs/examples/roster.csv


def _events(db: str) -> set[tuple[str, int, str]]:
    url = db.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT locker_id, seq, type FROM events")).all()
    finally:
        engine.dispose()
    return {(r[0], r[1], r[2]) for r in rows}


class Stream:
    """Deposits and retrievals on the weekend (nothing enforced), as fast as the locker answers,
    until stopped: a steady stream of events into `serve`."""

    def __init__(self, locker):
        self.locker = locker
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            while not self.stop.is_set():
                reply = self.locker.tap(STAFF_CARD)
                assert reply.get("result") == "granted", reply
                self.locker.door(reply["bay"], "open")
                self.locker.door(reply["bay"], "close")
        except Exception as e:  # reported by the test
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def _school(db, tmp_path, broker, make_locker, make_serve):
    lockerctl("roster", "import", ROOT / "docs/examples/roster.csv", db=db)
    lockerctl("timetable", "set", ROOT / "docs/examples/timetable.toml", db=db)
    out = tmp_path / "L1.json"
    lockerctl("locker", "add", "L1", "--bays", 4, "--broker", broker.address, "-o", out, db=db)
    device = json.loads(out.read_text())
    device["data_dir"] = str(tmp_path / "data-L1")
    make_serve(db, broker)
    locker = make_locker("L1", broker=broker, device=device)
    wait_for(lambda: locker.state()["config"] is not None, timeout=30, what="config")
    locker.clock(SATURDAY_NOON)
    return locker


def _backup_during_stream(db, tmp_path, locker, copies=3):
    """Backs up `copies` times while events arrive; returns [(file, events stored before)]."""
    taken = []
    with Stream(locker) as stream:
        for i in range(copies):
            n = len(_events(db))
            wait_for(lambda n=n: len(_events(db)) > n, timeout=30, what="events")
            before = _events(db)
            target = tmp_path / f"copy{i}"
            r = lockerctl("backup", target, db=db)
            assert "audit trail intact in the copy" in r.stdout, r.stdout
            taken.append((target, before))
        n = len(_events(db))
        wait_for(lambda: len(_events(db)) > n, timeout=30, what="events after the backups")
    assert stream.error is None, stream.error
    wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="every event acknowledged")
    return taken


def _check_restores(taken, final, fresh_db, tmp_path):
    last, before = taken[-1]
    assert stat.S_IMODE(last.stat().st_mode) == 0o600
    r = lockerctl("restore", last, db=fresh_db)
    assert "audit trail intact" in r.stdout, r.stdout
    assert "intact" in lockerctl("audit", "verify", db=fresh_db).stdout
    restored = _events(fresh_db)
    assert before <= restored, "an event stored before the backup began is missing"
    assert restored <= final and len(restored) < len(final)  # the stream went on after it
    assert {t for _, _, t in restored} >= {"deposit", "retrieve"}
    # A database that holds anything is refused, with one line, and left as it was.
    r = lockerctl("restore", taken[0][0], db=fresh_db, check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not empty" in r.stderr, r.stderr
    assert _events(fresh_db) == restored


def test_backup_while_serving_then_restore_sqlite(
    tmp_path, broker, db_url, make_locker, make_serve
):
    locker = _school(db_url, tmp_path, broker, make_locker, make_serve)
    taken = _backup_during_stream(db_url, tmp_path, locker)
    for target, before in taken:  # every copy holds what was stored when it began
        assert before <= _events(f"sqlite:///{target}")
        assert target.read_bytes().startswith(b"SQLite format 3\x00")
    final = _events(db_url)
    _check_restores(taken, final, f"sqlite:///{tmp_path / 'restored.db'}", tmp_path)
    # The nightly timer's form: dated copies in a directory, the newest N kept.
    keep = tmp_path / "nightly"
    keep.mkdir()
    for _ in range(3):
        lockerctl("backup", "--dir", keep, "--keep", 2, db=db_url)
        time.sleep(1.1)  # the names have a resolution of one second
    names = sorted(p.name for p in keep.iterdir())
    assert len(names) == 2 and all(n.startswith("classlocker-") for n in names), names


def test_backup_while_serving_then_restore_postgresql(
    tmp_path, broker, postgres_url, make_locker, make_serve
):
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS restored"))
        conn.execute(sa.text("CREATE DATABASE restored"))
    engine.dispose()
    locker = _school(postgres_url, tmp_path, broker, make_locker, make_serve)
    taken = _backup_during_stream(postgres_url, tmp_path, locker, copies=2)
    for target, _ in taken:
        assert target.read_bytes().startswith(b"PGDMP")
    final = _events(postgres_url)
    fresh = postgres_url.rsplit("/", 1)[0] + "/restored"
    _check_restores(taken, final, fresh, tmp_path)
