"""A store made by the host code of commit 889016a (tests/fixtures/make_store_889016a.py: before
journal ids, event MACs and checkpoints) upgrades with migration 0005 and still verifies, on
SQLite and on PostgreSQL; its old events keep their identity (journal ""), the upgraded store
takes a new journal of the same locker from seq 1, and what verify now covers of old rows
(`sort_ts`) is checked on them too."""

import glob
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import lockerctl
from lockerctl.store import Store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# What the old code's own `verify_trail` said of each store when it made it.
SQLITE_HEAD = "081592a9985737cd9625f1d3ef514b171adf292a18bb33bc00d4e70fc690afe4"
PG_HEAD = "5fb0ca47411a7508f7a28db117eee9a99183578b559730ff974b10539d618861"
ENTRIES = 13
JID = "c3c3c3c3c3c3c3c3"


def psql() -> str:
    found = shutil.which("psql") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))), None
    )
    assert found, "PostgreSQL's psql is missing: tools/install-system-deps installs it"
    return found


def check_upgraded(url: str, head: str) -> None:
    st = Store.open(url)
    try:
        assert "0005_journal_ids" in st.applied_migrations()
        assert st.verify_trail() == (ENTRIES, head)
        rows = list(st.events("school"))
        assert len(rows) == 7 and {r.jid for r in rows} == {""}
        assert st.ack_seq("school", "L1") == 4 and st.ack_seq("school", "L2") == 3
        assert st.duplicates("school") == 1  # L1's resent seq 3, counted by the old code
        # the old journal's resend is still a duplicate; a new journal starts at seq 1
        again = {"seq": 4, "ts": 1_790_000_030, "type": "retrieve", "bay": 1}
        again |= {"person": "P001", "by": "S001", "reason": "override"}
        new = {"seq": 1, "ts": 1_790_000_100, "type": "boot", "jid": JID, "mac": "0" * 32}
        result = st.ingest_journals("school", [("L1", again), ("L1", new)])
        assert result.acks == {("L1", ""): 4, ("L1", JID): 1} and result.stored == 1
        # L2's journal from before ids, given an id by the firmware's upgrade, goes on from
        # seq 4: acknowledged from the old journal's watermark on
        upgraded = "d4d4d4d4d4d4d4d4"
        go_on = [{"seq": s, "ts": None, "type": "boot", "jid": upgraded} for s in (5, 4)]
        result = st.ingest_journals("school", [("L2", e) for e in go_on])
        assert result.acks == {("L2", upgraded): 5}
        count, _ = st.verify_trail()
        assert count == ENTRIES + 3
    finally:
        st.close()


def test_sqlite_store_of_889016a_upgrades_and_verifies(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(FIXTURES / "store-889016a.sqlite", path)
    url = f"sqlite:///{path}"
    check_upgraded(url, SQLITE_HEAD)
    assert "intact: 16 entries" in lockerctl("audit", "verify", "--no-broker", db=url).stdout
    # an old row's sort_ts is not in its content: verify recomputes it from ts / received_at
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET sort_ts = sort_ts + 86400 WHERE id = 2"))
    engine.dispose()
    r = lockerctl("audit", "verify", "--no-broker", db=url, check=False)
    assert r.returncode == 1 and "entry" in r.stderr and "sort_ts" in r.stderr


def test_postgresql_store_of_889016a_upgrades_and_verifies(postgres_url):
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # start from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    loaded = subprocess.run(
        [
            psql(),
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-d",
            postgres_url,
            "-f",
            str(FIXTURES / "store-889016a.pg.sql"),
        ],
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    check_upgraded(postgres_url, PG_HEAD)


@pytest.mark.parametrize("name", ["store-889016a.sqlite", "store-889016a.pg.sql"])
def test_fixtures_are_small(name):
    assert (FIXTURES / name).stat().st_size < 200_000
