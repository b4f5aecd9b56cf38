# runs-on: micropython
# The everyday exceptions at the locker (docs/policy.md), from a bundle the host's builder made
# (make_fixtures.py, bundle-rules.bin): a keep-safe consent, an exemption's windows on a school
# day and its dates, a grant and an exemption naming their approver, visitors' cards during and
# after their day, and the office's named release (`cmd` op `release`).
import json
from binascii import hexlify, unhexlify

from fakeboard import make_locker
from locker import mac
from mpytest import fixture, tmpdir

DAY = 1795478400  # Tuesday 2026-11-24 00:00 UTC (GMT), a school day in term
SATURDAY = DAY + 4 * 86400
P3, P6N, S2, P7, O1 = "04A10001", "04A10003", "04A10005", "04A1B2C3D4E5F6", "04A10008"
P9_REVOKED = "04A10009"
VISITOR, VISITOR_ENDED = "04A1000A", "04A1000B"


def at(h, m=0, s=0, day=DAY):
    return day + h * 3600 + m * 60 + s


def locker_with_rules(name, clock):
    d = tmpdir(name)
    with open(d + "/config.bin", "wb") as f:
        f.write(fixture("bundle-rules.bin"))
    locker, board = make_locker(d, clock=clock, config=False)
    assert locker.config_version == 3
    assert locker.rules is not None
    return locker, board


def events(locker):
    return [(e.type, e.bay, e.person, e.by, e.reason) for e in locker.journal.unacked(0)]


def deposit(locker, uid):
    r = locker.tap_text(uid)
    assert r["result"] == "granted" and r["action"] == "deposit", r
    locker.door(r["bay"], 1)
    locker.door(r["bay"], 0)
    return r["bay"]


def retrieve(locker, uid):
    r = locker.tap_text(uid)
    assert r["result"] == "granted" and r["action"] == "retrieve", r
    locker.door(r["bay"], 1)
    locker.door(r["bay"], 0)
    return r["bay"]


def flags(locker):
    return [e[2] for e in events(locker) if e[0] == "policy_flag"]


def test_a_consented_pupil_deposits_without_a_flag_and_another_pupil_is_flagged():
    locker, board = locker_with_rules("ex_consent", at(8, 20))
    deposit(locker, P3)  # Year 3, keep-safe consent
    deposit(locker, P7)  # Year 5, no consent (an exemption that starts next month)
    assert flags(locker) == ["P7"], events(locker)


def test_an_exemption_in_force_means_the_pupil_may_bring_a_phone():
    locker, board = locker_with_rules("ex_allowed", at(8, 20))
    deposit(locker, P6N)  # Year 6, driven home: would be flagged, but has a medical exemption
    assert flags(locker) == []


def test_an_exempt_pupil_retrieves_inside_a_window_only():
    locker, board = locker_with_rules("ex_window", at(8, 20))
    bay = deposit(locker, P6N)
    board.clock = at(9, 59, 59)
    assert locker.tap_text(P6N) == {"result": "denied", "reason": "contact_hours"}
    board.clock = at(10, 0)
    assert retrieve(locker, P6N) == bay
    last = events(locker)[-1]
    assert last == ("retrieve", bay, "P6N", "H1", "exemption"), last
    board.clock = at(10, 5)
    deposit(locker, P6N)  # and back in, inside the window: no flag
    board.clock = at(10, 15)  # [10:00, 10:15): the window has closed
    assert locker.tap_text(P6N) == {"result": "denied", "reason": "contact_hours"}
    board.clock = at(12, 35)  # the second window
    retrieve(locker, P6N)
    assert flags(locker) == []


def test_an_exemption_before_its_first_day_releases_nothing():
    locker, board = locker_with_rules("ex_future", at(8, 20))
    deposit(locker, P7)
    board.clock = at(10, 5)  # inside P7's window, but it starts on 2026-12-01
    assert locker.tap_text(P7) == {"result": "denied", "reason": "contact_hours"}
    board.clock = at(10, 5, day=DAY + 7 * 86400)  # Tuesday 2026-12-01
    retrieve(locker, P7)
    assert events(locker)[-1][3:] == ("H1", "exemption")


def test_an_exemption_after_its_last_day_releases_nothing():
    locker, board = locker_with_rules("ex_past", at(8, 20, day=DAY + 7 * 86400))
    deposit(locker, P6N)  # its exemption ended on 2026-11-30: flagged again
    assert flags(locker) == ["P6N"]
    board.clock = at(10, 5, day=DAY + 7 * 86400)
    assert locker.tap_text(P6N) == {"result": "denied", "reason": "contact_hours"}


def test_outside_school_days_a_retrieval_is_an_ordinary_one():
    locker, board = locker_with_rules("ex_saturday", at(9, 0, day=SATURDAY))
    deposit(locker, P6N)
    board.clock = at(10, 5, day=SATURDAY)
    retrieve(locker, P6N)
    assert events(locker)[-1][3:] == (None, None)


def test_a_retrieval_under_a_grant_names_its_approver():
    locker, board = locker_with_rules("ex_grant", at(8, 20))
    bay = deposit(locker, "04A10005")  # S2: a grant from H1, 13:00-14:00
    board.clock = at(13, 30)
    retrieve(locker, "04A10005")
    assert events(locker)[-1] == ("retrieve", bay, "S2", "H1", "grant")


def test_a_visitor_follows_staff_rules_during_the_day_then_only_collects():
    locker, board = locker_with_rules("ex_visitor", at(8, 20))
    bay = deposit(locker, VISITOR)
    assert events(locker)[-1] == ("deposit", bay, "visitor-1", None, "visitor")
    board.clock = at(9, 0)
    assert locker.tap_text(VISITOR) == {"result": "denied", "reason": "contact_hours"}
    board.clock = at(10, 35)  # break: open to staff
    retrieve(locker, VISITOR)
    board.clock = at(16, 30)
    deposit(locker, VISITOR)
    board.clock = at(17, 0)  # the card's end
    retrieve(locker, VISITOR)  # still collects the phone left in its bay
    assert locker.tap_text(VISITOR) == {"result": "denied", "reason": "expired"}
    board.clock = at(9, 0, day=DAY + 86400)
    assert locker.tap_text(VISITOR) == {"result": "denied", "reason": "expired"}


def test_a_visitor_card_collects_the_next_morning_in_contact_time():
    locker, board = locker_with_rules("ex_visitor_next", at(15, 0))
    deposit(locker, VISITOR)
    board.clock = at(9, 0, day=DAY + 86400)  # the next day, in a lesson
    retrieve(locker, VISITOR)


def test_an_ended_visitor_card_never_deposits():
    locker, board = locker_with_rules("ex_visitor_ended", at(8, 20))
    assert locker.tap_text(VISITOR_ENDED) == {"result": "denied", "reason": "expired"}


def _release(cmd_id, bay, reason, by="O1"):
    key = mac.derive(unhexlify(fixture("secret.hex")), mac.CMD)
    exp = 4000000000
    text = "L1|{}|release|{}|{}|{}|{}".format(cmd_id, bay, by, exp, reason)
    tag = hexlify(mac.hmac_sha256(key, text.encode())).decode()
    return json.dumps(
        {
            "id": cmd_id,
            "op": "release",
            "bay": bay,
            "by": by,
            "reason": reason,
            "exp": exp,
            "mac": tag,
        }
    ).encode()


def test_the_named_release_opens_the_bay_of_that_person_only():
    locker, board = locker_with_rules("ex_release", at(8, 20))
    p3 = deposit(locker, P3)
    p7 = deposit(locker, P7)
    board.clock = at(9, 30)
    # the host thinks P3's phone is in P7's bay: refused, nothing opens
    assert locker.command(_release(1, p7, "P3 appointment")) is False
    assert events(locker)[-1] == ("cmd_rejected", p7, None, "O1", "not_holder")
    assert board.locks == [False] * 4
    assert locker.command(_release(2, p3, "P3 collected by parent")) is True
    assert events(locker)[-1] == ("released", p3, "P3", "O1", "collected by parent")
    assert board.locks[p3 - 1] is True and board.locks[p7 - 1] is False
    locker.door(p3, 1)
    locker.door(p3, 0)
    assert locker.state()["bays"][p3 - 1]["holder"] is None
    assert locker.state()["bays"][p7 - 1]["holder"] == "P7"
    # replayed: refused
    assert locker.command(_release(2, p3, "P3 collected by parent")) is False
    assert events(locker)[-1][4] == "replayed"
    # a bay with no phone: refused
    assert locker.command(_release(3, p3, "P3 illness")) is False
    assert events(locker)[-1][4] == "not_holder"


def test_a_release_survives_a_restart_as_a_retrieval():
    d = tmpdir("ex_release_restart")
    with open(d + "/config.bin", "wb") as f:
        f.write(fixture("bundle-rules.bin"))
    locker, board = make_locker(d, clock=at(8, 20), config=False)
    bay = deposit(locker, P3)
    assert locker.command(_release(1, bay, "P3 illness")) is True
    locker, board = make_locker(d, clock=at(8, 30), config=False)
    assert locker.state()["bays"][bay - 1]["holder"] is None


def test_a_revoked_card_is_still_refused():
    locker, board = locker_with_rules("ex_revoked", at(8, 20))
    assert locker.tap_text(P9_REVOKED) == {"result": "denied", "reason": "revoked"}
