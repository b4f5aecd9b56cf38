"""Ingest's written-out fast paths give what the general code gives: the event check and its MAC
(`payloads._check_usual` against `check_event`), the precomputed HMAC key, JSON through the
scanner, the trail's batch of links, and the event ids SQLite is told (what it would give)."""

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lockerctl import keys, payloads, trail
from lockerctl.payloads import BadPayload, Refused, check_event
from lockerctl.store import Store

SECRET = bytes(range(32))
JID = "0123456789abcdef"


@given(st.binary(max_size=100), st.binary(max_size=300))
def test_mac_key_is_hmac_sha256(key, msg):
    assert keys.MacKey(key).digest(msg) == hmac.digest(key, msg, hashlib.sha256)


def usual(seq=1, **kw):
    ev = {"seq": seq, "ts": 1_790_000_000 + seq, "type": "deposit", "bay": 1, "person": "P1"}
    ev |= {"by": None, "reason": "pupil", "jid": JID}
    ev |= kw
    ev["mac"] = keys.event_mac(SECRET, ev)
    return ev


def slow(obj, bays):
    try:
        return check_event(obj, SECRET, bays)
    except Refused as e:
        return e.kind


ints = st.one_of(
    st.integers(-3, 3), st.integers(2**32 - 2, 2**32 + 1), st.just(True), st.just(1.0)
)
texts = st.one_of(
    st.none(), st.text(max_size=4), st.just("x" * 255), st.just("x" * 256), st.just("é" * 128)
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "seq": st.one_of(ints, st.none()),
        "ts": st.one_of(ints, st.none()),
        "type": st.one_of(st.sampled_from(["deposit", "warp_drive", "Deposit", ""]), ints),
        "bay": st.one_of(ints, st.none(), st.just(9)),
        "person": texts,
        "by": texts,
        "reason": texts,
        "jid": st.sampled_from([JID, JID.upper(), JID[:-1], None]),
        "extra": st.just(1),
    },
)


@settings(max_examples=400, deadline=None)
@given(fields, st.sampled_from([None, 4, 8]), st.sampled_from(["mac", "upper", "wrong", "junk"]))
def test_the_usual_check_agrees_with_check_event(changes, bays, mac):
    obj = usual(seq=5)
    for name, value in changes.items():
        if name == "seq" and value is None:
            del obj["seq"]
        else:
            obj[name] = value
    try:
        good = keys.event_mac(SECRET, obj)
    except (UnicodeEncodeError, TypeError):
        good = "0" * 32
    obj["mac"] = {"mac": good, "upper": good.upper(), "wrong": "f" * 32, "junk": " " * 32}[mac]
    fast = payloads._check_usual(obj, keys.event_key(SECRET), bays)
    if fast is not None:  # what it accepts, check_event accepts, giving the same
        assert fast == slow(obj, bays)
        assert list(fast) == list(slow(obj, bays))


def test_the_usual_check_takes_what_lockers_send():
    for ev in (usual(), usual(ts=None, bay=None, person=None, reason=None), usual(by="T9")):
        assert payloads._check_usual(ev, keys.event_key(SECRET), 8) == check_event(ev, SECRET, 8)
    del_ts = usual()
    del del_ts["ts"]  # no ts at all: check_event refuses it, so the fast path leaves it
    assert payloads._check_usual(del_ts, keys.event_key(SECRET), 8) is None


@pytest.mark.parametrize(
    "payload",
    [b'{"a":1}', b' {"a": 1}\n', b"[1, 2]", b'{"a":1}x', b"", b"NaN", b'"\\ud800"', b"\xff",
     b'{"a":1,"a":2}', b"[" * 100_000, b"12345678901234567890123", b"1e400"],
)  # fmt: skip
def test_json_through_the_scanner_is_json_loads(payload):
    try:
        want = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        with pytest.raises(BadPayload, match=e.__class__.__name__):
            payloads._load(payload)
    else:
        got = payloads._load(payload)
        assert got == want or (got != got and want != want)  # NaN


def test_a_batch_of_links_is_links_one_by_one():
    contents = [f"content {i}".encode() for i in range(50)]
    one, batch = trail.Chain(7, "ab" * 32), trail.Chain(7, "ab" * 32)
    want = [one.append(c) for c in contents]
    got = batch.extend(contents)
    assert [(chash, h) for _, chash, h in want] == got
    assert (batch.last_id, batch.head) == (one.last_id, one.head) == (57, want[-1][2])
    assert batch.extend([]) == [] and batch.head == one.head


def test_event_ids_are_what_sqlite_would_give(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    try:
        ev = {"ts": 1, "type": "deposit", "bay": 1, "person": "P1", "by": None, "reason": None}
        s.ingest("school", [("L1", {"seq": n, **ev}) for n in (1, 2, 3)])
        with s._write() as conn:  # the last row gone: SQLite gives its id again
            conn.exec_driver_sql("DELETE FROM trail WHERE event_id = 3")
            conn.exec_driver_sql("DELETE FROM events WHERE id = 3")
        s.ingest("school", [("L2", {"seq": n, **ev}) for n in (1, 2)])
        rows = [(r.locker_id, r.seq, r.id) for r in s.events("school")]
        assert sorted(rows, key=lambda r: r[2]) == [
            ("L1", 1, 1), ("L1", 2, 2), ("L2", 1, 3), ("L2", 2, 4)
        ]  # fmt: skip
    finally:
        s.close()
