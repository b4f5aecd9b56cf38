"""Every change that goes into the lockers' bundles (roster import, card revocation, grants,
timetable, a new locker) is checked against what a locker takes before it is committed: a change
that would not fit is refused with a one-line reason naming the limit, and nothing of it is
applied. The limit (`bundle.MAX_BUNDLE`, 512 KiB) holds at least 5,000 cards on one locker.
Also: the site's configuration version is set above every version its lockers report."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import ROOT, lockerctl
from lockerctl import bundle
from lockerctl.configpub import build_locker_bundle
from lockerctl.roster import parse_roster
from lockerctl.store import Store, StoreError
from lockerctl.timetable import parse_timetable

SITE = "school"
TIMETABLE = (ROOT / "docs" / "examples" / "timetable.toml").read_text()


def roster(n: int) -> str:
    lines = ["person_id,name,role,year,walk_home,card_uid", "H001,Hana Head,slt,,no,04C2B2C3"]
    lines += [f"P{i:05d},Pupil {i},pupil,3,no,{0x10000000 + i:08X}" for i in range(n)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def st(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    s.add_locker(SITE, "L1", 8, b"\x01" * 32, "pw")
    yield s
    s.close()


def snapshot(st):
    return (
        st.config_version(SITE),
        len(st.roster(SITE)),
        len(st.grants(SITE)),
        st.timetable(SITE),
        len(st.trail_actions(SITE, 10_000)),
    )


def test_five_thousand_cards_fit_on_one_locker(tmp_path):
    db = f"sqlite:///{tmp_path / 'lockers.db'}"
    lockerctl("locker", "add", "L1", "--bays", 8, db=db)
    lockerctl("locker", "add", "L2", "--bays", 8, db=db)
    (tmp_path / "tt.toml").write_text(TIMETABLE)
    lockerctl("timetable", "set", tmp_path / "tt.toml", db=db)
    (tmp_path / "roster.csv").write_text(roster(5000))
    lockerctl("roster", "import", tmp_path / "roster.csv", db=db)
    st = Store.open(db)
    try:
        assert len(st.roster(SITE)) == 5001
        for row in st.lockers(SITE):
            data = build_locker_bundle(st, SITE, row, st.config_version(SITE), int(time.time()))
            assert len(data) <= bundle.MAX_BUNDLE == 524288
            assert len(bundle.read_bundle(bytes(row.secret), data)["cards"]) == 5001
    finally:
        st.close()
    # and a revocation on top of them is taken
    assert lockerctl("card", "revoke", "P00001", db=db).returncode == 0


def test_a_roster_far_beyond_the_limit_is_refused_with_nothing_imported(st, tmp_path):
    st.replace_roster(SITE, parse_roster(roster(10)))
    before = snapshot(st)
    with pytest.raises(StoreError) as err:
        st.replace_roster(SITE, parse_roster(roster(20_000)))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("the configuration for L1 would be 960,") and "20,001 cards" in msg
    assert "a locker takes at most 524,288 (about " in msg and "nothing was changed" in msg
    assert snapshot(st) == before


def test_the_limit_is_exact_and_a_timetable_that_tips_it_over_is_refused(st):
    # As many cards as fit beside the header without a timetable: accepted, and the bundle
    # really is within the limit. Setting a timetable then needs room that is not there.
    header = bundle.bundle_header("L1", SITE, 2**31, int(time.time()), None, [])
    room = bundle.card_capacity(len(header))
    st.replace_roster(SITE, parse_roster(roster(room - 1)))
    row = st.locker(SITE, "L1")
    data = build_locker_bundle(st, SITE, row, st.config_version(SITE), int(time.time()))
    assert bundle.MAX_BUNDLE - bundle.RECORD < len(data) <= bundle.MAX_BUNDLE
    before = snapshot(st)
    parsed = parse_timetable(TIMETABLE, "timetable")
    with pytest.raises(StoreError, match=r"^the configuration for L1 would be 5\d\d,\d\d\d bytes"):
        st.set_timetable(SITE, TIMETABLE, parsed, parsed["timezone"])
    assert snapshot(st) == before
    # a revocation does not make the bundle larger: still taken
    st.revoke_cards(SITE, "P00000")
    assert st.config_version(SITE) == before[0] + 1


def test_grants_beyond_the_header_limit_are_refused(st):
    st.replace_roster(SITE, parse_roster(roster(3)))
    now = int(time.time())
    n = 0
    with pytest.raises(StoreError) as err:
        for n in range(1000):  # noqa: B007 - how many went in is checked below
            st.add_grant(SITE, "P00001", now, now + 86400, "H001", "trip", None)
    assert "configuration header for L1 would be" in str(err.value)
    assert "at most 16,384" in str(err.value)
    assert 100 < n == len(st.grants(SITE))  # the refused one is not stored


def test_a_new_locker_is_refused_when_its_bundle_would_not_fit(st):
    # Enough grants for L2 alone to fill a header: adding L2 itself stays possible, but adding
    # a site-wide grant then no longer is, for L2's sake.
    st.replace_roster(SITE, parse_roster(roster(3)))
    st.add_locker(SITE, "L2", 8, b"\x02" * 32, "pw")
    now = int(time.time())
    with pytest.raises(StoreError):
        for _ in range(1000):
            st.add_grant(SITE, "P00001", now, now + 86400, "H001", "trip", "L2")
    l2 = len(st.grants(SITE))
    with pytest.raises(StoreError, match="for L2 would be"):
        st.add_grant(SITE, "P00002", now, now + 86400, "H001", "trip", None)
    # one for L1 alone still fits
    st.add_grant(SITE, "P00002", now, now + 86400, "H001", "trip", "L1")
    assert len(st.grants(SITE)) == l2 + 1


def test_the_version_goes_above_what_the_lockers_report(st):
    v = st.config_version(SITE)
    st.set_locker_status(SITE, "L1", online=True, state={"config": v + 40, "bays": []})
    assert st.reported_config_version(SITE) == v + 40
    assert st.bump_config(SITE) == v + 41
    # a report beyond what any host could have sent is not believed
    st.set_locker_status(SITE, "L1", state={"config": 2**32 - 1, "bays": []})
    assert st.bump_config(SITE) == v + 42
    # raise_config_version: only when a locker is at or above the site's version
    assert st.raise_config_version(SITE) == v + 42  # nothing believable above it
    st.set_locker_status(SITE, "L1", state={"config": v + 50, "bays": []})
    assert st.raise_config_version(SITE, actor="serve") == v + 51
    (raised,) = [a for a in st.trail_actions(SITE, 100) if a["action"] == "config_version_raised"]
    assert raised["detail"] == {"from": v + 42, "to": v + 51, "reported": v + 50}
    assert st.config_changed_at(SITE)[0] == v + 51


def test_roster_import_too_big_is_one_line_at_the_command_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'lockers.db'}"
    lockerctl("locker", "add", "L1", "--bays", 8, db=db)
    path = Path(tmp_path / "huge.csv")
    path.write_text(roster(11_000))
    out = lockerctl("roster", "import", path, db=db, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "the configuration for L1 would be" in line and "at most 524,288" in line


def test_versions_and_size_checks_on_postgresql(postgres_url):
    import os

    import sqlalchemy as sa

    url = os.environ.get("LOCKER_TEST_POSTGRES") or postgres_url
    s = Store.open(url)
    with s.engine.begin() as conn:  # start from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    s.close()
    s = Store.open(url)
    try:
        assert "0007_config_changes" in s.applied_migrations()
        s.add_locker(SITE, "L1", 8, b"\x01" * 32, "pw")
        s.set_locker_status(SITE, "L1", online=True, state={"config": 40, "bays": []})
        assert s.bump_config(SITE) == 41
        s.set_locker_status(SITE, "L1", state={"config": 45, "bays": []})
        assert s.raise_config_version(SITE) == 46
        assert s.config_changed_at(SITE)[0] == 46
        s.replace_roster(SITE, parse_roster(roster(5000)))
        before = snapshot(s)
        with pytest.raises(StoreError, match="at most 524,288"):
            s.replace_roster(SITE, parse_roster(roster(12_000)))
        assert snapshot(s) == before
    finally:
        s.close()
