"""Roster CSV: validation with line numbers, all or nothing, re-import, masked export."""

import io

import pytest
from lockerctl.roster import HEADER, RosterError, normalise_uid, parse_roster, write_roster
from lockerctl.store import Store

H = ",".join(HEADER) + "\n"
GOOD = H + (
    "P1,Ann Smith,pupil,6,yes,04a1b2c3\n"
    "P2,Bob Jones,pupil,3,no,04:A1:B2:C3:D4:E5:F6\n"
    "S1,Sue Head,staff,,no,11223344\n"
    "S1,Sue Head,slt,,,55667788\n"
    "O1,Olly Office,office,,no,99AABBCC\n"
)


@pytest.fixture
def st(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    yield s
    s.close()


def test_good_file_parses_and_normalises():
    rows = parse_roster(GOOD.encode(), "r.csv")
    assert [r["card_uid"] for r in rows] == [
        "04A1B2C3",
        "04A1B2C3D4E5F6",
        "11223344",
        "55667788",
        "99AABBCC",
    ]
    assert rows[0] == {
        "person_id": "P1",
        "name": "Ann Smith",
        "role": "pupil",
        "year": 6,
        "walk_home": True,
        "card_uid": "04A1B2C3",
    }
    assert rows[2]["year"] == 0 and rows[3]["walk_home"] is False


def test_bom_and_crlf_are_accepted():
    rows = parse_roster(("\ufeff" + GOOD).replace("\n", "\r\n").encode(), "r.csv")
    assert len(rows) == 5


@pytest.mark.parametrize(
    "row, message",
    [
        ("P9,X,pupil,7,no,AABBCCDD", "year '7' must be 1-6"),
        ("P9,X,pupil,,no,AABBCCDD", "year '' must be 1-6"),
        ("P9,X,staff,4,no,AABBCCDD", "for pupils only"),
        ("P9,X,teacher,,no,AABBCCDD", "role 'teacher'"),
        ("P9,X,pupil,2,maybe,AABBCCDD", "walk_home 'maybe'"),
        ("P9,X,pupil,2,no,AABBCCD", "7 hex digits"),
        ("P9,X,pupil,2,no,GGBBCCDD", "not hexadecimal"),
        ("P9,X,pupil,2,no,", "card_uid is empty"),
        ("P 9,X,pupil,2,no,AABBCCDD", "person_id 'P 9'"),
        ("P9,,pupil,2,no,AABBCCDD", "name is empty"),
        ("P9,X,pupil,2,no", "5 fields, expected 6"),
        ("P9,X,pupil,2,no,04A1B2C3", "card 04A1B2C3 is also on P1 (line 2)"),
        ("P1,Ann Smyth,pupil,6,yes,AABBCCDD", "differs from 'Ann Smith'"),
    ],
)
def test_bad_value_is_reported_with_its_line(row, message):
    text = GOOD + row + "\n"
    with pytest.raises(RosterError) as info:
        parse_roster(text.encode(), "r.csv")
    (line,) = {n for n, _ in info.value.problems}
    assert line == 7
    assert any(message in m for _, m in info.value.problems), info.value.problems
    assert info.value.lines()[0].startswith("r.csv:7: ")


def test_every_bad_line_is_reported():
    text = H + "P1,A,pupil,9,yes,04A1B2C3\nP2,B,pupil,2,no,04A1B2C4\n\nP3,C,boss,,no,xx\n"
    with pytest.raises(RosterError) as info:
        parse_roster(text.encode(), "r.csv")
    lines = sorted({n for n, _ in info.value.problems})
    assert lines == [2, 5]
    assert str(info.value) == "r.csv: 2 bad lines; nothing imported"


@pytest.mark.parametrize(
    "data, line, message",
    [
        (b"id,name\nP1,A\n", 1, "header must be"),
        (b"", 1, "empty file"),
        (H.encode(), 2, "no rows"),
        (H.encode() + b"P1,\xff,pupil,1,no,AABBCCDD\n", 2, "not UTF-8"),
    ],
)
def test_bad_header_and_empty_file(data, line, message):
    with pytest.raises(RosterError) as info:
        parse_roster(data, "r.csv")
    ((n, m),) = info.value.problems
    assert n == line and message in m


def test_uid_normalisation():
    assert normalise_uid(" 04 a1 b2 c3 ") == "04A1B2C3"
    assert normalise_uid("04-a1-b2-c3-d4-e5-f6") == "04A1B2C3D4E5F6"
    with pytest.raises(ValueError):
        normalise_uid("04A1B2C3D4")


def test_reimport_replaces_the_roster_and_keeps_revocations(st):
    st.replace_roster("school", parse_roster(GOOD.encode()))
    st.revoke_cards("school", "S1", "11223344")
    v = st.config_version("school")
    second = H + (
        "P1,Ann Smith-Jones,pupil,6,no,04A1B2C3\n"  # name and walk_home changed
        "S1,Sue Head,staff,,no,11223344\n"  # still revoked
        "P3,Cat New,pupil,1,no,CAFEBABE\n"  # new; P2, O1 and S1's fob gone
    )
    counts = st.replace_roster("school", parse_roster(second.encode()))
    assert (counts["added"], counts["updated"], counts["removed"]) == (1, 1, 3)
    assert st.config_version("school") == v + 1
    cards = {r.card_uid: r for r in st.roster("school")}
    assert set(cards) == {"04A1B2C3", "11223344", "CAFEBABE"}
    assert cards["04A1B2C3"].name == "Ann Smith-Jones" and not cards["04A1B2C3"].walk_home
    assert cards["11223344"].revoked
    assert st.person("school", "P2") is None
    assert st.person("school", "P2", include_inactive=True).name == "Bob Jones"


def test_export_masks_uids(st):
    st.replace_roster("school", parse_roster(GOOD.encode()))
    out = io.StringIO()
    assert write_roster(st.roster("school"), out) == 5
    lines = out.getvalue().splitlines()
    assert lines[0] == ",".join(HEADER)
    assert "P1,Ann Smith,pupil,6,yes,****B2C3" in lines
    assert "P2,Bob Jones,pupil,3,no,****E5F6" in lines
    assert "S1,Sue Head,staff,,no,****3344" in lines
    assert "04A1B2C3" not in out.getvalue()
