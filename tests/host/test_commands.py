"""Signed commands: what `lockerctl` signs, the firmware's `locker.cmdauth` accepts; forged,
replayed, expired and malformed ones it refuses."""

import json
import sys
from pathlib import Path

import pytest
from lockerctl import keys
from lockerctl.commands import canonical, sign_command

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))

from locker.cmdauth import CommandError, Counter, verify  # noqa: E402

SECRET = bytes.fromhex("c0" * 32)
NOW = 1795549400


def sign(
    cmd_id=12,
    bay=3,
    by="P0100",
    reason="medical",
    exp=NOW + 60,
    locker="L1",
    secret=SECRET,
    op="open",
):
    return sign_command(secret, locker, cmd_id, op, bay, by, reason, exp)


def firmware_reason(payload, last_id=0, now=NOW, locker="L1"):
    with pytest.raises(CommandError) as e:
        verify(payload, keys.cmd_key(SECRET), locker, last_id, now)
    return e.value.reason


def refused(payload, last_id=0, now=NOW):
    """The reason the firmware gives for refusing `payload`."""
    return firmware_reason(payload, last_id, now)


def test_payload_is_the_documented_json():
    cmd = json.loads(sign())
    assert set(cmd) == {"id", "op", "bay", "by", "reason", "exp", "mac"}
    want = keys.hmac_sha256(keys.cmd_key(SECRET), b"L1|12|open|3|P0100|1795549460|medical")
    assert cmd["mac"] == want.hex()
    assert canonical("L1", 12, "open", 3, "P0100", NOW + 60, "medical") == (
        b"L1|12|open|3|P0100|1795549460|medical"
    )


def test_good_commands_accepted_by_the_firmware():
    for bay in (1, 8, "all", "staff"):
        for reason in ("medical", "fire | drill", "Zoë's phone: parent called"):
            payload = sign(bay=bay, reason=reason)
            cmd = verify(payload, keys.cmd_key(SECRET), "L1", 11, NOW)
            assert (cmd["id"], cmd["bay"], cmd["reason"]) == (12, bay, reason)
    assert verify(sign(exp=1), keys.cmd_key(SECRET), "L1", 0, None)["id"] == 12  # clock unknown


def test_forged_mac():
    assert refused(sign(secret=bytes(32))) == "bad_signature"
    assert refused(sign(locker="L2")) == "bad_signature"
    cmd = json.loads(sign())
    for field, value in (
        ("bay", "all"),
        ("by", "P0999"),
        ("exp", NOW + 86400),
        ("id", 13),
        ("reason", "other"),
    ):
        forged = dict(cmd, **{field: value})
        assert refused(json.dumps(forged).encode()) == "bad_signature", field


def test_replayed_same_lower_and_after_reboot(tmp_path):
    assert refused(sign(cmd_id=12), last_id=12) == "replayed"
    assert refused(sign(cmd_id=5), last_id=12) == "replayed"
    counter = Counter(str(tmp_path / "cmd_counter"))
    payload = sign(cmd_id=12)
    cmd = verify(payload, keys.cmd_key(SECRET), "L1", counter.last, NOW)
    counter.advance(cmd["id"])
    rebooted = Counter(str(tmp_path / "cmd_counter"))
    assert rebooted.last == 12
    assert firmware_reason(payload, last_id=rebooted.last) == "replayed"
    assert verify(sign(cmd_id=13), keys.cmd_key(SECRET), "L1", rebooted.last, NOW)["id"] == 13


def test_expired():
    assert refused(sign(exp=NOW - 1)) == "expired"


def test_malformed_json_and_missing_fields():
    for payload in (b"", b"{", b"null", b"[]", b"\xff", b'{"id": 1}'):
        assert refused(payload) == "malformed", payload
    cmd = json.loads(sign())
    for field in cmd:
        partial = {k: v for k, v in cmd.items() if k != field}
        assert refused(json.dumps(partial).encode()) == "malformed", field
    for field, value in (
        ("id", "12"),
        ("id", True),
        ("bay", "3"),
        ("bay", None),
        ("mac", "x"),
        ("exp", 1.5),
    ):
        assert refused(json.dumps(dict(cmd, **{field: value})).encode()) == "malformed"


def test_signer_refuses_what_the_locker_could_not_check():
    with pytest.raises(ValueError, match="bay"):
        sign(bay="every")
    with pytest.raises(ValueError, match="bay"):
        sign(bay=True)
    with pytest.raises(ValueError, match="'\\|'"):
        sign(by="P1|2")
    with pytest.raises(ValueError, match="id"):
        sign(cmd_id=0)
    with pytest.raises(ValueError, match="exp"):
        sign(exp="soon")


def test_an_open_s_outcome_is_found_in_one_event_or_in_a_batch():
    # `lockerctl open --wait` reads the locker's `event` topic: a locker with events waiting
    # sends them as an array (docs/protocol.md), and the outcome may be any member of it.
    from lockerctl.opens import open_outcomes

    opened = {"seq": 9, "type": "emergency_open", "bay": 3, "by": "S01", "reason": "fire"}
    other = {"seq": 8, "type": "deposit", "bay": 2, "by": None, "person": "P1"}
    rejected = {"seq": 10, "type": "cmd_rejected", "bay": None, "by": None, "reason": "stale"}
    assert open_outcomes(json.dumps(opened).encode(), "S01") == [opened]
    assert open_outcomes(json.dumps([other, opened, rejected]).encode(), "S01") == [
        opened,
        rejected,
    ]
    assert open_outcomes(json.dumps([other, opened]).encode(), "S02") == []  # someone else's
    assert open_outcomes(json.dumps(other).encode(), "S01") == []
    assert open_outcomes(b'[1, null, "x"]', "S01") == []
    assert open_outcomes(b"not json", "S01") == []
