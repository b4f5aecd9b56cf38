# runs-on: micropython
# The locker core: taps, doors, time, remote commands, config and recovery, on a fake board whose
# set_lock checks that every unlock comes after its journal record is durable.
import json

from fakeboard import make_locker
from mpytest import fixture, tmpdir

DAY = 1795478400  # Tuesday 2026-11-24 00:00 UTC (GMT: local = UTC), a school day in term
SATURDAY = 1795824000

P3, P6W, P6N, S1, S2, H1_FOB, H1_STAFF, O1, P9_REVOKED, P7 = (
    "04A10001",
    "04A10002",
    "04A10003",
    "04A10004",
    "04A10005",
    "04A10006",
    "04A10007",
    "04A10008",
    "04A10009",
    "04A1B2C3D4E5F6",
)
UNKNOWN = "DEADBEEF"


def at(h, m=0, s=0, day=DAY):
    return day + h * 3600 + m * 60 + s


def deposit(locker, board, uid):
    r = locker.tap_text(uid)
    assert r["result"] == "granted" and r["action"] == "deposit", r
    bay = r["bay"]
    locker.door(bay, 1)
    locker.door(bay, 0)
    assert board.locks[bay - 1] is False
    return bay


def events(locker):
    return [(e.type, e.bay, e.person, e.by, e.reason) for e in locker.journal.unacked(0)]


def test_deposit_then_retrieve_out_of_hours():
    locker, board = make_locker(tmpdir("core_basic"), clock=at(7, 50))
    bay = deposit(locker, board, S1)
    assert locker.state()["bays"][bay - 1]["holder"] == "S1"
    board.clock = at(16, 0)
    r = locker.tap_text(S1)
    assert r == {"result": "granted", "action": "retrieve", "bay": bay}, r
    assert board.locks[bay - 1] is True
    locker.door(bay, 1)
    locker.door(bay, 0)
    assert board.locks[bay - 1] is False
    assert locker.state()["bays"][bay - 1]["holder"] is None
    kinds = [e[0] for e in events(locker)]
    assert kinds == ["boot", "deposit", "retrieve"], kinds


def test_staff_locked_in_contact_open_at_break_and_lunch():
    locker, board = make_locker(tmpdir("core_staff"), clock=at(8, 0))
    bay = deposit(locker, board, S1)
    board.clock = at(9, 0)
    assert locker.tap_text(S1) == {"result": "denied", "reason": "contact_hours"}
    board.clock = at(10, 35)
    assert locker.tap_text(S1)["action"] == "retrieve"
    locker.door(bay, 1)
    locker.door(bay, 0)
    deposit(locker, board, S1)
    board.clock = at(12, 30)
    assert locker.tap_text(S1)["action"] == "retrieve"


def test_pupil_locked_until_home_time_and_year6_walk_home_edge():
    locker, board = make_locker(tmpdir("core_pupil"), clock=at(8, 30))
    deposit(locker, board, P3)
    deposit(locker, board, P6W)
    board.clock = at(12, 30)  # lunch: pupils stay locked
    assert locker.tap_text(P3)["reason"] == "contact_hours"
    board.clock = at(15, 4, 59)
    assert locker.tap_text(P6W)["reason"] == "contact_hours"
    board.clock = at(15, 5, 0)
    assert locker.tap_text(P6W)["action"] == "retrieve"
    assert locker.tap_text(P3)["reason"] == "contact_hours"
    board.clock = at(15, 15, 0)
    assert locker.tap_text(P3)["action"] == "retrieve"


def test_pupil_who_may_not_bring_a_phone_deposits_with_policy_flag():
    locker, board = make_locker(tmpdir("core_flag"), clock=at(8, 30))
    deposit(locker, board, P6N)
    deposit(locker, board, P6W)
    kinds = [(e[0], e[2]) for e in events(locker)]
    assert ("policy_flag", "P6N") in kinds
    assert ("policy_flag", "P6W") not in kinds


def test_unknown_and_revoked_cards_denied_and_journaled():
    locker, board = make_locker(tmpdir("core_unknown"), clock=at(8, 30))
    assert locker.tap_text(UNKNOWN) == {"result": "denied", "reason": "unknown_card"}
    assert locker.tap_text(P9_REVOKED) == {"result": "denied", "reason": "revoked"}
    assert board.unlocks == []
    denials = [e for e in events(locker) if e[0] == "denied"]
    assert [(d[2], d[4]) for d in denials] == [(None, "unknown_card"), ("P9", "revoked")]


def test_seven_byte_uid():
    locker, board = make_locker(tmpdir("core_7byte"), clock=at(8, 30))
    deposit(locker, board, P7)


def test_closed_days_and_weekends_enforce_nothing():
    locker, board = make_locker(tmpdir("core_weekend"), clock=at(10, 0, day=SATURDAY))
    deposit(locker, board, P3)
    assert locker.tap_text(P3)["action"] == "retrieve"


def test_clock_unknown_deposits_only_and_override_releases():
    locker, board = make_locker(tmpdir("core_noclock"), clock=None)
    assert locker.state()["clock_ok"] is False
    bay = deposit(locker, board, S1)
    assert locker.tap_text(S1) == {"result": "denied", "reason": "clock_unknown"}
    assert locker.tap_text(H1_FOB) == {"result": "granted", "action": "override", "bay": None}
    assert locker.tap_text(S1) == {"result": "granted", "action": "override", "bay": bay}
    ev = [e for e in events(locker) if e[0] == "override"]
    assert ev == [("override", bay, "S1", "H1", None)], ev


def test_slt_fob_never_deposits_and_override_lapses_after_20s():
    locker, board = make_locker(tmpdir("core_fob"), clock=at(9, 0))
    deposit(locker, board, S1)
    locker.tap_text(H1_FOB)
    board.advance(21)
    assert locker.tap_text(S1)["reason"] == "contact_hours"
    assert all(s["holder"] != "H1" for s in locker.state()["bays"])
    # the SLT member deposits with their staff card
    deposit(locker, board, H1_STAFF)


def test_override_for_a_card_without_a_phone_is_not_holder():
    locker, board = make_locker(tmpdir("core_notholder"), clock=at(9, 0))
    locker.tap_text(H1_FOB)
    assert locker.tap_text(S2) == {"result": "denied", "reason": "not_holder"}


def test_double_tap_opens_every_occupied_bay():
    locker, board = make_locker(tmpdir("core_double"), clock=at(9, 0))
    b1 = deposit(locker, board, S1)
    b2 = deposit(locker, board, P3)
    locker.tap_text(H1_FOB)
    board.advance(2)
    r = locker.tap_text(H1_FOB)
    assert r == {"result": "granted", "action": "emergency_open", "bay": None}, r
    assert board.feedback_log[-1] == "emergency_open"
    assert sorted(board.unlocks[-2:]) == sorted([b1, b2])
    opened = [(e[1], e[3]) for e in events(locker) if e[0] == "emergency_open"]
    assert sorted(opened) == sorted([(b1, "H1"), (b2, "H1")])


def test_grant_releases_in_contact_time_within_its_window_only():
    locker, board = make_locker(tmpdir("core_grant"), clock=at(8, 0))
    bay = deposit(locker, board, S2)
    board.clock = at(12, 59, 59)
    locker.tap_text(S2)  # lunch: allowed anyway; put it back
    locker.door(bay, 1)
    locker.door(bay, 0)
    deposit(locker, board, S2)
    board.clock = at(13, 30)
    assert locker.tap_text(S2)["action"] == "retrieve"


def test_unopened_grant_relocks_after_30s_and_is_cancelled():
    locker, board = make_locker(tmpdir("core_lapse"), clock=at(8, 0))
    r = locker.tap_text(S1)
    bay = r["bay"]
    board.advance(29)
    locker.tick()
    assert board.locks[bay - 1] is True
    board.advance(2)
    locker.tick()
    assert board.locks[bay - 1] is False
    assert locker.state()["bays"][bay - 1]["holder"] is None
    assert ("cancelled", bay, "S1", None, "deposit") in events(locker)
    # an unused retrieval leaves the phone where it is
    bay = deposit(locker, board, S1)
    board.clock = at(16, 0)
    locker.tap_text(S1)
    board.advance(31)
    locker.tick()
    assert locker.state()["bays"][bay - 1]["holder"] == "S1"
    assert board.locks[bay - 1] is False


def test_failed_reed_switch_never_stops_a_bay_opening():
    locker, board = make_locker(tmpdir("core_reed"), clock=at(8, 0))
    locker.door(1, 2)  # the switch of bay 1 fails
    r = locker.tap_text(S1)
    assert r["result"] == "granted"
    assert board.locks[r["bay"] - 1] is True


def test_door_forced_and_left_open():
    locker, board = make_locker(tmpdir("core_doors"), clock=at(8, 0))
    bay = deposit(locker, board, S1)
    locker.door(bay, 1)  # opened while locked
    assert ("door_forced", bay, "S1", None, None) in events(locker)
    board.advance(59)
    locker.tick()
    assert not any(e[0] == "door_left_open" for e in events(locker))
    board.advance(2)
    locker.tick()
    locker.tick()
    assert [e[0] for e in events(locker)].count("door_left_open") == 1


def test_uncollected_an_hour_after_home_time_once():
    locker, board = make_locker(tmpdir("core_uncollected"), clock=at(8, 0))
    bay = deposit(locker, board, P3)
    board.clock = at(16, 14, 59)
    locker.tick()
    assert not any(e[0] == "uncollected" for e in events(locker))
    board.clock = at(16, 15, 0)
    locker.tick()
    locker.tick()
    assert [e[:3] for e in events(locker) if e[0] == "uncollected"] == [("uncollected", bay, "P3")]


def test_no_free_bay():
    locker, board = make_locker(tmpdir("core_full"), nbays=2, clock=at(8, 0))
    deposit(locker, board, S1)
    deposit(locker, board, S2)
    assert locker.tap_text(P3) == {"result": "denied", "reason": "no_free_bay"}


def test_person_goes_back_to_their_own_bay():
    locker, board = make_locker(tmpdir("core_ownbay"), clock=at(16, 0))
    b1 = deposit(locker, board, S1)
    b2 = deposit(locker, board, S2)
    for uid in (S1, S2):
        bay = locker.tap_text(uid)["bay"]
        locker.door(bay, 1)
        locker.door(bay, 0)
    assert deposit(locker, board, S2) == b2
    assert deposit(locker, board, S1) == b1


def test_restart_recovers_holders_locked_and_seq_continues():
    d = tmpdir("core_restart")
    locker, board = make_locker(d, clock=at(8, 0))
    b1 = deposit(locker, board, S1)
    b2 = deposit(locker, board, P3)
    locker.tap_text(S2)  # granted, door never opened: power lost now
    last = locker.journal.last_seq
    again, board2 = make_locker(d, clock=at(8, 5), config=False)
    assert board2.locks == [False] * 4 and board2.unlocks == []
    holders = {b["bay"]: b["holder"] for b in again.state()["bays"]}
    assert holders[b1] == "S1" and holders[b2] == "P3"
    assert all(b["locked"] for b in again.state()["bays"])
    assert again.journal.last_seq == last + 1  # the boot event
    board2.clock = at(16, 0)
    assert again.tap_text(S1)["bay"] == b1


def test_remote_open_signed_replayed_forged_expired():
    d = tmpdir("core_cmd")
    locker, board = make_locker(d, clock=at(9, 0))
    cmds = json.loads(fixture("commands.json"))
    b1 = deposit(locker, board, S1)
    b2 = deposit(locker, board, P3)
    assert locker.command(cmds["forged_4"].encode()) is False
    assert locker.command(cmds["open_all_1"].encode()) is True
    assert sorted(board.unlocks[-2:]) == sorted([b1, b2])
    assert locker.command(cmds["open_all_1"].encode()) is False  # replay
    assert locker.command(cmds["expired_3"].encode()) is False
    assert locker.command(b"{not json") is False
    rejected = [e[4] for e in events(locker) if e[0] == "cmd_rejected"]
    assert rejected == ["bad_signature", "replayed", "expired", "malformed"], rejected
    opened = [(e[1], e[3], e[4]) for e in events(locker) if e[0] == "emergency_open"]
    assert sorted(opened) == sorted([(b1, "O1", "fire drill"), (b2, "O1", "fire drill")])
    # a replay fails after a reboot too
    again, board2 = make_locker(d, clock=at(9, 5), config=False)
    assert again.command(cmds["open_all_1"].encode()) is False
    assert board2.unlocks == []


def test_config_streamed_forged_rejected_newer_applied():
    d = tmpdir("core_config")
    locker, board = make_locker(d, clock=at(9, 0))
    assert locker.state()["config"] == 1
    forged = fixture("bundle-forged.bin")
    sink = locker.config_receiver(len(forged))
    for i in range(0, len(forged), 100):
        sink.write(forged[i : i + 100])
    sink.close()
    assert locker.state()["config"] == 1
    v2 = fixture("bundle-v2.bin")
    sink = locker.config_receiver(len(v2))
    sink.write(v2[:50])
    sink.close()  # truncated: nothing changes
    assert locker.state()["config"] == 1
    sink = locker.config_receiver(len(v2))
    for i in range(0, len(v2), 7):
        sink.write(v2[i : i + 7])
    sink.close()
    assert locker.state()["config"] == 2
    kinds = [(e[0], e[4]) for e in events(locker) if e[0].startswith("config")]
    assert kinds[-1] == ("config_applied", "2"), kinds
    assert sum(1 for k in kinds if k[0] == "config_rejected") == 2, kinds
    assert locker.config_receiver(10**7) is None


def test_ack_drops_pending_and_never_beyond_sent():
    locker, board = make_locker(tmpdir("core_ack"), clock=at(9, 0))
    deposit(locker, board, S1)
    assert locker.state()["pending"] == 2
    locker.acknowledged(1)
    assert locker.state()["pending"] == 1
    locker.acknowledged(99)  # beyond the last seq: ignored
    assert locker.state()["pending"] == 1


def test_solenoid_released_once_the_door_is_open_and_denials_say_why():
    locker, board = make_locker(tmpdir("core_solenoid"), clock=at(8, 0))
    bay = locker.tap_text(S1)["bay"]
    assert board.locks[bay - 1] is True
    locker.door(bay, 1)
    assert board.locks[bay - 1] is False  # open: the bolt has nothing to hold
    assert locker.state()["bays"][bay - 1]["locked"] is False
    locker.door(bay, 0)
    assert locker.state()["bays"][bay - 1]["locked"] is True
    board.clock = at(9, 0)
    locker.tap_text(S1)
    assert board.feedback_log[-1] == "denied:contact_hours"


# -- the fob's edge cases and the wrap of the millisecond counter (issue 11) ---------------------

WRAP = 1 << 30


def test_fob_card_fob_is_two_overrides_never_an_emergency_open():
    """11:20 on a school day: SLT fob, Ben's card, the fob again 1.6 s after the first tap, Dev's
    card. Two overrides, two bays opened; every other bay stays locked."""
    locker, board = make_locker(tmpdir("core_fcf"), clock=at(8, 30))
    ben = deposit(locker, board, P3)
    dev = deposit(locker, board, P6N)
    other = deposit(locker, board, S1)
    board.clock = at(11, 20)
    assert locker.tap_text(H1_FOB) == {"result": "granted", "action": "override", "bay": None}
    board.advance(0.8)
    assert locker.tap_text(P3) == {"result": "granted", "action": "override", "bay": ben}
    board.advance(0.8)
    r = locker.tap_text(H1_FOB)
    assert r == {"result": "granted", "action": "override", "bay": None}, r
    assert board.feedback_log[-1] == "override"
    board.advance(0.5)
    assert locker.tap_text(P6N) == {"result": "granted", "action": "override", "bay": dev}
    kinds = [e[0] for e in events(locker)]
    assert "emergency_open" not in kinds, kinds
    assert sorted(board.unlocks[-2:]) == sorted([ben, dev])
    assert board.locks[other - 1] is False
    overrides = [(e[1], e[2], e[3]) for e in events(locker) if e[0] == "override"]
    assert overrides == [(ben, "P3", "H1"), (dev, "P6N", "H1")], overrides


def test_unknown_card_between_fob_taps_also_ends_the_double_tap():
    locker, board = make_locker(tmpdir("core_fuf"), clock=at(9, 0))
    deposit(locker, board, S1)
    locker.tap_text(H1_FOB)
    assert locker.tap_text(UNKNOWN)["reason"] == "unknown_card"
    assert locker.tap_text(H1_FOB)["action"] == "override"
    assert "emergency_open" not in [e[0] for e in events(locker)]


def test_a_reply_never_says_denied_for_a_bay_that_is_open():
    locker, board = make_locker(tmpdir("core_opendeny"), clock=at(8, 30))
    dev = deposit(locker, board, P6N)
    board.clock = at(11, 20)
    locker.tap_text(H1_FOB)
    board.advance(1)
    assert locker.tap_text(H1_FOB)["action"] == "emergency_open"
    assert board.locks[dev - 1] is True
    # lesson time, but Dev's bay is open: he is told so, not "contact_hours"
    assert locker.tap_text(P6N) == {"result": "granted", "action": "retrieve", "bay": dev}
    assert locker.state()["bays"][dev - 1]["locked"] is False


def test_fob_before_the_wrap_and_hours_later_is_not_a_double_tap():
    locker, board = make_locker(tmpdir("core_wrapfob"), clock=at(8, 0), ticks_start=WRAP - 2000)
    b1 = deposit(locker, board, S1)
    locker.tap_text(H1_FOB)  # just before the counter wraps
    board.advance(3 * 3600)
    board.clock = at(11, 5)
    r = locker.tap_text(H1_FOB)
    assert r["action"] == "override", r
    assert "emergency_open" not in [e[0] for e in events(locker)]
    assert b1 not in board.unlocks[1:]


def test_fob_double_tap_across_the_wrap_is_an_emergency_open():
    locker, board = make_locker(tmpdir("core_wrapdbl"), clock=at(9, 0), ticks_start=WRAP - 1000)
    b1 = deposit(locker, board, S1)
    locker.tap_text(H1_FOB)
    board.advance(2)
    assert board.ticks_ms() < 2000  # wrapped
    assert locker.tap_text(H1_FOB)["action"] == "emergency_open"
    assert board.unlocks[-1] == b1


def test_armed_override_expires_across_the_wrap():
    locker, board = make_locker(tmpdir("core_wrapovr"), clock=at(9, 0), ticks_start=WRAP - 5000)
    deposit(locker, board, S1)
    locker.tap_text(H1_FOB)
    board.advance(21)
    locker.tick()
    assert locker.tap_text(S1) == {"result": "denied", "reason": "contact_hours"}
    assert "override" not in [e[0] for e in events(locker)]


def test_unused_grant_lapses_across_the_wrap():
    locker, board = make_locker(tmpdir("core_wraplapse"), clock=at(8, 0), ticks_start=WRAP - 5000)
    bay = locker.tap_text(S1)["bay"]
    board.advance(29)
    locker.tick()
    assert board.locks[bay - 1] is True
    board.advance(2)
    locker.tick()
    assert board.locks[bay - 1] is False
    assert ("cancelled", bay, "S1", None, "deposit") in events(locker)


def test_door_left_open_across_the_wrap():
    locker, board = make_locker(tmpdir("core_wrapdoor"), clock=at(8, 0), ticks_start=WRAP - 5000)
    bay = locker.tap_text(S1)["bay"]
    locker.door(bay, 1)
    board.advance(59)
    locker.tick()
    assert "door_left_open" not in [e[0] for e in events(locker)]
    board.advance(2)
    locker.tick()
    assert ("door_left_open", bay, "S1", None, None) in events(locker)


# -- the host's time, and who a rejected command came from (issue 11) ----------------------------


def signed(cmd_id, op, bay, by, reason, exp, secret=None):
    from binascii import hexlify, unhexlify

    from locker import mac
    from locker.cmdauth import canonical

    secret = secret or unhexlify(fixture("secret.hex"))
    tag = mac.hmac_sha256(
        mac.derive(secret, mac.CMD), canonical("L1", cmd_id, op, bay, by, exp, reason)
    )
    cmd = {"id": cmd_id, "op": op, "bay": bay, "by": by, "reason": reason, "exp": exp}
    cmd["mac"] = hexlify(tag).decode()
    return json.dumps(cmd).encode()


def test_host_time_needs_the_outstanding_nonce_and_an_unknown_clock():
    d = tmpdir("core_hosttime")
    locker, board = make_locker(d, clock=None)
    state = locker.state()
    nonce = state["clock_nonce"]
    assert state["clock_ok"] is False and state["time"] is None
    assert isinstance(nonce, str) and len(nonce) == 16
    assert json.loads(locker.state_json())["clock_nonce"] == nonce
    # an answer to another nonce (an old one, replayed) moves nothing
    wrong = "0" * 16 if nonce != "0" * 16 else "1" * 16
    assert locker.command(signed(10, "time", 0, "host", wrong + " 1795500000", FAR)) is False
    assert board.clock is None
    assert events(locker)[-1] == ("cmd_rejected", None, None, "host", "wrong_nonce")
    # a forged answer with the right nonce: refused too
    forged = signed(11, "time", 0, "host", nonce + " 1795500000", FAR, secret=bytes(32))
    assert locker.command(forged) is False and board.clock is None
    # the genuine answer sets the clock, once
    good = signed(12, "time", 0, "host", nonce + " 1795500000", FAR)
    assert locker.command(good) is True
    assert board.clock == 1795500000
    state = locker.state()
    assert state["clock_ok"] is True and state["clock_nonce"] is None
    assert state["time"] == 1795500000
    assert locker.command(good) is False  # replayed: the clock is trusted now, and the id used
    # the host's time never overrules a trusted clock
    board.clock = 1795600000
    later = signed(13, "time", 0, "host", nonce + " 1795500000", FAR)
    assert locker.command(later) is False and board.clock == 1795600000


def test_after_a_restart_the_nonce_is_new():
    d = tmpdir("core_hosttime_boot")
    locker, board = make_locker(d, clock=None)
    first = locker.state()["clock_nonce"]
    again, board2 = make_locker(d, clock=None, config=False)
    second = again.state()["clock_nonce"]
    assert first != second
    assert again.command(signed(1, "time", 0, "host", first + " 1795500000", FAR)) is False
    assert board2.clock is None


FAR = 4000000000


def test_rejected_command_says_who_and_which_bay():
    locker, board = make_locker(tmpdir("core_rejwho"), clock=at(9, 0))
    deposit(locker, board, S1)
    assert locker.command(signed(5, "open", 1, "O1", "late", at(8, 0))) is False
    assert events(locker)[-1] == ("cmd_rejected", 1, None, "O1", "expired")
    assert locker.command(signed(6, "open", "all", "O1", "x", FAR, secret=bytes(32))) is False
    assert events(locker)[-1] == ("cmd_rejected", None, None, "O1", "bad_signature")
    assert locker.command(signed(7, "open", 9, "O1", "x", FAR)) is False
    assert events(locker)[-1] == ("cmd_rejected", None, None, "O1", "no_such_bay")
    bad_by = b'{"id": 8, "op": "open", "bay": 2, "by": "a|b\\n", "mac": 1}'
    assert locker.command(bad_by) is False
    assert events(locker)[-1] == ("cmd_rejected", 2, None, None, "malformed")
    assert board.unlocks[1:] == []


def test_checkpoint_command_kept_in_the_journal_and_reported_in_state():
    d = tmpdir("core_checkpoint")
    locker, board = make_locker(d, clock=at(9, 0))
    cmds = json.loads(fixture("commands.json"))
    assert locker.state()["checkpoint"] is None
    assert json.loads(bytes(locker.state_json()))["checkpoint"] is None
    deposit(locker, board, S1)
    locker.acknowledged(2)
    seq = locker.journal.last_seq
    assert locker.command(cmds["checkpoint_6"].encode()) is True
    note = json.loads(cmds["checkpoint_6"])["reason"]
    want = {"note": note, "acked": 2}
    assert locker.state()["checkpoint"] == want
    assert json.loads(bytes(locker.state_json()))["checkpoint"] == want
    assert locker.journal.last_seq == seq  # not an event: nothing is published for it
    assert locker.commands.last == 6  # a command like any other: never accepted twice
    # refused: too long, a bay, not from the host, forged, replayed (the one kept stays)
    # (each recorded with the sender and the bay the command names, as far as they are valid)
    for name, bay, by, reason in (
        ("checkpoint_long_7", None, "host", "too_large"),
        ("checkpoint_bay_8", 1, "host", "malformed"),
        ("checkpoint_by_9", None, "O1", "malformed"),
        ("checkpoint_6", None, "host", "replayed"),
    ):
        assert locker.command(cmds[name].encode()) is False, name
        assert events(locker)[-1] == ("cmd_rejected", bay, None, by, reason), name
    assert locker.state()["checkpoint"] == want
    # the newest one replaces it (700 bytes), with the acked mark of that moment
    locker.acknowledged(locker.journal.committed)
    acked = locker.journal.acked
    assert locker.command(cmds["checkpoint_10"].encode()) is True
    want = {"note": json.loads(cmds["checkpoint_10"])["reason"], "acked": acked}
    assert len(want["note"].encode()) == 700
    assert locker.state()["checkpoint"] == want
    assert json.loads(bytes(locker.state_json()))["checkpoint"] == want
    assert locker.command(cmds["checkpoint_forged_11"].encode()) is False
    # kept across a restart
    again, _ = make_locker(d, clock=at(9, 5), config=False)
    assert again.state()["checkpoint"] == want
    assert json.loads(bytes(again.state_json()))["checkpoint"] == want


def test_the_journal_id_and_the_mac_keys():
    from locker.mac import derive

    d = tmpdir("core_event_mac")
    locker, board = make_locker(d, clock=at(9, 0))
    deposit(locker, board, S1)
    jid = locker.journal.jid
    secret = bytes(range(32))  # the fixtures' secret
    assert locker.keys == (derive(secret, b"event"), derive(secret, b"ack"))
    assert len(jid) == 16 and jid == jid.lower() and int(jid, 16) >= 0
    again, _ = make_locker(d, clock=at(9, 5), config=False)
    assert again.journal.jid == jid  # the same journal after a restart
