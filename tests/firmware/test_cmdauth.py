# runs-on: micropython cpython
# heapsize: 96k
# Signed commands: genuine, forged, replayed (also across a reboot), expired, malformed.
import json
import os
from binascii import hexlify

from locker import mac
from locker.cmdauth import CommandError, Counter, canonical, verify
from mpytest import raises, tmpdir

SECRET = bytes(range(32, 64))
CMD_KEY = mac.derive(SECRET, mac.CMD)
NOW = 1795549400


def signed(
    cmd_id=5,
    op="open",
    bay=3,
    by="P0100",
    reason="medical",
    exp=NOW + 60,
    locker="L1",
    key=CMD_KEY,
    **extra,
):
    tag = mac.hmac_sha256(key, canonical(locker, cmd_id, op, bay, by, exp, reason))
    cmd = {
        "id": cmd_id,
        "op": op,
        "bay": bay,
        "by": by,
        "reason": reason,
        "exp": exp,
        "mac": hexlify(tag).decode(),
    }
    cmd.update(extra)
    return json.dumps(cmd).encode()


def reason_of(payload, last_id=0, now=NOW, locker="L1"):
    with raises(CommandError) as e:
        verify(payload, CMD_KEY, locker, last_id, now)
    return e.value.args[0]


def test_canonical_form_matches_protocol():
    got = canonical("L1", 12, "open", 3, "P0100", 1795549453, "medical")
    assert got == b"L1|12|open|3|P0100|1795549453|medical"
    assert (
        canonical("L1", 1, "open", "all", "P1", 2, "fire | drill")
        == b"L1|1|open|all|P1|2|fire | drill"
    )


def test_genuine_command_accepted():
    for bay in (3, "all", "staff"):
        cmd = verify(signed(bay=bay), CMD_KEY, "L1", 4, NOW)
        assert cmd["id"] == 5 and cmd["op"] == "open" and cmd["bay"] == bay
        assert cmd["by"] == "P0100" and cmd["reason"] == "medical"
    assert (
        verify(signed(reason="fire | drill: Zoë"), CMD_KEY, "L1", 0, NOW)["reason"]
        == "fire | drill: Zoë"
    )


def test_clock_unknown_skips_expiry_only():
    assert verify(signed(exp=1), CMD_KEY, "L1", 0, None)["id"] == 5
    assert reason_of(signed(exp=1), now=None, last_id=5) == "replayed"


def test_forged_commands_refused():
    assert reason_of(signed(key=mac.derive(bytes(32), mac.CMD))) == "bad_signature"
    assert reason_of(signed(locker="L2")) == "bad_signature"  # signed for another locker
    good = json.loads(signed())
    for field, value in (
        ("bay", "all"),
        ("bay", 4),
        ("by", "P0101"),
        ("reason", "x"),
        ("exp", NOW + 99999),
        ("id", 6),
        ("op", "close"),
    ):
        bad = dict(good)
        bad[field] = value
        assert reason_of(json.dumps(bad).encode()) == "bad_signature", field
    bad = dict(good)
    bad["mac"] = "0" * 64
    assert reason_of(json.dumps(bad).encode()) == "bad_signature"
    bad["mac"] = good["mac"].upper()  # hex case does not matter to the bytes
    assert verify(json.dumps(bad).encode(), CMD_KEY, "L1", 0, NOW)["id"] == 5


def test_replayed_commands_refused():
    assert reason_of(signed(cmd_id=5), last_id=5) == "replayed"
    assert reason_of(signed(cmd_id=3), last_id=5) == "replayed"
    assert verify(signed(cmd_id=6), CMD_KEY, "L1", 5, NOW)["id"] == 6


def test_expired_command_refused():
    assert reason_of(signed(exp=NOW - 1)) == "expired"
    assert verify(signed(exp=NOW), CMD_KEY, "L1", 0, NOW)["id"] == 5  # valid up to exp


def test_malformed_commands_refused():
    for payload in (b"", b"not json", b"[1, 2]", b"42", b'"open"', b"\xff\xfe", b"{"):
        assert reason_of(payload) == "malformed", payload
    good = json.loads(signed())
    for field in ("id", "op", "bay", "by", "reason", "exp", "mac"):
        bad = dict(good)
        del bad[field]
        assert reason_of(json.dumps(bad).encode()) == "malformed", field
    for field, value in (
        ("id", "5"),
        ("id", 5.0),
        ("id", True),
        ("exp", "1"),
        ("exp", None),
        ("bay", "3"),
        ("bay", "every"),
        ("bay", True),
        ("bay", [3]),
        ("by", 100),
        ("reason", None),
        ("op", 1),
        ("mac", "zz" * 32),
        ("mac", "00" * 31),
        ("mac", 0),
    ):
        bad = dict(good)
        bad[field] = value
        assert reason_of(json.dumps(bad).encode()) == "malformed", (field, value)


def test_separator_in_fields_other_than_reason_is_malformed():
    # otherwise "by=X|5, exp=7" and "by=X, exp=5, reason=7|..." would share one signature
    assert reason_of(signed(by="P1|99999999999", exp=NOW)) == "malformed"
    assert reason_of(signed(op="open|x")) == "malformed"


def test_counter_starts_at_zero_and_persists():
    d = tmpdir("cmd_counter")
    c = Counter(d + "/cmd_counter")
    assert c.last == 0
    c.advance(7)
    assert c.last == 7
    assert Counter(d + "/cmd_counter").last == 7
    assert "cmd_counter.tmp" not in os.listdir(d)
    with raises(ValueError):
        c.advance(7)
    with raises(ValueError):
        c.advance(3)
    assert Counter(d + "/cmd_counter").last == 7


def test_replay_refused_after_reboot():
    d = tmpdir("cmd_reboot")
    path = d + "/cmd_counter"
    payload = signed(cmd_id=12)
    c = Counter(path)
    cmd = verify(payload, CMD_KEY, "L1", c.last, NOW)
    c.advance(cmd["id"])  # before acting, as the locker does
    rebooted = Counter(path)
    assert reason_of(payload, last_id=rebooted.last) == "replayed"
    assert reason_of(signed(cmd_id=11), last_id=rebooted.last) == "replayed"
    assert verify(signed(cmd_id=13), CMD_KEY, "L1", rebooted.last, NOW)["id"] == 13


def test_rotten_counter_file_does_not_stop_the_locker():
    d = tmpdir("cmd_rot")
    with open(d + "/cmd_counter", "w") as f:
        f.write("garbage")
    assert Counter(d + "/cmd_counter").last == 0
