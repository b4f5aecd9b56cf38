"""The school's everyday exceptions end to end with real parts (docs/policy.md): the office's
named release (`lockerctl release`) opens exactly one bay; a keep-safe consent stops a pupil's
policy_flag while another pupil is still flagged; an exempt pupil retrieves inside the window
and is refused a minute outside it with the host down; a visitor's card works during its day and
is refused the next day, except to collect; the export tells the whole story, host-side actions
included (`--include actions`)."""

import csv
import datetime as dt
import io
import time
from zoneinfo import ZoneInfo

import pytest
from harness import lockerctl, wait_for
from lockerctl.store import Store
from test_e2e_skeleton import Watcher, register

pytestmark = pytest.mark.slow

TZ = ZoneInfo("Europe/London")
CARDS = {
    "ada": "04A1B2C3",  # P001 Year 3: the named release
    "ben": "04B1B2C3",  # P002 Year 4: keep-safe consent
    "cat": "04C1B2C3",  # P003 Year 5: no consent (flagged)
    "dia": "04D1B2C3",  # P004 Year 2: medical exemption 10:00-10:15
    "hana_staff": "04A3B2C3",
    "hana_fob": "04A4B2C3",  # H001, the Headteacher
    "olive": "04A5B2C3",  # O001 office
    "vic": "04ABCDEF",  # a spare card, given to a visitor
}
ROSTER = f"""person_id,name,role,year,walk_home,card_uid
P001,Ada Pupil,pupil,3,no,{CARDS["ada"]}
P002,Ben Pupil,pupil,4,no,{CARDS["ben"]}
P003,Cat Pupil,pupil,5,no,{CARDS["cat"]}
P004,Dia Pupil,pupil,2,no,{CARDS["dia"]}
H001,Hana Head,staff,,no,{CARDS["hana_staff"]}
H001,Hana Head,slt,,no,{CARDS["hana_fob"]}
O001,Olive Office,office,,no,{CARDS["olive"]}
"""


def school_day() -> dt.date:
    day = dt.date.today() + dt.timedelta(days=7)
    while day.weekday() != 3:  # Thursday
        day += dt.timedelta(days=1)
    return day


DAY = school_day()
TIMETABLE = f"""timezone = "Europe/London"
home_time = "15:15"
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["{DAY - dt.timedelta(days=30)}", "{DAY + dt.timedelta(days=30)}"]]
"""
SETTINGS = {"grant_lapse_s": 4, "door_left_open_s": 60, "tick_ms": 200}


def at(hhmm: str, day: dt.date = DAY) -> int:
    h, m = map(int, hhmm.split(":"))
    return int(dt.datetime(day.year, day.month, day.day, h, m, tzinfo=TZ).timestamp())


@pytest.fixture
def school(tmp_path, broker, db_url, make_locker, make_serve):
    (tmp_path / "roster.csv").write_text(ROSTER)
    (tmp_path / "timetable.toml").write_text(TIMETABLE)
    lockerctl("roster", "import", tmp_path / "roster.csv", db=db_url)
    lockerctl("timetable", "set", tmp_path / "timetable.toml", db=db_url)
    device = register(db_url, broker, tmp_path, bays=4)
    device["settings"] = SETTINGS
    serve = make_serve(db_url, broker)
    locker = make_locker("L1", broker=broker, device=device)
    return locker, serve


def config_current(locker, db_url):
    version = Store.open(db_url).config_version("school")
    wait_for(
        lambda: (locker.state()["config"] or 0) >= version,
        timeout=15,
        what=f"config v{version} at the locker",
    )


def acked(locker):
    wait_for(lambda: locker.state()["pending"] == 0, timeout=20, what="every event stored")


def deposit(locker, who):
    r = locker.tap(CARDS[who])
    assert r["result"] == "granted" and r["action"] == "deposit", (who, r)
    assert locker.door(r["bay"], "open") == {"ok": True}
    assert locker.door(r["bay"], "close") == {"ok": True}
    return r["bay"]


def retrieve(locker, who):
    r = locker.tap(CARDS[who])
    assert r == {"result": "granted", "action": "retrieve", "bay": r["bay"]}, (who, r)
    assert locker.door(r["bay"], "open") == {"ok": True}
    assert locker.door(r["bay"], "close") == {"ok": True}
    return r["bay"]


def export(db_url, *extra):
    out = lockerctl("export", "--format", "csv", *extra, db=db_url).stdout
    return list(csv.DictReader(io.StringIO(out)))


def test_the_named_release_opens_exactly_one_bay(school, broker, db_url):
    locker, _ = school
    locker.clock(int(time.time()))  # the command's expiry is checked against the real time
    config_current(locker, db_url)
    bays = {who: deposit(locker, who) for who in ("ada", "ben", "cat")}
    acked(locker)

    def release(person, reason="appointment", check=True):
        return lockerctl(
            "release",
            person,
            "--by",
            "O001",
            "--reason",
            reason,
            "--broker",
            broker.address,
            db=db_url,
            check=check,
        )

    out = release("P001").stdout
    assert out == f"L1 bay {bays['ada']} opened\n"
    state = locker.state()["bays"]
    assert [b["bay"] for b in state if not b["locked"]] == [bays["ada"]]
    assert locker.door(bays["ada"], "open") == {"ok": True}
    assert locker.door(bays["ada"], "close") == {"ok": True}
    assert locker.state()["bays"][bays["ada"] - 1]["holder"] is None
    acked(locker)

    # nothing left to release: one line, non-zero, nothing opened
    again = release("P001", check=False)
    assert again.returncode != 0 and again.stdout == ""
    assert again.stderr.strip().splitlines() == ["lockerctl: P001 holds no phone in any locker"]
    bad = release("P002", reason="other", check=False)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert all(b["locked"] for b in locker.state()["bays"])

    rows = export(db_url)
    released = [r for r in rows if r["event"] == "released"]
    assert [(r["person_id"], r["bay"], r["by"], r["reason"]) for r in released] == [
        ("P001", str(bays["ada"]), "O001", "appointment")
    ]
    actions = [r for r in export(db_url, "--include", "actions") if r["locker"] == ""]
    release_rows = [r for r in actions if r["event"] == "release"]
    assert len(release_rows) == 1 and release_rows[0]["person_id"] == "P001"
    assert release_rows[0]["by"].startswith("cli")


def test_consent_exemption_and_visitor_at_the_locker(school, broker, db_url):
    locker, serve = school
    watcher = Watcher(broker)
    try:
        lockerctl("consent", "approver", "add", "H001", db=db_url)  # the Headteacher
        lockerctl(
            "consent", "add", "P002", "--by", "H001", "--reason", "walks to a carer", db=db_url
        )
        out = lockerctl(
            "exemption",
            "add",
            "P004",
            "--category",
            "medical",
            "--by",
            "H001",
            "--review",
            str(DAY + dt.timedelta(days=20)),
            "--window",
            "10:00-10:15",
            db=db_url,
        ).stdout
        assert out.strip().isdigit()
        vic = lockerctl(
            "visitor",
            "add",
            "Vic Visitor",
            "--card",
            CARDS["vic"],
            "--by",
            "O001",
            "--until",
            f"{DAY}T17:00",
            db=db_url,
        ).stdout.strip()
        assert vic.startswith("visitor-")
        config_current(locker, db_url)

        # Morning: a consented pupil's phone raises no flag; another pupil's does.
        locker.clock(at("08:20"))
        for who in ("ben", "cat", "dia", "vic"):
            deposit(locker, who)
        wait_for(
            lambda: [e for e in watcher.events() if e["type"] == "policy_flag"],
            what="a policy_flag",
        )
        acked(locker)
        flagged = {e["person"] for e in watcher.events() if e["type"] == "policy_flag"}
        assert flagged == {"P003"}, flagged

        # The host goes down: the locker alone applies the exemption's window.
        serve.stop()
        locker.clock(at("09:59"))
        assert locker.tap(CARDS["dia"]) == {"result": "denied", "reason": "contact_hours"}
        locker.clock(at("10:00"))
        bay = retrieve(locker, "dia")
        locker.clock(at("10:05"))
        assert deposit(locker, "dia") == bay  # back in, inside the window
        locker.clock(at("10:16"))  # a minute after the window
        assert locker.tap(CARDS["dia"]) == {"result": "denied", "reason": "contact_hours"}
        assert locker.tap(CARDS["cat"]) == {"result": "denied", "reason": "contact_hours"}

        # The visitor's card: staff rules during its day (lessons locked, break open) ...
        locker.clock(at("09:10"))
        assert locker.tap(CARDS["vic"]) == {"result": "denied", "reason": "contact_hours"}
        locker.clock(at("10:35"))
        retrieve(locker, "vic")
        locker.clock(at("16:30"))
        vic_bay = deposit(locker, "vic")
        # ... the next day: refused, except to collect the phone still in its bay
        locker.clock(at("09:00", DAY + dt.timedelta(days=1)))
        assert retrieve(locker, "vic") == vic_bay
        assert locker.tap(CARDS["vic"]) == {"result": "denied", "reason": "expired"}
        assert locker.state()["pending"] > 0  # nobody has stored these yet

        serve.process.start()  # the host is back: the journal catches up
        acked(locker)
    finally:
        watcher.close()

    rows = export(db_url)

    def find(event, person, **fields):
        return [
            r
            for r in rows
            if r["event"] == event
            and r["person_id"] == person
            and all(r[k] == v for k, v in fields.items())
        ]

    exempt = find("retrieve", "P004", by="H001", reason="exemption")
    assert len(exempt) == 1 and exempt[0]["time"].startswith(f"{DAY}T10:00")
    assert not find("policy_flag", "P002") and find("policy_flag", "P003")
    assert not find("policy_flag", "P004")  # an exemption in force lets the phone in too
    visitor_rows = [r for r in rows if r["person_id"] == vic]
    assert {r["role"] for r in visitor_rows} == {"visitor"}
    assert {r["name"] for r in visitor_rows} == {"Vic Visitor"}
    assert find("deposit", vic, reason="visitor")
    assert find("denied", vic, reason="expired")
    actions = {r["event"] for r in export(db_url, "--include", "actions") if r["locker"] == ""}
    assert {"consent_approver_add", "consent_add", "exemption_add", "visitor_add"} <= actions
    assert lockerctl("audit", "verify", db=db_url).returncode == 0
