"""The store: migrations, ingest (duplicates, ack watermark), lockers, configuration inputs."""

import os
import sqlite3
import stat

import pytest
import sqlalchemy as sa
from lockerctl import migrations
from lockerctl.store import Store, StoreError


def ev(seq, ts=1_790_000_000, type="boot", **kw):
    return {
        "seq": seq,
        "ts": ts,
        "type": type,
        "bay": None,
        "person": None,
        "by": None,
        "reason": None,
        **kw,
    }


ROWS = [
    {
        "person_id": "P1",
        "name": "Ann",
        "role": "pupil",
        "year": 6,
        "walk_home": True,
        "card_uid": "04A1B2C3",
    },
    {
        "person_id": "S1",
        "name": "Sue",
        "role": "staff",
        "year": 0,
        "walk_home": False,
        "card_uid": "11223344",
    },
    {
        "person_id": "S1",
        "name": "Sue",
        "role": "slt",
        "year": 0,
        "walk_home": False,
        "card_uid": "11223344556677",
    },
]


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'lockers.db'}"


@pytest.fixture
def st(url):
    s = Store.open(url)
    yield s
    s.close()


def test_new_sqlite_file_is_owner_only_and_in_wal_mode(st, tmp_path):
    path = tmp_path / "lockers.db"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_migrations_are_recorded_and_idempotent(st, url):
    names = migrations.revisions()  # every revision, whatever modules are loaded
    assert "0007_config_changes" in names and "0008_settings" in names
    assert st.applied_migrations() == names
    again = Store.open(url)
    assert again.migrate() == []
    assert again.applied_migrations() == names
    again.close()


def _back_to_0015(url):
    """The store as the version before `0016_mail_seen` left it."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE mail_seen")
        conn.execute("UPDATE alembic_version SET version_num = '0015_consent_approvers'")
    conn.close()


def test_a_new_revision_applies_once(url):
    Store.open(url).close()
    _back_to_0015(url)
    s = Store.open(url, migrate=False)
    assert "0016_mail_seen" not in s.applied_migrations()
    assert s.migrate() == ["0016_mail_seen"]
    assert sa.inspect(s.engine).has_table("mail_seen")
    assert s.migrate() == []
    assert s.applied_migrations()[-1] == "0016_mail_seen"
    s.close()


def test_failed_migration_changes_nothing(url):
    Store.open(url).close()
    _back_to_0015(url)
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # 0016 makes its table, then recording it fails
        conn.execute(
            "CREATE TRIGGER boom BEFORE UPDATE ON alembic_version"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
    conn.close()
    with pytest.raises(sa.exc.IntegrityError, match="boom"):
        Store.open(url)
    s = Store.open(url, migrate=False)
    assert "0016_mail_seen" not in s.applied_migrations()
    assert not sa.inspect(s.engine).has_table("mail_seen")
    s.close()


def test_ingest_counts_duplicates_and_acks_contiguous_seqs(st):
    assert st.ingest("school", [("L1", ev(1)), ("L1", ev(2)), ("L1", ev(2))]) == {"L1": 2}
    assert st.duplicates("school") == 1
    # a gap: 3 missing, so the ack stays at 2 while 4 and 5 are stored
    assert st.ingest("school", [("L1", ev(4)), ("L1", ev(5)), ("L1", ev(1))]) == {"L1": 2}
    assert st.duplicates("school") == 2
    assert st.ingest("school", [("L1", ev(3)), ("L2", ev(2))]) == {"L1": 5, "L2": 0}
    assert st.ingest("school", [("L2", ev(1))]) == {"L2": 2}
    assert [(r.locker_id, r.seq) for r in st.events("school", locker="L1")] == [
        ("L1", i) for i in range(1, 6)
    ]
    assert st.duplicates("school") == 2
    assert st.duplicates("other") == 0


def test_ingest_is_one_transaction(st, url):
    # a resend after a commit whose ack was lost: stored once, counted as duplicates
    batch = [("L1", ev(i, type="deposit", bay=1, person="P1")) for i in range(1, 51)]
    assert st.ingest("school", batch) == {"L1": 50}
    assert st.ingest("school", batch) == {"L1": 50}
    assert st.duplicates("school") == 50
    assert st.count_events("school") == 50
    assert st.verify_trail()[0] == 50


def test_ingest_keeps_fields_and_unknown_ts(st):
    st.ingest(
        "school", [("L1", ev(1, ts=None, type="deposit", bay=3, person="P1", by="S1", reason="r"))]
    )
    (row,) = list(st.events("school"))
    assert (row.ts, row.type, row.bay, row.person, row.by, row.reason) == (
        None,
        "deposit",
        3,
        "P1",
        "S1",
        "r",
    )
    assert row.sort_ts == row.received_at


def test_lockers_commands_and_status(st, url):
    v0 = st.config_version("school")
    v1 = st.add_locker("school", "L1", 8, b"\x01" * 32, "pw", control_port=7101, data_dir="var/L1")
    assert v1 == v0 + 1
    with pytest.raises(StoreError):
        st.add_locker("school", "L1", 8, b"\x01" * 32, "pw")
    with pytest.raises(StoreError):
        st.add_locker("school", "bad id!", 8, b"\x01" * 32, "pw")
    row = st.locker("school", "L1")
    assert (row.id, row.bays, row.secret, row.broker_password, row.online) == (
        "L1",
        8,
        b"\x01" * 32,
        "pw",
        None,
    )
    assert st.locker("school", "L9") is None and st.locker("other", "L1") is None
    ids = [st.next_command_id("school", "L1") for _ in range(3)]
    again = Store.open(url)
    ids.append(again.next_command_id("school", "L1"))
    again.close()
    assert ids == [1, 2, 3, 4]
    with pytest.raises(StoreError):
        st.next_command_id("school", "L9")
    assert st.set_locker_status("school", "L1", online=True, state={"pending": 2, "config": 4})
    assert not st.set_locker_status("school", "L9", online=True)
    (row,) = st.lockers("school")
    assert row.online is True and row.state == {"pending": 2, "config": 4} and row.last_seen
    st.set_locker_status("school", "L1", online=False)
    assert st.locker("school", "L1").state == {"pending": 2, "config": 4}
    v2 = st.set_locker_secret("school", "L1", b"\x02" * 32, password="pw2")
    assert v2 == max(v1, 4) + 1  # above the version the locker reports running (4)
    row = st.locker("school", "L1")
    assert row.secret == b"\x02" * 32 and row.broker_password == "pw2"


def test_broker_credentials(st):
    assert st.broker_credentials("school") is None
    st.set_broker_credentials("school", "host", "s3cret")
    st.set_broker_credentials("school", "host", "s3cret2")
    assert st.broker_credentials("school") == ("host", "s3cret2")


def test_config_inputs_and_versions(st):
    st.add_locker("school", "L1", 8, b"\x01" * 32, "pw")
    st.add_locker("school", "L2", 8, b"\x01" * 32, "pw")
    v = st.config_version("school")
    st.replace_roster("school", ROWS)
    st.revoke_cards("school", "S1", "11223344")
    now = 1_790_000_000
    g_all = st.add_grant("school", "P1", now - 10, now + 100, "S1", "medical")
    g_l2 = st.add_grant("school", "P1", now + 50, now + 100, "S1", "trip", locker_id="L2")
    st.add_grant("school", "P1", now - 100, now - 10, "S1", "ended")
    g_rev = st.add_grant("school", "P1", now, now + 100, "S1", "revoked")
    st.revoke_grant("school", g_rev)
    assert st.config_version("school") == v + 7
    cards, tt, grants = st.config_inputs("school", "L1", now=now)
    assert [(c.uid, c.person_id, c.role, c.year, c.walk_home, c.revoked) for c in cards] == [
        ("04A1B2C3", "P1", "pupil", 6, True, False),
        ("11223344", "S1", "staff", 0, False, True),
        ("11223344556677", "S1", "slt", 0, False, False),
    ]
    assert tt is None
    assert [g.id for g in grants] == [g_all]
    assert grants[0].from_ts == now - 10 and grants[0].by == "S1"
    assert [g.id for g in st.config_inputs("school", "L2", now=now)[2]] == [g_all, g_l2]
    with pytest.raises(StoreError):
        st.revoke_grant("school", g_rev)
    with pytest.raises(StoreError):
        st.revoke_cards("school", "S1", "DEADBEEF")
    st.bump_config("school")
    assert st.config_version("school") == v + 8


def test_timetable_round_trip(st):
    text = 'timezone = "Europe/London"\nhome_time = "15:15"\n'
    parsed = {"timezone": "Europe/London", "home_time": "15:15"}
    st.set_timetable("school", text, parsed, "Europe/London")
    row = st.timetable("school")
    assert row.source == text and row.parsed == parsed
    assert st.timezone("school") == "Europe/London"
    assert st.timezone("elsewhere", default="UTC") == "UTC"


def test_person_lookup(st):
    st.replace_roster("school", ROWS)
    p = st.person("school", "S1")
    assert p.name == "Sue" and p.roles == {"staff", "slt"} and p.role == "staff"
    st.replace_roster("school", ROWS[:1])
    assert st.person("school", "S1") is None
    assert st.person("school", "S1", include_inactive=True).active is False


def test_postgresql_path(postgres_url):
    url = os.environ.get("LOCKER_TEST_POSTGRES") or postgres_url
    s = Store.open(url)
    with s.engine.begin() as conn:  # start from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    s.close()
    s = Store.open(url)
    assert Store.open(url).migrate() == []
    assert s.ingest("school", [("L1", ev(1)), ("L1", ev(3)), ("L1", ev(1))]) == {"L1": 1}
    assert s.ingest("school", [("L1", ev(2, ts=None, person="P1"))]) == {"L1": 3}
    assert s.duplicates("school") == 1
    s.add_locker("school", "L1", 8, b"\x01" * 32, "pw")
    assert [s.next_command_id("school", "L1") for _ in range(2)] == [1, 2]
    s.set_locker_status("school", "L1", online=True, state={"pending": 0})
    assert s.locker("school", "L1").secret == b"\x01" * 32
    s.replace_roster("school", ROWS)
    s.revoke_cards("school", "P1")
    s.add_grant("school", "P1", 1, 2**40, "S1", "r")
    cards, _, grants = s.config_inputs("school", "L1")
    assert [c.revoked for c in cards] == [True, False, False] and len(grants) == 1
    assert [r.seq for r in s.events("school", person="P1")] == [2]
    assert s.verify_trail()[0] == 7
    s.redact_before("school", 2**40)
    assert s.verify_trail()[0] == 8
    s.close()
