# runs-on: micropython cpython
# heapsize: 96k
# The school's rules as a table of taps: each rule and each edge, DST change days, closed days,
# weekends, out of term, clock unknown, overrides, grants, Year 6 walk-home, staff in break and
# in contact, the SLT fob, revoked and unknown cards.
from locker.policy import decide, grant_covers, may_bring_phone
from locker.timetable import Timetable, date_days

SPEC = {
    "timezone": "Europe/London",
    "offsets": [[1774746000, 3600], [1792890000, 0]],
    "home_time": 915,
    "y6_release_minutes": 10,
    "uncollected_after_minutes": 60,
    "contact": [[525, 630], [645, 720], [780, 915]],
    "terms": [[20260105, 20260402], [20260903, 20261023], [20261102, 20261218]],
    "closed": [20261102],
}
TT = Timetable(SPEC)


class Card:
    def __init__(self, person, role, year=0, walk_home=False, revoked=False):
        self.person = person
        self.role = role
        self.year = year
        self.walk_home = walk_home
        self.revoked = revoked


Y6_WALK = Card("P0001", "pupil", 6, True)
Y6_DRIVEN = Card("P0002", "pupil", 6, False)
Y5_WALK = Card("P0003", "pupil", 5, True)
Y3 = Card("P0004", "pupil", 3, False)
STAFF = Card("T0001", "staff")
OFFICE = Card("O0001", "office")
SLT_FOB = Card("S0001", "slt")
REVOKED = Card("P0009", "pupil", 6, True, revoked=True)
REVOKED_FOB = Card("S0009", "slt", revoked=True)


def at(date, hhmm, s=0):
    """UTC instant of local wall time hhmm ("15:04") plus s seconds on date in Europe/London."""
    h, m = hhmm.split(":")
    return TT.at_local(date, int(h) * 60 + int(m)) + s


THU = 20260910  # a school day in BST
DEC = 20261210  # a school day in GMT
SPRING_SUN = 20260329  # the 23-hour day (a Sunday)
SPRING_MON = 20260330  # first school day on BST
AUTUMN_SUN = 20261025  # the 25-hour day (a Sunday, half term)

OK = ("retrieve", None, None)
CONTACT = ("denied", "contact_hours", None)

# (what, card, now, holds, override_by, granted, expected)
# fmt: off
CASES = [
    # unknown and revoked
    ("unknown card", None, at(THU, "16:00"), False, None, False, ("denied", "unknown_card", None)),
    ("unknown card, override", None, at(THU, "10:00"), True, "S0001", False,
     ("denied", "unknown_card", None)),
    ("revoked, deposit", REVOKED, at(THU, "08:00"), False, None, False,
     ("denied", "revoked", None)),
    ("revoked, after home time", REVOKED, at(THU, "16:00"), True, None, False,
     ("denied", "revoked", None)),
    ("revoked, granted", REVOKED, at(THU, "16:00"), True, None, True, ("denied", "revoked", None)),
    ("revoked, SLT hands it back", REVOKED, at(THU, "10:00"), True, "S0001", False,
     ("override", None, None)),
    ("revoked, override never deposits", REVOKED, at(THU, "10:00"), False, "S0001", False,
     ("denied", "revoked", None)),
    ("revoked SLT fob", REVOKED_FOB, at(THU, "10:00"), False, None, False,
     ("denied", "revoked", None)),
    # the SLT fob never deposits or retrieves
    ("slt fob", SLT_FOB, at(THU, "10:00"), False, None, False, ("arm", None, None)),
    ("slt fob, clock unknown", SLT_FOB, None, False, None, False, ("arm", None, None)),
    ("slt fob, second tap", SLT_FOB, at(THU, "10:00"), False, "S0001", False, ("arm", None, None)),
    # deposits: always, flagged when the pupil may not bring a phone
    ("Y6 walk deposit", Y6_WALK, at(THU, "08:30"), False, None, False, ("deposit", None, None)),
    ("Y6 driven deposit", Y6_DRIVEN, at(THU, "08:30"), False, None, False,
     ("deposit", None, "policy_flag")),
    ("Y5 walk deposit", Y5_WALK, at(THU, "08:30"), False, None, False,
     ("deposit", None, "policy_flag")),
    ("Y3 deposit in lessons", Y3, at(THU, "10:00"), False, None, False,
     ("deposit", None, "policy_flag")),
    ("staff deposit in contact", STAFF, at(THU, "10:00"), False, None, False,
     ("deposit", None, None)),
    ("office deposit", OFFICE, at(THU, "10:00"), False, None, False, ("deposit", None, None)),
    ("deposit, clock unknown", Y3, None, False, None, False, ("deposit", None, "policy_flag")),
    ("deposit, weekend", STAFF, at(20260912, "10:00"), False, None, False,
     ("deposit", None, None)),
    # clock unknown: retrievals need an override
    ("retrieve, clock unknown", STAFF, None, True, None, False,
     ("denied", "clock_unknown", None)),
    ("retrieve, clock unknown, granted", STAFF, None, True, None, True,
     ("denied", "clock_unknown", None)),
    ("retrieve, clock unknown, override", Y3, None, True, "S0001", False,
     ("override", None, None)),
    # pupils: until home time; Year 6 walk-home 10 minutes before
    ("pupil before school", Y3, at(THU, "08:00"), True, None, False, CONTACT),
    ("pupil at lunch", Y3, at(THU, "12:30"), True, None, False, CONTACT),
    ("pupil 15:14:59", Y3, at(THU, "15:14", 59), True, None, False, CONTACT),
    ("pupil 15:15:00", Y3, at(THU, "15:15"), True, None, False, OK),
    ("pupil evening", Y3, at(THU, "21:00"), True, None, False, OK),
    ("Y6 walk 15:04:59", Y6_WALK, at(THU, "15:04", 59), True, None, False, CONTACT),
    ("Y6 walk 15:05:00", Y6_WALK, at(THU, "15:05"), True, None, False, OK),
    ("Y6 driven 15:05:00", Y6_DRIVEN, at(THU, "15:05"), True, None, False, CONTACT),
    ("Y6 driven 15:15:00", Y6_DRIVEN, at(THU, "15:15"), True, None, False, OK),
    ("Y5 walk 15:05:00", Y5_WALK, at(THU, "15:05"), True, None, False, CONTACT),
    ("Y6 walk GMT 15:04:59", Y6_WALK, at(DEC, "15:04", 59), True, None, False, CONTACT),
    ("Y6 walk GMT 15:05:00", Y6_WALK, at(DEC, "15:05"), True, None, False, OK),
    ("pupil GMT 15:14:59", Y3, at(DEC, "15:14", 59), True, None, False, CONTACT),
    ("pupil GMT 15:15:00", Y3, at(DEC, "15:15"), True, None, False, OK),
    ("pupil granted", Y3, at(THU, "10:00"), True, None, True, OK),
    ("pupil override", Y3, at(THU, "10:00"), True, "S0001", False, ("override", None, None)),
    # staff and office: contact periods only
    ("staff before school", STAFF, at(THU, "08:44", 59), True, None, False, OK),
    ("staff 08:45", STAFF, at(THU, "08:45"), True, None, False, CONTACT),
    ("staff 10:29:59", STAFF, at(THU, "10:29", 59), True, None, False, CONTACT),
    ("staff break 10:30", STAFF, at(THU, "10:30"), True, None, False, OK),
    ("staff break 10:44:59", STAFF, at(THU, "10:44", 59), True, None, False, OK),
    ("staff 10:45", STAFF, at(THU, "10:45"), True, None, False, CONTACT),
    ("staff lunch 12:00", STAFF, at(THU, "12:00"), True, None, False, OK),
    ("staff 13:00", STAFF, at(THU, "13:00"), True, None, False, CONTACT),
    ("staff home time", STAFF, at(THU, "15:15"), True, None, False, OK),
    ("office in contact", OFFICE, at(THU, "14:00"), True, None, False, CONTACT),
    ("office at lunch", OFFICE, at(THU, "12:30"), True, None, False, OK),
    ("staff granted in contact", STAFF, at(THU, "14:00"), True, None, True, OK),
    ("staff override in contact", STAFF, at(THU, "14:00"), True, "S0001", False,
     ("override", None, None)),
    # not a school day: nothing enforced
    ("pupil Saturday", Y3, at(20260912, "10:00"), True, None, False, OK),
    ("staff Sunday", STAFF, at(20260913, "10:00"), True, None, False, OK),
    ("pupil INSET day", Y3, at(20261102, "10:00"), True, None, False, OK),
    ("pupil half term", Y3, at(20261028, "10:00"), True, None, False, OK),
    ("pupil summer holiday", Y3, at(20260801, "10:00"), True, None, False, OK),
    ("staff holiday", STAFF, at(20260801, "10:00"), True, None, False, OK),
    # the clock-change days and the days after
    ("pupil spring-change Sunday", Y3, at(SPRING_SUN, "10:00"), True, None, False, OK),
    ("pupil autumn-change Sunday", Y3, at(AUTUMN_SUN, "10:00"), True, None, False, OK),
    ("staff 08:44:59 first BST day", STAFF, at(SPRING_MON, "08:44", 59), True, None, False, OK),
    ("staff 08:45 first BST day", STAFF, at(SPRING_MON, "08:45"), True, None, False, CONTACT),
    ("Y6 walk 15:04:59 first BST day", Y6_WALK, at(SPRING_MON, "15:04", 59), True, None, False,
     CONTACT),
    ("Y6 walk 15:05 first BST day", Y6_WALK, at(SPRING_MON, "15:05"), True, None, False, OK),
    ("pupil 15:14:59 first BST day", Y3, at(SPRING_MON, "15:14", 59), True, None, False, CONTACT),
    ("pupil 15:15 first BST day", Y3, at(SPRING_MON, "15:15"), True, None, False, OK),
]
# fmt: on


def test_every_case_in_the_table():
    failures = []
    for what, card, now, holds, override_by, granted, expected in CASES:
        got = decide(card, now, TT, holds, override_by=override_by, granted=granted)
        if tuple(got) != expected:
            failures.append("{}: got {} expected {}".format(what, got, expected))
    assert not failures, "\n".join(failures)


def test_first_bst_day_edges_are_utc_plus_one():
    # 15:05 BST on the Monday after the change is 14:05 UTC; an hour-off bug would show here.
    base = date_days(SPRING_MON) * 86400
    assert decide(Y6_WALK, base + 14 * 3600 + 5 * 60, TT, True) == OK
    assert decide(Y6_WALK, base + 14 * 3600 + 5 * 60 - 1, TT, True) == CONTACT
    base = date_days(DEC) * 86400  # GMT: the same wall time is 15:05 UTC
    assert decide(Y6_WALK, base + 14 * 3600 + 5 * 60, TT, True) == CONTACT
    assert decide(Y6_WALK, base + 15 * 3600 + 5 * 60, TT, True) == OK


def test_no_timetable_releases_everything():
    for card in (Y3, Y6_WALK, STAFF, OFFICE):
        assert decide(card, at(THU, "10:00"), None, True) == OK
        assert decide(card, at(THU, "10:00"), Timetable(None), True) == OK
    assert decide(Y3, at(THU, "10:00"), None, False) == ("deposit", None, "policy_flag")
    assert decide(STAFF, None, None, True) == ("denied", "clock_unknown", None)


def test_may_bring_phone():
    assert may_bring_phone(Y6_WALK)
    assert not may_bring_phone(Y6_DRIVEN)
    assert not may_bring_phone(Y5_WALK)
    assert may_bring_phone(STAFF) and may_bring_phone(OFFICE)


def test_grant_covers_its_window_only():
    grants = [
        {"id": 3, "person": "P0004", "from": 1000, "until": 2000, "by": "S0001"},
        {"id": 4, "person": "T0001", "from": 1500, "until": 3000, "by": "S0001"},
    ]
    assert grant_covers(grants, "P0004", 999) is None
    assert grant_covers(grants, "P0004", 1000)["id"] == 3
    assert grant_covers(grants, "P0004", 1999)["id"] == 3
    assert grant_covers(grants, "P0004", 2000) is None
    assert grant_covers(grants, "T0001", 2500)["id"] == 4
    assert grant_covers(grants, "P0005", 1500) is None
    assert grant_covers(grants, "P0004", None) is None
    assert grant_covers([], "P0004", 1500) is None
    assert grant_covers(None, "P0004", 1500) is None


def test_grant_and_decide_together():
    now = at(THU, "10:00")
    grants = [{"id": 9, "person": "P0004", "from": now - 60, "until": now + 60, "by": "S0001"}]
    granted = grant_covers(grants, Y3.person, now) is not None
    assert decide(Y3, now, TT, True, granted=granted) == OK
    later = now + 60
    granted = grant_covers(grants, Y3.person, later) is not None
    assert decide(Y3, later, TT, True, granted=granted) == CONTACT
