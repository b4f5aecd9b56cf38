"""Events authenticated by the locker's key, checked one by one (a batch too), bounded by what
firmware can send and by what its journal can hold; MACed acks per journal; `state` checked
against its shape. The Ingestor on a real store, fed what the broker would hand it."""

import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

import pytest
from lockerctl import keys, payloads
from lockerctl.ingest import Ingestor
from lockerctl.store import Store

ROOT = Path(__file__).resolve().parents[2]
SITE = "school"
SECRET = bytes(range(32))
JID = "0123456789abcdef"


def test_event_and_ack_macs_follow_the_protocol():
    ev = {"seq": 7, "ts": None, "type": "deposit", "bay": 2, "person": "P1", "by": None}
    ev |= {"reason": "pupil", "jid": JID}
    key = hmac.new(SECRET, b"event", hashlib.sha256).digest()
    msg = b"7||deposit|2|P1||pupil|" + JID.encode()
    assert keys.event_mac(SECRET, ev) == hmac.new(key, msg, hashlib.sha256).digest()[:16].hex()
    key = hmac.new(SECRET, b"ack", hashlib.sha256).digest()
    want = hmac.new(key, b"12|" + JID.encode(), hashlib.sha256).digest()[:16].hex()
    assert keys.ack_mac(SECRET, 12, JID) == want


def test_the_seq_bound_is_the_firmware_journals_capacity():
    sys.path.insert(0, str(ROOT / "firmware"))
    try:
        from locker import events as fw_events
        from locker import journal as fw_journal
    finally:
        sys.path.remove(str(ROOT / "firmware"))
    buf = bytearray(fw_events.MAX_ENCODED)
    smallest = fw_events.encode_into(fw_events.Event(1, None, fw_events.TYPES[0]), buf)
    record = fw_journal._HDR + 1 + smallest  # record header, kind, the event
    assert payloads.SMALLEST_EVENT_RECORD == record
    assert payloads.JOURNAL_BYTES == fw_journal.DEFAULT_CAPACITY
    assert payloads.JOURNAL_MAX_EVENTS == fw_journal.DEFAULT_CAPACITY // record
    assert payloads.MAX_TEXT_BYTES == fw_events.MAX_TEXT
    assert set(fw_events.TYPES) <= payloads.KNOWN_TYPES  # a firmware type is never "unknown"


class Acks:
    def __init__(self):
        self.sent = []

    def __call__(self, locker, ack):
        self.sent.append((locker, ack))


@pytest.fixture
def rig(tmp_path):
    st = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    st.add_locker(SITE, "L1", 4, SECRET, "pw")
    acks = Acks()
    ing = Ingestor(st, SITE, acks)
    yield st, ing, acks
    st.close()


def event(seq, jid=JID, secret=SECRET, **kw):
    ev = {"seq": seq, "ts": 1_790_000_000 + seq, "type": "deposit", "bay": 1}
    ev |= {"person": "P1", "by": None, "reason": None, "jid": jid}
    ev |= kw
    if secret is not None:
        ev["mac"] = keys.event_mac(secret, ev)
    return ev


def feed(ing, *payloads, leaf="event"):
    ing.write([(f"lockers/{SITE}/L1/{leaf}", json.dumps(p).encode()) for p in payloads])


def test_a_batch_is_checked_event_by_event(rig):
    st, ing, acks = rig
    forged = event(2, secret=bytes(32))
    feed(ing, [event(1), forged, event(3, bay=5), event(2)])
    assert [r.seq for r in st.events(SITE)] == [1, 2]
    assert acks.sent == [("L1", {"seq": 2, "jid": JID, "mac": keys.ack_mac(SECRET, 2, JID)})]
    assert (ing.stats.bad_mac, ing.stats.impossible) == (1, 1)
    assert st.refusal_counts(SITE) == {("L1", "bad_mac"): 1, ("L1", "impossible"): 1}


def test_a_rekeyed_locker_is_heard_at_once(rig):
    st, ing, acks = rig
    feed(ing, event(1))
    new = bytes(range(100, 132))
    st.set_locker_secret(SITE, "L1", new)  # another process rekeys it
    time.sleep(1.1)  # the Ingestor looks at the lockers again at most once a second
    feed(ing, event(1, jid="fedcba9876543210", secret=new))
    assert ing.stats.bad_mac == 0
    assert acks.sent[-1] == (
        "L1",
        {"seq": 1, "jid": "fedcba9876543210", "mac": keys.ack_mac(new, 1, "fedcba9876543210")},
    )


def test_a_conflict_is_kept_and_its_journal_not_acknowledged(rig):
    st, ing, acks = rig
    feed(ing, event(1), event(2))
    acks.sent.clear()
    feed(ing, event(2, person="P2"), event(3))
    assert acks.sent == []  # 3 is stored, but an ack of 3 would cover the conflicting 2
    assert [r.person for r in st.events(SITE)] == ["P1", "P1", "P1"]
    [c] = st.conflicts(SITE)
    assert (c.seq, c.count, json.loads(c.content)["person"]) == (2, 1, "P2")
    feed(ing, event(2, person="P2"))  # sent again: the same conflict, counted
    assert st.conflicts(SITE)[0].count == 2
    feed(ing, event(4))
    assert acks.sent[-1][1]["seq"] == 4
    # the same content again is a duplicate, acknowledged as before
    feed(ing, event(1))
    assert acks.sent[-1][1]["seq"] == 4 and st.duplicates(SITE) == 1


def test_two_versions_of_one_seq_in_a_batch(rig):
    st, ing, acks = rig
    feed(ing, [event(1), event(1, person="P9")])
    assert [r.person for r in st.events(SITE)] == ["P1"]
    assert len(st.conflicts(SITE)) == 1 and acks.sent == []


def test_a_seq_beyond_the_journal_is_refused(rig):
    st, ing, acks = rig
    feed(ing, event(payloads.JOURNAL_MAX_EVENTS), event(payloads.JOURNAL_MAX_EVENTS + 1))
    assert [r.seq for r in st.events(SITE)] == [payloads.JOURNAL_MAX_EVENTS]
    assert st.refusal_counts(SITE) == {("L1", "seq_ahead"): 1}
    assert acks.sent == []  # 1.. are not stored: nothing to acknowledge


def test_refusal_alerts_are_rate_limited(rig):
    st, ing, _ = rig
    for _ in range(50):
        feed(ing, event(1, secret=bytes(32)))
    [row] = st.refusals(SITE)
    assert (row.kind, row.count) == ("bad_mac", 50)


@pytest.mark.parametrize(
    "obj",
    [
        {"ts": 2**32},
        {"ts": -1},
        {"seq": 2**32},
        {"bay": 0},
        {"bay": 5},
        {"reason": "é" * 128},  # 256 bytes
        {"person": "\ud800"},
        {"type": 3},
        {"jid": "0123456789ABCDEF"},
    ],
)
def test_what_no_firmware_can_send_is_refused(rig, obj):
    st, ing, acks = rig
    obj = {"seq": 1, **obj}
    if "person" in obj:  # not UTF-8: no MAC can be made of it either
        obj |= {"secret": None, "mac": "0" * 32}
    feed(ing, event(**obj))
    assert list(st.events(SITE)) == [] and acks.sent == []
    assert ing.stats.impossible + ing.stats.bad_mac == 1


def test_an_unknown_type_is_stored_and_marked(rig):
    st, ing, _ = rig
    feed(ing, event(1, type="warp_drive"), event(2, reason="é" * 127))
    rows = list(st.events(SITE))
    assert [(r.type, r.unknown_type) for r in rows] == [("warp_drive", True), ("deposit", False)]
    assert st.verify_trail()[0] == 3


GOOD_STATE = {
    "locker": "L1",
    "clock_ok": False,
    "online": True,
    "pending": 2,
    "config": None,
    "bays": [{"bay": 1, "locked": True, "door": "closed", "holder": "P1"}],
    "version": "1.2",
    "checkpoint": None,
    "journal_free": 1000,
    "clock_offset": -3,
}


@pytest.mark.parametrize(
    "bad",
    [
        {"bays": 5},
        None,
        [],
        {**GOOD_STATE, "locker": "L2"},
        {**GOOD_STATE, "bays": [{"bay": 1, "locked": True, "door": "closed", "holder": ["P"]}]},
        {**GOOD_STATE, "bays": [{"bay": "1", "locked": True, "door": "closed", "holder": None}]},
        {**GOOD_STATE, "pending": -1},
        {**GOOD_STATE, "clock_ok": "yes"},
        {**GOOD_STATE, "checkpoint": {"note": 5, "acked": 1}},
    ],
)
def test_a_malformed_state_is_refused_and_the_last_good_one_kept(rig, bad):
    st, ing, _ = rig
    feed(ing, GOOD_STATE, leaf="state")
    assert st.locker(SITE, "L1").state == GOOD_STATE
    feed(ing, bad, leaf="state")
    assert st.locker(SITE, "L1").state == GOOD_STATE
    assert ing.stats.bad == 1


def test_after_a_journal_of_before_ids_a_wiped_board_and_an_upgraded_one(rig):
    st, _, _ = rig
    st.ingest(SITE, [("L1", {"seq": s, "ts": None, "type": "boot"}) for s in range(1, 6)])

    def journal(jid, seqs):
        batch = [("L1", {"seq": s, "ts": s, "type": "boot", "jid": jid}) for s in seqs]
        return st.ingest_journals(SITE, batch, payloads.JOURNAL_MAX_EVENTS).acks[("L1", jid)]

    assert journal("aaaaaaaaaaaaaaaa", [2, 3]) == 0  # a wiped board's, its seq 1 not here yet
    assert journal("aaaaaaaaaaaaaaaa", [1]) == 3  # from 1, not from the old watermark
    assert journal("bbbbbbbbbbbbbbbb", [7, 6]) == 7  # the old journal going on under an id
    assert journal("cccccccccccccccc", [9]) == 0  # neither: nothing acknowledged
    assert len(list(st.events(SITE))) == 5 + 3 + 2 + 1
