"""5,000 cards on one locker, end to end (issue 14, finding 3): a real `lockerctl serve` publishes
the 5,000-card bundle (235 KB) to a simulated locker running the compiled firmware in the heap of
the 600-card test; the card whose record is last in the table deposits and retrieves; a
revocation makes a second bundle that replaces the first, and the card is refused. The bundle is
streamed to flash and searched there: the live heap high-water is measured (docs/memory.md)."""

import json

import pytest
from harness import ROOT, lockerctl, wait_for
from lockerctl import keys

pytestmark = pytest.mark.slow

CARDS = 5000
HEAP_KB = 168  # as the 600-card test (tests/test_e2e_durability.py)
TUESDAY_0820 = 1795508400  # Tuesday 2026-11-24 08:20 UTC, before lessons
AFTER_SCHOOL = TUESDAY_0820 + 8 * 3600  # 16:20


def uid(i):
    return f"05{i:06X}"


def test_a_5000_card_roster_reaches_a_locker_and_its_last_card_works(
    tmp_path, broker, db_url, make_locker, make_serve
):
    roster = tmp_path / "roster.csv"
    lines = ["person_id,name,role,year,walk_home,card_uid", "S000,Staff Zero,staff,,,04B20000"]
    for i in range(CARDS - 1):
        lines.append(f"P{i:04d},Pupil {i},pupil,{1 + i % 6},{'yes' if i % 3 else 'no'},{uid(i)}")
    roster.write_text("\n".join(lines) + "\n")
    lockerctl("roster", "import", roster, db=db_url)
    lockerctl("timetable", "set", ROOT / "docs/examples/timetable.toml", db=db_url)
    added = lockerctl("locker", "add", "L1", "--bays", 24, "--broker", broker.address, db=db_url)
    device = json.loads(added.stdout)
    device["broker"].update(host=broker.host, port=broker.port)
    device["data_dir"] = str(tmp_path / "data-L1")
    # two 235 KB bundles (the one in force and the one arriving) and the journal: a 1.5 MB
    # partition (an ESP32 with 4 MB of flash has a 2 MB one; docs/memory.md)
    device["settings"] = {"flash_blocks": 384}
    ckey = keys.card_key(bytes.fromhex(device["secret"]))
    order = sorted(range(CARDS - 1), key=lambda i: keys.hmac_sha256(ckey, bytes.fromhex(uid(i))))
    last = order[-1]  # the pupil whose record is the last of the card table

    make_serve(db_url, broker)
    locker = make_locker("L1", broker=broker, device=device, heapsize=f"{HEAP_KB}k", compiled=True)
    wait_for(lambda: locker.state()["config"] is not None, timeout=60, what="5,000-card config")
    first_version = locker.state()["config"]
    locker.clock(TUESDAY_0820)
    reply = locker.tap(uid(last))
    assert reply["result"] == "granted" and reply["action"] == "deposit", reply
    locker.door(reply["bay"], "open")
    locker.door(reply["bay"], "close")
    assert locker.tap(uid(order[0]))["action"] == "deposit"  # and the first one
    assert locker.tap("05FFFFFF") == {"result": "denied", "reason": "unknown_card"}

    # a revocation: a second 5,000-card bundle replaces the first on the locker's flash
    lockerctl("card", "revoke", f"P{last:04d}", db=db_url)
    wait_for(
        lambda: (locker.state()["config"] or 0) > first_version,
        timeout=60,
        what="the bundle with the revocation",
    )
    locker.clock(AFTER_SCHOOL)
    assert locker.tap(uid(last)) == {"result": "denied", "reason": "revoked"}
    wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="events acknowledged")
    events = lockerctl("export", "--format", "jsonl", "--locker", "L1", db=db_url).stdout
    kinds = [json.loads(line)["event"] for line in events.splitlines() if line.strip()]
    assert kinds.count("config_applied") == 2 and "config_rejected" not in kinds

    heap = locker.send("outputs")["heap"]
    running = heap["max_used"] - heap["code"]
    print(
        f"heap with {CARDS} cards and 24 bays: code {heap['code']} B, live high-water "
        f"{heap['max_used']} B, of which the running locker {running} B"
    )
    assert heap["max_used"] < 152 * 1024  # as with 600 cards: the table is never in RAM
    assert running < 60 * 1024
