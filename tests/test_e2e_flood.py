"""The journal cannot be flooded offline, end to end (issue 14, finding 5): with the broker down,
thousands of denied taps (one revoked card over and over, one unknown card over and over, then
thousands of different unknown cards) leave a pupil's deposit, a staff retrieval and the SLT
fob's double tap working and journaled; repeated denials reach the trail as `denied_repeated`
records whose counts add up; what could not be journaled is told in an `unrecorded` event."""

import json

import pytest
from harness import ROOT, lockerctl, wait_for
from lockerctl import keys

pytestmark = pytest.mark.slow

TUESDAY_0820 = 1795508400  # Tuesday 2026-11-24 08:20 UTC (GMT), a school day, before lessons
STAFF, PUPIL, SLT, REVOKED = "04B20000", "05000001", "04C10000", "05000009"
UNKNOWN = "0BADCAFE"
REPEATS = 1000
DISTINCT = 3000
SMALL_JOURNAL = {
    "journal_bytes": 16384,  # 8 segments of 2 KB
    "journal_segment_bytes": 2048,
    "journal_reserve_bytes": 4096,
    "backoff_max_s": 2,  # reconnect quickly once the broker is back
}


def setup(tmp_path, db_url, broker):
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "person_id,name,role,year,walk_home,card_uid\n"
        f"S000,Staff Zero,staff,,,{STAFF}\n"
        f"P0001,Pupil One,pupil,3,no,{PUPIL}\n"
        f"H000,Head,slt,,,{SLT}\n"
        f"P0009,Pupil Nine,pupil,4,no,{REVOKED}\n"
    )
    lockerctl("roster", "import", roster, db=db_url)
    lockerctl("card", "revoke", "P0009", db=db_url)
    lockerctl("timetable", "set", ROOT / "docs/examples/timetable.toml", db=db_url)
    device = json.loads(
        lockerctl("locker", "add", "L1", "--bays", 4, "--broker", broker.address, db=db_url).stdout
    )
    device["broker"].update(host=broker.host, port=broker.port)
    device["data_dir"] = str(tmp_path / "data-L1")
    device["settings"] = dict(SMALL_JOURNAL)
    return device


def trail(db_url):
    out = lockerctl("export", "--format", "jsonl", "--locker", "L1", db=db_url).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def tag(device, uid):
    ckey = keys.card_key(bytes.fromhex(device["secret"]))
    return keys.hmac_sha256(ckey, bytes.fromhex(uid))[:4].hex()


def counts(events, card_tag):
    """x-counts of the denied_repeated records of one card: [(word, count, first, last)]."""
    found = []
    for e in events:
        if e["event"] == "denied_repeated" and e["reason"].split(" ")[3] == card_tag:
            word, x, times, _ = e["reason"].split(" ")
            first, last = times.split("-")
            assert x.startswith("x") and int(x[1:]) >= 1
            assert e["ts"] == int(last) and int(first) <= int(last)
            found.append((word, int(x[1:]), int(first), int(last)))
    return found


def open_close(locker, bay):
    locker.door(bay, "open")
    locker.door(bay, "close")


def test_a_flood_of_denials_offline_leaves_room_for_what_matters(
    tmp_path, broker, db_url, make_locker, make_serve
):
    device = setup(tmp_path, db_url, broker)
    make_serve(db_url, broker)
    locker = make_locker("L1", broker=broker, device=device)
    wait_for(lambda: locker.state()["config"] is not None, timeout=30, what="config")
    locker.clock(TUESDAY_0820)
    staff = locker.tap(STAFF)
    assert staff["result"] == "granted", staff
    open_close(locker, staff["bay"])
    wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="acknowledged")

    broker.kill()  # the network is down: nothing is acknowledged from here on
    for _ in range(REPEATS):
        assert locker.tap(REVOKED) == {"result": "denied", "reason": "revoked"}
    for _ in range(REPEATS):
        assert locker.tap(UNKNOWN) == {"result": "denied", "reason": "unknown_card"}
    for n in range(DISTINCT):  # a different card each time: nothing to coalesce
        assert locker.tap(f"DE{n:06X}") == {"result": "denied", "reason": "unknown_card"}
    state = locker.state()
    assert state["journal_free"] >= 4096 - 1100, state  # the reserve is left (bar one record)

    # what matters still works, and is journaled
    pupil = locker.tap(PUPIL)
    assert pupil["result"] == "granted" and pupil["action"] == "deposit", pupil
    open_close(locker, pupil["bay"])
    locker.clock(TUESDAY_0820 + 300)  # 08:25, still before lessons: staff may retrieve
    retrieved = locker.tap(STAFF)
    assert retrieved == {"result": "granted", "action": "retrieve", "bay": staff["bay"]}
    open_close(locker, staff["bay"])
    assert locker.tap(SLT)["result"] == "granted"
    assert locker.tap(SLT)["result"] == "granted"  # the double tap: every occupied bay opens
    assert locker.send("outputs")["locks"][pupil["bay"] - 1] == "unlocked"
    open_close(locker, pupil["bay"])

    broker.start()  # back: everything reaches the trail, then the locker says what it lost
    wait_for(
        lambda: any(e["event"] == "unrecorded" for e in trail(db_url)),
        timeout=90,
        interval=1,
        what="the unrecorded event in the trail",
    )
    wait_for(lambda: locker.state()["pending"] == 0, timeout=60, what="every event acknowledged")
    events = trail(db_url)
    seqs = sorted(e["seq"] for e in events)
    assert seqs == list(range(1, seqs[-1] + 1)), "seq not contiguous"
    kinds = [(e["event"], e["bay"], e["person_id"]) for e in events]
    assert ("deposit", pupil["bay"], "P0001") in kinds
    assert ("retrieve", staff["bay"], "S000") in kinds
    assert ("emergency_open", pupil["bay"], "P0001") in kinds

    # the revoked card: its journaled denials and the counts of its repeats make every tap
    revoked = [e for e in events if e["event"] == "denied" and e["person_id"] == "P0009"]
    reps = counts(events, tag(device, REVOKED))
    assert reps and all(r[0] == "revoked" for r in reps)
    assert all(
        e["person_id"] == "P0009"
        for e in events
        if e["event"] == "denied_repeated" and e["reason"].startswith("revoked ")
    )
    assert len(revoked) + sum(r[1] for r in reps) == REPEATS
    assert len(reps) <= len(revoked) <= len(reps) + 1  # one window per minute, at most
    # the unknown card: no person, its tag; every tap but each window's first is counted
    unknown_reps = counts(events, tag(device, UNKNOWN))
    assert unknown_reps and all(r[0] == "unknown_card" for r in unknown_reps)
    windows = (len(unknown_reps), len(unknown_reps) + 1)
    assert REPEATS - sum(r[1] for r in unknown_reps) in windows
    assert UNKNOWN.lower() not in json.dumps(events) and UNKNOWN not in json.dumps(events)
    # the different cards: journaled until only the reserve was left, the rest counted
    unknown_denied = [
        e for e in events if e["event"] == "denied" and e["reason"] == "unknown_card"
    ]
    lost = [int(e["reason"]) for e in events if e["event"] == "unrecorded"]
    assert len(lost) == 1 and lost[0] > DISTINCT // 2, lost
    journaled_distinct = len(unknown_denied) - (REPEATS - sum(r[1] for r in unknown_reps))
    assert journaled_distinct + lost[0] == DISTINCT
    assert lockerctl("audit", "verify", db=db_url).returncode == 0
