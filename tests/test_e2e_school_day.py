"""A whole school day at one locker, end to end with real parts: the roster and timetable loaded
with `lockerctl`, `lockerctl serve` publishing the configuration and storing every event, the real
firmware on the MicroPython unix port driven through its control port with `clock` lines, an
exception grant, a revoked card and an office open made with `lockerctl` while the day runs, and
at the end every rule of docs/policy.md visible in `lockerctl export`.

The day is a Thursday at least a week after today (so that grants, which the store keeps only
until they end, are still to come), inside a term made around it. The locker's short timings
(grant lapse, door left open) come from device.json's `settings`, so the test runs in seconds."""

import csv
import datetime as dt
import io
import json
import time
from zoneinfo import ZoneInfo

import pytest
from harness import lockerctl, wait_for
from lockerctl.store import Store
from test_e2e_skeleton import Watcher, register

pytestmark = pytest.mark.slow

TZ = ZoneInfo("Europe/London")

CARDS = {
    "ada": "04A1B2C3",  # P001 Year 6, walks home: released 10 minutes early
    "ben": "04B1B2C3",  # P002 Year 4: may not bring a phone (policy_flag); exception grant
    "cat": "04C1B2C3",  # P003 Year 5: card revoked during the day
    "dan": "04D1B2C3",  # P004 Year 3: phone left overnight (uncollected)
    "fay": "04E1B2C3",  # P006 Year 1: released through an SLT override
    "gus": "04F1B2C3",  # P007 Year 2: office emergency open (lockerctl open)
    "sam": "04A2B2C3",  # S001 staff
    "hana_staff": "04A3B2C3",  # H001: her own phone goes in with her staff card ...
    "hana_fob": "04A4B2C3",  # ... and this is her SLT override fob
    "olive": "04A5B2C3",  # O001 office
    "unknown": "DEADBEEF",
}

ROSTER = f"""person_id,name,role,year,walk_home,card_uid
P001,Ada Pupil,pupil,6,yes,{CARDS["ada"]}
P002,Ben Pupil,pupil,4,no,{CARDS["ben"]}
P003,Cat Pupil,pupil,5,no,{CARDS["cat"]}
P004,Dan Pupil,pupil,3,no,{CARDS["dan"]}
P006,Fay Pupil,pupil,1,no,{CARDS["fay"]}
P007,Gus Pupil,pupil,2,no,{CARDS["gus"]}
S001,Sam Staff,staff,,no,{CARDS["sam"]}
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


def at(hhmm: str, seconds: int = 0) -> int:
    h, m = map(int, hhmm.split(":"))
    local = dt.datetime(DAY.year, DAY.month, DAY.day, h, m, seconds, tzinfo=TZ)
    return int(local.timestamp())


TIMETABLE = f"""timezone = "Europe/London"
home_time = "15:15"
y6_release_minutes = 10
uncollected_after_minutes = 60
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["{DAY - dt.timedelta(days=30)}", "{DAY + dt.timedelta(days=30)}"]]
closed = ["{DAY + dt.timedelta(days=1)}"]
"""

SETTINGS = {"grant_lapse_s": 4, "door_left_open_s": 2, "tick_ms": 200}


class Day:
    """The test's hands at the locker: taps, doors and the wall clock."""

    def __init__(self, locker, watcher):
        self.locker = locker
        self.watcher = watcher

    def clock(self, hhmm, seconds=0):
        assert self.locker.clock(at(hhmm, seconds)) == {"ok": True}

    def tap(self, who):
        return self.locker.tap(CARDS[who])

    def through_door(self, bay):
        assert self.locker.door(bay, "open") == {"ok": True}
        assert self.locker.door(bay, "close") == {"ok": True}

    def deposit(self, who):
        reply = self.tap(who)
        assert reply["result"] == "granted" and reply["action"] == "deposit", (who, reply)
        self.through_door(reply["bay"])
        return reply["bay"]

    def retrieve(self, who, action="retrieve"):
        reply = self.tap(who)
        assert reply == {"result": "granted", "action": action, "bay": reply["bay"]}, (who, reply)
        self.through_door(reply["bay"])
        return reply["bay"]

    def denied(self, who, reason):
        assert self.tap(who) == {"result": "denied", "reason": reason}, who

    def bay(self, number):
        return self.locker.state()["bays"][number - 1]

    def event(self, predicate, what, timeout=15):
        return wait_for(
            lambda: [e for e in self.watcher.events() if predicate(e)], timeout=timeout, what=what
        )[0]

    def config_current(self, db_url):
        version = Store.open(db_url).config_version("school")
        wait_for(
            lambda: (self.locker.state()["config"] or 0) >= version,
            timeout=15,
            what=f"config v{version} at the locker",
        )


def test_a_school_day(tmp_path, broker, db_url, make_locker, make_serve):
    (tmp_path / "roster.csv").write_text(ROSTER)
    (tmp_path / "timetable.toml").write_text(TIMETABLE)
    lockerctl("roster", "import", tmp_path / "roster.csv", db=db_url)
    lockerctl("timetable", "set", tmp_path / "timetable.toml", db=db_url)
    device = register(db_url, broker, tmp_path, bays=8)
    device["settings"] = SETTINGS
    watcher = Watcher(broker)
    try:
        make_serve(db_url, broker)
        locker = make_locker("L1", broker=broker, device=device)
        day = Day(locker, watcher)
        day.config_current(db_url)
        _run_the_day(day, db_url, broker)
        wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="every event acked")
    finally:
        watcher.close()
    _check_the_export(db_url, tmp_path)


def _run_the_day(day, db_url, broker):
    bays = {}
    # Morning, before registration: everyone's phone goes in.
    day.clock("08:20")
    for who in ("ada", "ben", "cat", "dan", "fay", "gus", "sam", "hana_staff"):
        bays[who] = day.deposit(who)
    assert len(set(bays.values())) == 8
    assert day.bay(bays["ada"]) == {
        "bay": bays["ada"],
        "locked": True,
        "door": "closed",
        "holder": "P001",
    }
    day.event(lambda e: e["type"] == "policy_flag" and e["person"] == "P002", "Ben's flag")
    day.denied("olive", "no_free_bay")  # all eight bays are taken
    day.denied("unknown", "unknown_card")

    # Lesson 1: pupils and staff are locked out.
    day.clock("09:10")
    day.denied("ada", "contact_hours")
    day.denied("sam", "contact_hours")

    # Morning break: staff may take their phone; pupils may not.
    day.clock("10:35")
    day.denied("dan", "contact_hours")
    assert day.retrieve("sam") == bays["sam"]
    assert day.bay(bays["sam"])["holder"] is None
    bays["sam"] = day.deposit("sam")  # and back in before lesson 2

    # Door forced open on a locked bay, then shut again.
    assert day.locker.door(bays["cat"], "open") == {"ok": True}
    day.event(lambda e: e["type"] == "door_forced", "door_forced")
    assert day.locker.door(bays["cat"], "close") == {"ok": True}

    # Cat's card is revoked in the office; the locker hears of it within seconds.
    lockerctl("card", "revoke", "P003", db=db_url)
    day.config_current(db_url)
    day.clock("11:00")
    day.denied("cat", "revoked")

    # An exception grant for Ben (a dentist appointment), made by the head.
    lockerctl(
        "grant",
        "P002",
        "--from",
        f"{DAY}T11:00",
        "--until",
        f"{DAY}T11:30",
        "--by",
        "H001",
        "--reason",
        "dentist",
        db=db_url,
    )
    day.config_current(db_url)
    day.clock("11:10")
    assert day.retrieve("ben") == bays["ben"]

    # SLT override: Hana taps her fob, then Fay's card; both are recorded.
    day.clock("11:20")
    assert day.tap("hana_fob") == {"result": "granted", "action": "override", "bay": None}
    assert day.retrieve("fay", action="override") == bays["fay"]

    # A deposit granted but never used: the bay relocks and the grant lapses.
    day.clock("11:25")
    lapsed = day.tap("ben")  # Ben is back with his phone
    assert lapsed["action"] == "deposit"
    day.event(lambda e: e["type"] == "cancelled" and e["person"] == "P002", "lapsed deposit")
    assert day.bay(lapsed["bay"]) == {
        "bay": lapsed["bay"],
        "locked": True,
        "door": "closed",
        "holder": None,
    }
    bays["ben"] = day.deposit("ben")

    # Lunch: Hana (staff card) takes her phone and leaves the door open too long.
    day.clock("12:30")
    reply = day.tap("hana_staff")
    assert reply["action"] == "retrieve"
    assert day.locker.door(reply["bay"], "open") == {"ok": True}
    day.event(lambda e: e["type"] == "door_left_open", "door_left_open")
    assert day.locker.door(reply["bay"], "close") == {"ok": True}

    # The office opens Gus's bay remotely (his parent collects him for a medical appointment).
    day.clock("13:30")
    expires = at("13:30") - int(time.time()) + 600  # the locker's clock is on the school day
    out = lockerctl(
        "open",
        "L1",
        bays["gus"],
        "--by",
        "O001",
        "--reason",
        "medical appointment",
        "--expires",
        expires,
        "--wait",
        "15",
        "--broker",
        broker.address,
        db=db_url,
    ).stdout
    assert f"bay {bays['gus']} opened" in out
    day.through_door(bays["gus"])
    assert day.bay(bays["gus"])["holder"] is None
    # the same command sent again (a replay) opens nothing
    replay = _replay_last_command(db_url, broker)
    assert replay["type"] == "cmd_rejected" and replay["reason"] == "replayed"
    # opening a bay with no phone in it opens nothing, and says so
    out = lockerctl(
        "open",
        "L1",
        bays["gus"],
        "--by",
        "O001",
        "--reason",
        "check",
        "--expires",
        expires,
        "--wait",
        "15",
        "--broker",
        broker.address,
        db=db_url,
    ).stdout
    assert "no occupied bay to open" in out

    # Year 6 walk-home pupils go ten minutes before home time, to the second.
    day.clock("15:04", 50)
    day.denied("ada", "contact_hours")
    day.clock("15:05", 0)
    assert day.retrieve("ada") == bays["ada"]
    day.denied("dan", "contact_hours")  # everyone else at home time
    day.clock("15:15", 1)
    assert day.retrieve("sam") == bays["sam"]

    # An hour after home time Dan's phone is still there.
    day.clock("16:16")
    day.event(lambda e: e["type"] == "uncollected" and e["person"] == "P004", "uncollected")

    # The head's double tap opens every occupied bay.
    day.clock("16:30")
    assert day.tap("hana_fob")["action"] == "override"
    # the double tap has its own reply (issue 11: it used to look like an ordinary arm)
    assert day.tap("hana_fob") == {"result": "granted", "action": "emergency_open", "bay": None}
    day.event(
        lambda e: e["type"] == "emergency_open" and e["person"] == "P004" and e["by"] == "H001",
        "double-tap emergency open",
    )
    # Nobody came: the opened bays relock after the grant lapses, phones still inside.
    day.event(
        lambda e: e["type"] == "cancelled" and e["person"] == "P004" and e["reason"] == "retrieve",
        "the unused emergency open lapsing",
    )
    assert day.bay(bays["dan"])["holder"] == "P004" and day.bay(bays["dan"])["locked"]

    # A revoked card never retrieves on its own, but SLT can hand the phone back.
    day.denied("cat", "revoked")
    assert day.tap("hana_fob")["action"] == "override"
    assert day.retrieve("cat", action="override") == bays["cat"]

    # The next day is an INSET day: nothing is enforced, in the middle of the morning.
    next_day = at("10:00") + 86400
    assert day.locker.clock(next_day) == {"ok": True}
    assert day.retrieve("dan") == bays["dan"]


def _replay_last_command(db_url, broker):
    """Publishes the last `open` again, byte for byte (as an eavesdropper would)."""
    import paho.mqtt.client as mqtt
    from lockerctl.commands import sign_command

    st = Store.open(db_url)
    opens = [a for a in st.trail_actions("school") if a.get("action") == "open"]
    detail = opens[0]["detail"]  # newest first
    secret = bytes(st.locker("school", "L1").secret)
    payload = sign_command(
        secret,
        "L1",
        detail["cmd_id"],
        "open",
        detail["bay"],
        detail["by"],
        detail["reason"],
        detail["exp"],
    )
    seen = set()
    watcher = Watcher(broker, locker_id="L1")
    try:
        seen = {json.dumps(e) for e in watcher.events()}
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect(broker.host, broker.port)
        client.loop_start()
        client.publish("lockers/school/L1/cmd", payload, qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
        return wait_for(
            lambda: [
                e
                for e in watcher.events()
                if e["type"] == "cmd_rejected" and json.dumps(e) not in seen
            ],
            what="the replay rejected",
        )[0]
    finally:
        watcher.close()


def _check_the_export(db_url, tmp_path):
    out = lockerctl("export", "--format", "csv", "--locker", "L1", db=db_url).stdout
    header = out.splitlines()[0]
    assert header.startswith("time,locker,bay,event,person_id,name,role,by,reason,seq")
    rows = list(csv.DictReader(io.StringIO(out)))
    seqs = [int(r["seq"]) for r in rows]
    assert sorted(seqs) == list(range(1, max(seqs) + 1)), "every event stored exactly once"

    def find(event, person="", **fields):
        hits = [
            r
            for r in rows
            if r["event"] == event
            and (not person or r["person_id"] == person)
            and all(r[k] == v for k, v in fields.items())
        ]
        assert hits, f"no {event} {person} {fields} in the export"
        return hits

    offset = dt.datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=TZ).strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}"
    deposits = find("deposit", "P001")
    assert deposits[0]["time"].startswith(f"{DAY}T08:20") and deposits[0]["time"].endswith(offset)
    assert deposits[0]["name"] == "Ada Pupil" and deposits[0]["role"] == "pupil"
    find("policy_flag", "P002")
    assert not [r for r in rows if r["event"] == "policy_flag" and r["person_id"] == "P001"]
    find("denied", "P001", reason="contact_hours")
    find("denied", "S001", reason="contact_hours")
    find("denied", "O001", reason="no_free_bay")
    unknown = find("denied", reason="unknown_card")
    assert unknown[0]["person_id"] == ""  # no UID, no name: nothing to identify the card by
    assert CARDS["unknown"] not in out and CARDS["ada"] not in out
    staff_break = find("retrieve", "S001")
    assert staff_break[0]["time"].startswith(f"{DAY}T10:35")
    find("door_forced")
    find("denied", "P003", reason="revoked")
    # a retrieval under a grant names it and its SLT approver
    grant = find("retrieve", "P002", by="H001", reason="grant")
    assert grant[0]["time"].startswith(f"{DAY}T11:10")
    find("override", "P006", by="H001")
    find("cancelled", "P002")
    find("door_left_open", "H001")
    find("emergency_open", "P007", by="O001", reason="medical appointment")
    find("cmd_rejected", reason="replayed")
    early = find("retrieve", "P001")
    assert early[0]["time"].startswith(f"{DAY}T15:05:0")
    find("uncollected", "P004")
    find("emergency_open", "P004", by="H001", reason="double_tap")
    find("override", "P003", by="H001")
    inset = find("retrieve", "P004")
    assert inset[0]["time"].startswith(f"{DAY + dt.timedelta(days=1)}T10:00")

    # the office's open request is in the trail too, and the whole chain verifies
    verify = lockerctl("audit", "verify", db=db_url)
    assert verify.returncode == 0
