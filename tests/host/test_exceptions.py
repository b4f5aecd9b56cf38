"""The everyday exceptions on the host: the bundle's rule table (built by the host, read back by
the firmware's own modules under CPython), the commands' input checks (one line, nothing half
applied), where a person's phone is from the trail, and host actions in exports."""

import datetime as dt
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness import budget
from hypothesis import given
from hypothesis import strategies as st
from lockerctl import bundle as hb
from lockerctl import keys
from lockerctl.cli import _load_commands
from lockerctl.clibase import UserError, cli
from lockerctl.cmd_exceptions import parse_date, parse_windows
from lockerctl.store import Store
from lockerctl.store import consents as XC
from lockerctl.store import lookup as XL
from lockerctl.timetable import compile_timetable, parse_timetable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))

from locker.bundle import Bundle  # noqa: E402
from locker.exceptions import Rules  # noqa: E402
from locker.timetable import Timetable  # noqa: E402

_load_commands()
SECRET = bytes(range(32))
NOW = 1795549393
TOML = """\
timezone = "Europe/London"
home_time = "15:15"
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["2026-09-03", "2026-12-18"]]
"""
PIDS = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcxyz0123456789._-", min_size=1, max_size=28)


def _install(tmp_path, rules, cards=(), name="a"):
    d = tmp_path / name
    d.mkdir()
    tt = compile_timetable(parse_timetable(TOML, "t.toml"), NOW)
    data = hb.build_bundle(SECRET, "L1", "school", 2, NOW, tt, list(cards), [], rules)
    (d / "config.bin").write_bytes(data)
    b = Bundle.load(str(d), keys.config_key(SECRET))
    assert b is not None
    return b, data


def test_without_rules_the_bundle_keeps_format_1(tmp_path):
    tt = compile_timetable(parse_timetable(TOML, "t.toml"), NOW)
    cards = [("04A10001", "P1", "pupil", 3, False, False)]
    plain = hb.build_bundle(SECRET, "L1", "school", 2, NOW, tt, cards, [])
    assert plain[4] == hb.FORMAT and plain[6:8] == b"\0\0"
    rule = {"kind": "consent", "person": "P1", "by": "H1", "until": 0}
    ruled = hb.build_bundle(SECRET, "L1", "school", 2, NOW, tt, cards, [], [rule])
    assert ruled[4] == hb.FORMAT_RULES and struct.unpack(">H", ruled[6:8])[0] == 1
    assert len(ruled) == len(plain) + hb.RULE
    assert hb.read_bundle(SECRET, ruled)["rules"] == [{**rule, "id": 0}]


RULES = st.one_of(
    st.builds(
        lambda p, by, until: {"kind": "consent", "person": p, "by": by, "until": until},
        PIDS,
        PIDS,
        st.integers(0, 2**32 - 1),
    ),
    st.builds(
        lambda p, by, until: {"kind": "visitor", "person": p, "by": by, "until": until},
        PIDS,
        PIDS,
        st.integers(1, 2**32 - 1),
    ),
    st.builds(
        lambda p, by, cat, first, last, ws: {
            "kind": "exemption",
            "person": p,
            "by": by,
            "category": cat,
            "from": first,
            "until": last,
            "windows": ws,
        },
        PIDS,
        PIDS,
        st.sampled_from(sorted(hb.CATEGORIES)),
        st.integers(20000101, 21001231),
        st.integers(0, 21001231),
        st.lists(
            st.tuples(st.integers(0, 1439), st.integers(1, 1440))
            .filter(lambda w: w[0] < w[1])
            .map(list),
            min_size=1,
            max_size=4,
        ),
    ),
)


@budget(60)
@given(st.lists(RULES, max_size=40), st.integers(0, 2**32 - 1))
def test_every_rule_reads_back_and_every_person_is_found_by_the_locker(tmp_path_factory, rules, i):
    for n, r in enumerate(rules):
        r["id"] = (i + n) % 2**32
    tmp = tmp_path_factory.mktemp("rules")
    b, data = _install(tmp, rules)
    try:
        back = hb.read_bundle(SECRET, data)["rules"]
        key = lambda r: hb.rule_record(r)  # noqa: E731 - the table's order
        assert sorted(back, key=key) == sorted(rules, key=key)
        assert b.nrules == len(rules)
        table = Rules(b)
        for r in rules:
            found = [bytes(rec[:85]) for rec in table._records(r["person"])]
            assert hb.rule_record(r)[:85] in found
            want = sum(1 for x in rules if x["person"] == r["person"])
            assert len(found) == want
        assert list(table._records("nobody-with-this-id-at-all-x")) == []
    finally:
        b.close()


def test_a_rule_the_locker_could_not_hold_is_refused():
    good = {"kind": "exemption", "person": "P1", "by": "H1", "category": "medical",
            "from": 20261101, "until": 0, "windows": [[600, 615]]}  # fmt: skip
    hb.rule_record(good)
    for bad, why in (
        ({**good, "category": "diabetes"}, "category"),
        ({**good, "windows": []}, "windows"),
        ({**good, "windows": [[600, 615]] * 5}, "windows"),
        ({**good, "windows": [[615, 600]]}, "within a day"),
        ({**good, "person": "x" * 29}, "at most 28"),
        ({**good, "by": ""}, "non-empty"),
        ({**good, "kind": "pass"}, "kind"),
        ({"kind": "visitor", "person": "V", "by": "O", "until": 0}, "end"),
    ):
        with pytest.raises(ValueError, match=why):
            hb.rule_record(bad)


def test_rules_count_towards_the_size_a_locker_takes():
    header = 2000
    cards = hb.card_capacity(header)
    assert hb.check_size("L1", header, cards)
    with pytest.raises(ValueError, match="consents, exemptions and visitors"):
        hb.check_size("L1", header, cards, 1)
    assert (
        hb.card_capacity(header, 1000)
        == (hb.MAX_BUNDLE - hb.FIXED - hb.MAC_LEN - header - 1000 * hb.RULE) // hb.RECORD
    )
    # 5,000 cards and 2,500 exceptions still fit
    assert hb.check_size("L1", header, 5000, 2500) <= hb.MAX_BUNDLE


def test_the_locker_reads_consents_exemptions_and_visitors(tmp_path):
    rules = [
        {"kind": "consent", "person": "P1", "by": "H1", "until": NOW + 60},
        {
            "kind": "exemption",
            "person": "P2",
            "by": "H2",
            "category": "send",
            "from": 20261101,
            "until": 20261130,
            "windows": [[600, 615], [750, 760]],
        },  # fmt: skip
        {"kind": "visitor", "person": "V1", "by": "O1", "until": NOW + 60},
    ]
    b, _ = _install(tmp_path, rules, [("04A1000A", "V1", "visitor", 0, False, False)])
    try:
        table = Rules(b)
        tt = Timetable(compile_timetable(parse_timetable(TOML, "t.toml"), NOW))
        assert table.consent("P1", NOW) and table.consent("P1", None)
        assert not table.consent("P1", NOW + 60) and not table.consent("P2", NOW)
        tue = tt.at_local(20261124, 600)  # a Tuesday in term, 10:00
        assert table.exemption("P2", tue, tt, True) == "H2"
        assert table.exemption("P2", tue + 15 * 60, tt, True) is None
        assert table.exemption("P2", tue + 15 * 60, tt, False) == "H2"  # in force that day
        assert table.exemption("P2", tt.at_local(20261201, 605), tt, True) is None
        assert table.exemption("P2", tt.at_local(20261128, 605), tt, True) is None  # Saturday
        assert table.exemption("P2", None, tt, True) is None
        assert not table.visitor_ended("V1", NOW) and table.visitor_ended("V1", NOW + 60)
        assert table.visitor_ended("P1", NOW)  # a visitor's card the table does not list
        assert not table.visitor_ended("V1", None)
        assert (
            b.lookup(keys.hmac_sha256(keys.card_key(SECRET), bytes.fromhex("04A1000A"))[:16]).role
            == "visitor"
        )
    finally:
        b.close()


# -- the commands' input -----------------------------------------------------------------------


@budget(200)
@given(st.lists(st.text(max_size=14), min_size=0, max_size=6))
def test_windows_are_accepted_only_when_well_formed(values):
    try:
        spans = parse_windows(tuple(values))
    except UserError as e:
        assert "\n" not in str(e)
        return
    assert 1 <= len(spans) <= 4
    for s in spans:
        a, b = s.split("-")
        assert len(a) == len(b) == 5 and a < b
    assert spans == sorted(spans)
    for x, y in zip(spans, spans[1:], strict=False):
        assert x.split("-")[1] <= y.split("-")[0]


@budget(200)
@given(st.text(max_size=12))
def test_dates_are_accepted_only_when_real(text):
    try:
        day = parse_date(text, "--review")
    except UserError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(day, dt.date) and 2000 <= day.year <= 2100


ROSTER = (
    "person_id,name,role,year,walk_home,card_uid\n"
    "P1,Ann Smith,pupil,3,no,04a1b2c3\n"
    "S1,Sue Head,staff,,no,11223344\n"
    "S1,Sue Head,slt,,no,55667788\n"
    "S2,Sid Deputy,slt,,no,55667799\n"
    "O1,Olive Office,office,,no,99887766\n"
)


@pytest.fixture
def ctl(tmp_path):
    url = f"sqlite:///{tmp_path / 'lockers.db'}"
    (tmp_path / "r.csv").write_text(ROSTER)

    def run(*args, ok=True):
        r = CliRunner().invoke(
            cli, [*map(str, args), "--db", url], env={"LOCKER_SITE": None, "LOCKER_DB": None}
        )
        if ok:
            assert r.exit_code == 0, (args, r.output, r.exception)
        return r

    run("roster", "import", tmp_path / "r.csv")
    run("locker", "add", "L1")
    run("consent", "approver", "add", "S1")  # the Headteacher; S2 is SLT but not an approver
    run.url = url
    return run


def _snapshot(url):
    s = Store.open(url)
    try:
        return s.trail_count(), s.config_version("school")
    finally:
        s.close()


@pytest.mark.parametrize(
    "args",
    [
        [
            "exemption",
            "add",
            "P1",
            "--category",
            "medical",
            "--by",
            "S1",
            "--review",
            "2099-01-01",
            "--window",
            "10:00-09:00",
        ],
        [
            "exemption",
            "add",
            "P1",
            "--category",
            "medical",
            "--by",
            "O1",
            "--review",
            "2099-01-01",
            "--window",
            "10:00-10:15",
        ],
        [
            "exemption",
            "add",
            "NOPE",
            "--category",
            "medical",
            "--by",
            "S1",
            "--review",
            "2099-01-01",
            "--window",
            "10:00-10:15",
        ],
        [
            "exemption",
            "add",
            "P1",
            "--category",
            "medical",
            "--by",
            "S1",
            "--review",
            "2099-01-01",
            "--window",
            "10:00-10:15",
            "--from",
            "2099-02-01",
            "--until",
            "2099-01-01",
        ],
        [
            "exemption",
            "add",
            "P1",
            "--category",
            "asthma",
            "--by",
            "S1",
            "--review",
            "2099-01-01",
            "--window",
            "10:00-10:15",
        ],
        ["exemption", "end", "7"],
        ["consent", "add", "S1", "--by", "S1"],
        ["consent", "add", "P1", "--by", "O1"],
        ["consent", "add", "P1", "--by", "S1", "--until", "2001-01-01"],
        ["consent", "end", "P1"],
        ["consent", "add", "P1", "--by", "S2"],
        ["consent", "approver", "add", "NOPE"],
        ["consent", "approver", "add", "P1"],
        ["consent", "approver", "add", "O1"],
        ["consent", "approver", "add", "S1"],
        ["consent", "approver", "add", "S1;--"],
        ["consent", "approver", "remove", "S2"],
        ["consent", "approver", "remove", "NOPE"],
        ["visitor", "add", "Vic", "--card", "04a1b2c3", "--by", "O1"],
        ["visitor", "add", "Vic", "--card", "XYZ", "--by", "O1"],
        ["visitor", "add", "Vic", "--card", "04ABCDEF", "--by", "O1", "--until", "2001-01-01"],
        ["visitor", "add", "", "--card", "04ABCDEF", "--by", "O1"],
        ["card", "unrevoke", "NOPE"],
        ["release", "P1", "--by", "O1", "--reason", "appointment", "--broker", "127.0.0.1:1"],
        ["release", "P1", "--by", "O1", "--reason", "other", "--broker", "127.0.0.1:1"],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_bad_input_is_one_line_and_changes_nothing(ctl, args):
    before = _snapshot(ctl.url)
    r = ctl(*args, ok=False)
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockerctl: "), r.output
    assert _snapshot(ctl.url) == before


def test_only_a_named_approver_may_consent(ctl):
    # S2 holds an slt card but no admin has named them: refused, with the command that would
    r = ctl("consent", "add", "P1", "--by", "S2", ok=False)
    assert r.exit_code == 1
    assert r.output == (
        "lockerctl: --by S2 may not approve keep-safe consents (an admin names approvers: "
        "`lockerctl consent approver add S2`)\n"
    )
    listed = ctl("consent", "approver", "list").output.splitlines()
    assert [line.split()[:2] for line in listed[1:]] == [["S1", "Sue"]]
    assert listed[1].split()[-1] == "approver"
    assert ctl("consent", "approver", "add", "S2").output == (
        "S2 may approve keep-safe consents\n"
    )
    assert ctl("consent", "add", "P1", "--by", "S2").output.endswith("by S2\n")
    # no longer an approver: refused again; the consent S2 gave stands
    ctl("consent", "approver", "remove", "S2")
    ctl("consent", "end", "P1")
    assert ctl("consent", "add", "P1", "--by", "S2", ok=False).exit_code == 1
    assert ctl("consent", "add", "P1", "--by", "S1").exit_code == 0
    s = Store.open(ctl.url)
    try:
        acts = [
            (a["action"], a["detail"].get("person"), a["actor"].split(":")[0])
            for a in s.trail_actions("school", 100)
            if a["action"].startswith("consent_approver")
        ]
    finally:
        s.close()
    assert acts == [  # newest first
        ("consent_approver_remove", "S2", "cli"),
        ("consent_approver_add", "S2", "cli"),
        ("consent_approver_add", "S1", "cli"),
    ]


def test_a_fresh_site_is_told_how_to_name_an_approver(ctl):
    ctl("consent", "approver", "remove", "S1")
    assert ctl("consent", "approver", "list").output == (
        "no approver of keep-safe consents yet: name the Headteacher with "
        "`lockerctl consent approver add PERSON_ID`\n"
    )
    before = _snapshot(ctl.url)
    r = ctl("consent", "add", "P1", "--by", "S1", ok=False)
    assert r.exit_code == 1 and r.output == (
        "lockerctl: no one may approve keep-safe consents at site school yet: an admin names "
        "the Headteacher (and any SLT members) with `lockerctl consent approver add S1`\n"
    )
    assert _snapshot(ctl.url) == before
    # a pupil or an office person is refused as --by before anything is said about approvers
    r = ctl("consent", "add", "P1", "--by", "O1", ok=False)
    assert r.output == "lockerctl: --by O1 is not an SLT member (no slt card)\n"


def test_an_approver_without_an_slt_card_is_refused(ctl):
    ctl("card", "revoke", "S1", "--card", "55667788")
    listed = ctl("consent", "approver", "list").output.splitlines()
    assert listed[1].split()[0] == "S1" and listed[1].endswith("no slt card")
    r = ctl("consent", "add", "P1", "--by", "S1", ok=False)
    assert r.output == "lockerctl: --by S1 is not an SLT member (no slt card)\n"
    ctl("card", "unrevoke", "S1", "--card", "55667788")
    ctl("consent", "add", "P1", "--by", "S1")


def test_approvers_in_the_export_with_actions(ctl):
    ctl("consent", "approver", "add", "S2")
    ctl("consent", "approver", "remove", "S2")
    out = ctl("export", "--format", "csv", "--include", "actions").output
    rows = [line.split(",") for line in out.splitlines() if line.startswith("20")]
    mine = [(r[3], r[4], r[5], r[1], r[7][:3]) for r in rows if r[3].startswith("consent_appr")]
    assert mine == [
        ("consent_approver_add", "S1", "Sue Head", "", "cli"),
        ("consent_approver_add", "S2", "Sid Deputy", "", "cli"),
        ("consent_approver_remove", "S2", "Sid Deputy", "", "cli"),
    ]
    assert "consent_approver" not in ctl("export", "--format", "csv").output

    def people(*args):
        out = ctl("export", "--format", "csv", "--include", "actions", *args).output
        return {r.split(",")[4] for r in out.splitlines() if ",consent_approver_" in r}

    assert people("--person", "S2") == {"S2"} and people("--person", "S1") == {"S1"}


def test_each_change_is_in_the_trail_and_the_lockers_bundle(ctl):
    from lockerctl.configpub import build_locker_bundle

    ctl("consent", "add", "P1", "--by", "S1", "--until", "2099-12-31")
    r = ctl("exemption", "add", "P1", "--category", "young_carer", "--by", "S1", "--review",
            "2099-01-01", "--window", "12:00-12:30", "--window", "08:00-08:15")  # fmt: skip
    eid = int(r.output)
    vid = ctl("visitor", "add", "Vic Visitor", "--card", "04ABCDEF", "--by", "O1").output.strip()
    s = Store.open(ctl.url)
    try:
        row = s.locker("school", "L1")
        data = build_locker_bundle(s, "school", row, s.config_version("school"), NOW)
        back = hb.read_bundle(bytes(row.secret), data)
        kinds = sorted((r["kind"], r["person"]) for r in back["rules"])
        assert kinds == [("consent", "P1"), ("exemption", "P1"), ("visitor", vid)]
        ex = next(r for r in back["rules"] if r["kind"] == "exemption")
        assert ex["windows"] == [[480, 495], [720, 750]] and ex["by"] == "S1"
        assert {c["role"] for c in back["cards"] if c["person_id"] == vid} == {"visitor"}
        actions = [a["action"] for a in s.trail_actions("school")]
        assert {"consent_add", "exemption_add", "visitor_add"} <= set(actions)
    finally:
        s.close()
    ctl("exemption", "end", eid)
    ctl("consent", "end", "P1")
    s = Store.open(ctl.url)
    try:
        row = s.locker("school", "L1")
        data = build_locker_bundle(s, "school", row, s.config_version("school"), NOW)
        assert [r["kind"] for r in hb.read_bundle(bytes(row.secret), data)["rules"]] == ["visitor"]
    finally:
        s.close()
    listed = ctl("exemption", "list", "--all").output
    assert "ended" in listed


def test_exemptions_due_for_review(ctl):
    today = dt.date.today()
    common = ["--category", "send", "--by", "S1", "--window", "10:00-10:15"]
    ctl("exemption", "add", "P1", *common, "--review", today.isoformat())
    ctl("exemption", "add", "P1", *common, "--review", (today + dt.timedelta(days=30)).isoformat())
    due = ctl("exemption", "list", "--due").output.splitlines()
    assert len(due) == 2 and due[1].split()[0] == "1" and "(due)" in due[1]
    assert len(ctl("exemption", "list").output.splitlines()) == 3


def test_unrevoke_is_recorded_and_reaches_the_bundle(ctl):
    ctl("card", "revoke", "P1")
    assert ctl("card", "unrevoke", "P1").output == "unrevoked 1 card of P1\n"
    s = Store.open(ctl.url)
    try:
        assert [a["action"] for a in s.trail_actions("school", 2)] == [
            "card_unrevoke",
            "card_revoke",
        ]
        assert not any(c.revoked for c in s.person_cards("school", "P1"))
    finally:
        s.close()


def test_phone_bays_follows_the_trail(ctl):
    s = Store.open(ctl.url)

    def ev(seq, type_, bay, person="P1", reason=None, locker="L1"):
        return (locker, {"seq": seq, "ts": NOW + seq, "type": type_, "bay": bay,
                         "person": person, "by": None, "reason": reason})  # fmt: skip

    try:
        s.ingest("school", [ev(1, "deposit", 2), ev(2, "deposit", 3, "P2")])
        assert XL.phone_bays(s, "school", "P1") == [("L1", 2)]
        s.ingest("school", [ev(3, "retrieve", 2), ev(4, "cancelled", 2, reason="retrieve")])
        assert XL.phone_bays(s, "school", "P1") == [("L1", 2)]  # the lapsed retrieval
        s.ingest("school", [ev(5, "released", 2)])
        assert XL.phone_bays(s, "school", "P1") == []
        s.ingest("school", [ev(6, "deposit", 1), ev(7, "cancelled", 1, reason="deposit")])
        assert XL.phone_bays(s, "school", "P1") == []
        s.ingest("school", [ev(8, "deposit", 4), ev(1, "deposit", 1, locker="L2")])
        assert XL.phone_bays(s, "school", "P1") == [("L1", 4), ("L2", 1)]
        s.ingest("school", [ev(9, "emergency_open", 4)])
        assert XL.phone_bays(s, "school", "P1") == [("L2", 1)]
    finally:
        s.close()


def test_export_with_actions_in_csv_and_xlsx(ctl, tmp_path):
    import openpyxl

    ctl("consent", "add", "P1", "--by", "S1", "--reason", "parent asked")
    out = ctl("export", "--format", "csv", "--include", "actions").output
    rows = [line.split(",") for line in out.splitlines() if line.startswith("20")]
    consent = [r for r in rows if r[3] == "consent_add"]
    assert len(consent) == 1
    assert consent[0][1] == "" and consent[0][4] == "P1" and consent[0][7].startswith("cli")
    plain = ctl("export", "--format", "csv").output
    assert "consent_add" not in plain
    ctl("export", "--format", "xlsx", "--include", "actions", "-o", tmp_path / "t.xlsx")
    wb = openpyxl.load_workbook(tmp_path / "t.xlsx", read_only=True)
    cells = [list(r) for r in wb["events"].iter_rows(values_only=True)]
    assert cells[0][:10] == ["time", "locker", "bay", "event", "person_id", "name", "role",
                             "by", "reason", "seq"]  # fmt: skip
    events = [r[3] for r in cells[1:]]
    assert "consent_add" in events and "roster_import" in events
    row = cells[1 + events.index("consent_add")]
    assert row[4] == "P1" and row[5] == "Ann Smith" and "parent asked" in row[8]


def test_approvers_on_postgresql(postgres_url):
    import os
    import uuid

    from lockerctl.roster import parse_roster
    from lockerctl.store import StoreError

    site = f"pg-{uuid.uuid4().hex[:8]}"
    s = Store.open(os.environ.get("LOCKER_TEST_POSTGRES") or postgres_url)
    try:
        s.replace_roster(site, parse_roster(ROSTER))
        with pytest.raises(StoreError, match="no one may approve"):
            XC.add_consent(s, site, "P1", "S1", None, None, "t", NOW)
        XC.add_approver(s, site, "S1", "t", NOW)
        with pytest.raises(StoreError, match="already approves"):
            XC.add_approver(s, site, "S1", "t", NOW)
        assert [(a.person_id, a.name, a.slt) for a in XC.list_approvers(s, site)] == [
            ("S1", "Sue Head", True)
        ]
        assert XC.add_consent(s, site, "P1", "S1", None, None, "t", NOW) > 0
        XC.remove_approver(s, site, "S1", "t")
        with pytest.raises(StoreError, match="is not an approver"):
            XC.remove_approver(s, site, "S1", "t")
        assert XC.list_approvers(s, site) == [] and not XC.is_approver(s, site, "S1")
        acts = [a["action"] for a in s.trail_actions(site, 3)]
        assert acts == ["consent_approver_remove", "consent_add", "consent_approver_add"]
    finally:
        s.close()
