"""Stores made by older host code upgrade in place, on SQLite and on PostgreSQL.

- Commit 889016a (tests/fixtures/make_store_889016a.py: before journal ids, event MACs and
  checkpoints): upgrades with revision 0005 and still verifies; its old events keep their
  identity (journal ""), the upgraded store takes a new journal of the same locker from seq 1,
  and what verify now covers of old rows (`sort_ts`) is checked on them too.
- Commit 403e30d (tests/fixtures/make_store_403e30d.py: the last with named migrations in a
  `migrations` table, two of them never applied): adopted into the Alembic history (the two
  applied, the rest stamped), its trail verifies to the head the old code printed, its data reads
  back, and its schema is then the one a new store gets.
"""

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import lockerctl, pg_bin
from lockerctl import accounts, migrations
from lockerctl.store import Store
from lockerctl.store import alerts as store_alerts
from lockerctl.store import consents as XC
from lockerctl.store import exceptions as X
from lockerctl.store import fleet as store_fleet
from lockerctl.store import tokens as store_tokens

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# What the old code's own `verify_trail` said of each store when it made it.
SQLITE_HEAD = "081592a9985737cd9625f1d3ef514b171adf292a18bb33bc00d4e70fc690afe4"
PG_HEAD = "5fb0ca47411a7508f7a28db117eee9a99183578b559730ff974b10539d618861"
ENTRIES = 13
JID = "c3c3c3c3c3c3c3c3"


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


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def load_pg_dump(url: str, name: str) -> None:
    """Empties the database's public schema and loads the dump `name` into it."""
    engine = _engine(url)
    with engine.begin() as conn:  # start from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    loaded = subprocess.run(
        [pg_bin("psql"), "-v", "ON_ERROR_STOP=1", "-q", "-d", url, "-f", str(FIXTURES / name)],
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr


def test_postgresql_store_of_889016a_upgrades_and_verifies(postgres_url):
    load_pg_dump(postgres_url, "store-889016a.pg.sql")
    check_upgraded(postgres_url, PG_HEAD)


# -- 403e30d: named migrations adopted into the Alembic history --------------------------------

# What the old code's `audit verify` printed of each store when it made it.
SQLITE_HEAD_403 = "c36e50db92873694d9e55fb39c1456349b7be0d10af69c25bee2c44739ba0121"
PG_HEAD_403 = "e6e82aeeca1ccbe007b3c06e7b1bcb39543b05213939f442fdeb2a8135ecb3a9"
ENTRIES_403 = 21
NOW_403 = 1_790_100_000
# the modules holding these were never imported by the old code that made the fixtures
NEVER_APPLIED = ["0012_firmware_offers", "0014_api_tokens"]
BOOKKEEPING = {"alembic_version", "migrations"}  # the histories, old and new


def schema(url: str) -> dict:
    """Every table (but the histories') with its columns, key, indexes, unique constraints and
    foreign keys, as the database reports them."""
    engine = _engine(url)
    try:
        insp = sa.inspect(engine)
        out = {}
        for t in sorted(set(insp.get_table_names()) - BOOKKEEPING):
            out[t] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in insp.get_columns(t)
                ],
                "key": insp.get_pk_constraint(t)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(t)
                ),
                "uniques": sorted(
                    (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(t)
                ),
                "foreign": sorted(
                    (
                        tuple(f["constrained_columns"]),
                        f["referred_table"],
                        tuple(f["referred_columns"]),
                    )
                    for f in insp.get_foreign_keys(t)
                ),
            }
        return out
    finally:
        engine.dispose()


def check_adopted_403e30d(url: str, head: str) -> None:
    every = migrations.revisions()
    st = Store.open(url, migrate=False)
    try:
        # before: the names the old `migrations` table records, with its gaps
        assert st.applied_migrations() == [r for r in every if r not in NEVER_APPLIED]
        assert st.migrate() == NEVER_APPLIED  # the rest stamped, not run again
        assert st.applied_migrations() == every
        assert st.migrate() == []
        assert st.verify_trail() == (ENTRIES_403, head)
        # the data reads back
        rows = list(st.events("school"))
        assert len(rows) == 7 and {r.jid for r in rows} == {"a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"}
        assert [r.reason for r in rows if r.seq == 4] == ["override"]  # after the redaction
        assert len(st.grants("school", include_ended=True, now=NOW_403)) == 2
        acc = accounts.Accounts(st, "school")
        assert acc.authenticate("office1", "correct horse 1") is not None
        (forced,) = [r for r in rows if r.type == "door_forced"]
        assert acc.acknowledgements()[f"event:{forced.id}"][0] == "office1"
        assert store_alerts.notes(st, "school") == {f"event:{forced.id}": "checked, cleaner's key"}
        assert [a.person_id for a in XC.list_approvers(st, "school")] == ["H001"]
        assert len(XC.list_consents(st, "school", False, NOW_403)) == 1
        assert len(X.list_exemptions(st, "school", False, False, NOW_403)) == 1
        assert len(X.list_visitors(st, "school", False, NOW_403)) == 1
        # the two tables the adoption made are in use
        store_tokens.add_token(st, "school", "office1", "reports", actor="test")
        store_fleet.record_offers(st, "school", ["L1"], "1.2.0", 3, 1000, "test")
        assert [t.label for t in store_tokens.tokens(st, "school")] == ["reports"]
        assert list(store_fleet.offers(st, "school")) == ["L1"]
        assert st.verify_trail()[0] == ENTRIES_403 + 2
    finally:
        st.close()


def test_sqlite_store_of_403e30d_is_adopted_and_verifies(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(FIXTURES / "store-403e30d.sqlite", path)
    url = f"sqlite:///{path}"
    out = lockerctl("audit", "verify", "--no-broker", db=url).stdout  # adopts on open
    assert f"intact: {ENTRIES_403} entries, head {SQLITE_HEAD_403}" in out
    shutil.copy(FIXTURES / "store-403e30d.sqlite", path)
    check_adopted_403e30d(url, SQLITE_HEAD_403)
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    Store.open(fresh).close()
    assert schema(url) == schema(fresh)


def test_postgresql_store_of_403e30d_is_adopted_and_verifies(postgres_url):
    load_pg_dump(postgres_url, "store-403e30d.pg.sql")
    check_adopted_403e30d(postgres_url, PG_HEAD_403)
    out = lockerctl("audit", "verify", "--no-broker", db=postgres_url).stdout
    assert f"intact: {ENTRIES_403 + 2} entries" in out
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = _engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    fresh = postgres_url.rpartition("/")[0] + "/" + name
    try:
        Store.open(fresh).close()
        assert schema(postgres_url) == schema(fresh)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("store-889016a.sqlite", 200_000),
        ("store-889016a.pg.sql", 200_000),
        ("store-403e30d.sqlite", 400_000),  # 76 pages: one at least per table and index
        ("store-403e30d.pg.sql", 200_000),
    ],
)
def test_fixtures_are_small(name, limit):
    assert (FIXTURES / name).stat().st_size < limit
