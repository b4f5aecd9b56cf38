# runs-on: micropython cpython
# heapsize: 96k
# The locker's calendar: civil dates, Europe/London built in, offset tables, school days, contact
# periods, home time and the Year 6 release, including the 23- and 25-hour days.
from locker.timetable import (
    Timetable,
    civil_from_days,
    date_days,
    date_int,
    days_from_civil,
    london_offset,
    weekday,
)

# The sample school: Europe/London, home 15:15, Y6 release 10 min, contact 08:45-10:30,
# 10:45-12:00, 13:00-15:15. A spring term that runs across the March clock change, an autumn
# term across the October one (half term 26-30 Oct is not in a term), an INSET day and a closure.
SPEC = {
    "timezone": "Europe/London",
    "offsets": [],
    "home_time": 915,
    "y6_release_minutes": 10,
    "uncollected_after_minutes": 60,
    "contact": [[525, 630], [645, 720], [780, 915]],
    "terms": [[20260105, 20260402], [20260903, 20261023], [20261102, 20261218]],
    "closed": [20261102, 20260316],
}

SPRING_CHANGE = 1774746000  # 2026-03-29 01:00 UTC (docs/protocol.md's example)
AUTUMN_CHANGE = 1792890000  # 2026-10-25 01:00 UTC


def utc(date, h=0, m=0, s=0):
    return date_days(date) * 86400 + h * 3600 + m * 60 + s


def test_civil_dates_known_values():
    assert days_from_civil(1970, 1, 1) == 0
    assert days_from_civil(2000, 3, 1) == 11017
    assert days_from_civil(1969, 12, 31) == -1
    assert SPRING_CHANGE - 3600 == days_from_civil(2026, 3, 29) * 86400
    assert civil_from_days(0) == (1970, 1, 1)
    assert civil_from_days(11016) == (2000, 2, 29)
    assert date_int(days_from_civil(2026, 12, 31)) == 20261231
    assert weekday(days_from_civil(2026, 3, 29)) == 6  # Sunday
    assert weekday(days_from_civil(2026, 9, 7)) == 0  # Monday
    assert weekday(0) == 3  # 1970-01-01, a Thursday


def test_civil_dates_round_trip_every_day_1990_2060():
    z = days_from_civil(1990, 1, 1)
    last = days_from_civil(2060, 12, 31)
    prev = None
    while z <= last:
        y, m, d = civil_from_days(z)
        assert days_from_civil(y, m, d) == z
        if prev is not None:  # consecutive days: next day of month or first of the next month
            py, pm, pd = prev
            assert (y, m, d) == (py, pm, pd + 1) or (
                d == 1 and (m == pm + 1 or (m, y) == (1, py + 1))
            )
        prev = (y, m, d)
        z += 1


def test_london_rule_at_the_2026_changes():
    assert london_offset(SPRING_CHANGE - 1) == 0
    assert london_offset(SPRING_CHANGE) == 3600
    assert london_offset(AUTUMN_CHANGE - 1) == 3600
    assert london_offset(AUTUMN_CHANGE) == 0
    # 2027: last Sundays are 28 March and 31 October
    assert london_offset(utc(20270328, 0, 59, 59)) == 0
    assert london_offset(utc(20270328, 1)) == 3600
    assert london_offset(utc(20271031, 0, 59, 59)) == 3600
    assert london_offset(utc(20271031, 1)) == 0


def test_local_across_the_spring_change():
    tt = Timetable(SPEC)
    assert tt.local(SPRING_CHANGE - 1) == (20260329, 6, 3599, 0)  # 00:59:59 GMT
    assert tt.local(SPRING_CHANGE) == (20260329, 6, 7200, 3600)  # 02:00:00 BST
    assert tt.local(utc(20260329, 23)) == (20260330, 0, 0, 3600)  # midnight BST is Monday


def test_local_across_the_autumn_change():
    tt = Timetable(SPEC)
    assert tt.local(AUTUMN_CHANGE - 1) == (20261025, 6, 7199, 3600)  # 01:59:59 BST
    assert tt.local(AUTUMN_CHANGE) == (20261025, 6, 3600, 0)  # 01:00:00 GMT again


def test_at_local_on_the_23_and_25_hour_days():
    tt = Timetable(SPEC)
    assert tt.at_local(20260330, 0) - tt.at_local(20260329, 0) == 23 * 3600
    assert tt.at_local(20261026, 0) - tt.at_local(20261025, 0) == 25 * 3600
    assert tt.at_local(20260329, 915) == utc(20260329, 14, 15)  # BST in the afternoon
    assert tt.at_local(20261025, 915) == utc(20261025, 15, 15)  # GMT in the afternoon
    assert tt.at_local(20261025, 90) == utc(20261025, 0, 30)  # 01:30 twice: the first one
    assert tt.at_local(20260329, 90) == utc(20260329, 1, 30)  # 01:30 skipped: reads 02:30 BST
    assert tt.local(tt.at_local(20260329, 90))[2] == 9000


def test_school_days():
    tt = Timetable(SPEC)
    assert tt.is_school_day(utc(20260907, 9))  # Monday in term
    assert tt.is_school_day(utc(20260903, 12))  # first day of term
    assert tt.is_school_day(utc(20261023, 12))  # last day of term
    assert not tt.is_school_day(utc(20260902, 12))  # the day before term
    assert not tt.is_school_day(utc(20261026, 12))  # half term
    assert not tt.is_school_day(utc(20260905, 12))  # Saturday
    assert not tt.is_school_day(utc(20260906, 12))  # Sunday
    assert not tt.is_school_day(utc(20261102, 12))  # INSET day
    assert not tt.is_school_day(utc(20260316, 12))  # closed
    assert tt.is_school_day(utc(20260317, 12))
    assert not tt.is_school_day(utc(20260329, 12))  # the spring change is a Sunday
    # Local date, not UTC date: 23:30 UTC on Sunday 6 Sep is 00:30 BST on Monday 7 Sep.
    assert tt.is_school_day(utc(20260906, 23, 30))
    assert not tt.is_school_day(utc(20260906, 22, 59, 59))


def test_contact_periods_exact_edges_in_bst():
    tt = Timetable(SPEC)
    day = 20260910  # Thursday, BST: local = UTC + 1 h
    assert not tt.in_contact(tt.at_local(day, 525) - 1)  # 08:44:59
    assert tt.in_contact(tt.at_local(day, 525))  # 08:45:00
    assert tt.in_contact(tt.at_local(day, 630) - 1)  # 10:29:59
    assert not tt.in_contact(tt.at_local(day, 630))  # 10:30 break
    assert tt.in_contact(tt.at_local(day, 645))  # 10:45
    assert not tt.in_contact(tt.at_local(day, 720))  # 12:00 lunch
    assert not tt.in_contact(tt.at_local(day, 779) + 59)  # 12:59:59
    assert tt.in_contact(tt.at_local(day, 780))  # 13:00
    assert not tt.in_contact(tt.at_local(day, 915))  # 15:15 home time
    assert tt.at_local(day, 525) == utc(day, 7, 45)
    assert not tt.in_contact(utc(20260912, 9))  # Saturday
    assert not tt.in_contact(utc(20261102, 10))  # INSET day


def test_home_time_release_and_uncollected_edges():
    tt = Timetable(SPEC)
    for day, utc_hour in ((20260910, 14), (20261210, 15), (20260330, 14)):
        home = utc(day, utc_hour, 15)
        noon = utc(day, 12)
        assert tt.home_time_ts(noon) == home
        assert tt.pupil_release_ts(noon, False) == home
        release = tt.pupil_release_ts(noon, True)
        assert release == home - 600
        assert tt.local(release)[2] == 15 * 3600 + 5 * 60  # 15:05:00 local
        assert tt.local(release - 1)[2] == 15 * 3600 + 4 * 60 + 59  # 15:04:59 is before
        assert tt.uncollected_ts(noon) == home + 3600
    assert tt.home_time_ts(utc(20260912, 12)) is None  # Saturday
    assert tt.pupil_release_ts(utc(20260912, 12), True) is None
    assert tt.uncollected_ts(utc(20261102, 12)) is None  # INSET


def test_no_timetable_enforces_nothing():
    tt = Timetable(None)
    ts = utc(20260910, 10)
    assert tt.local(ts) == (20260910, 3, 36000, 0)
    assert not tt.is_school_day(ts)
    assert not tt.in_contact(ts)
    assert tt.home_time_ts(ts) is None
    assert tt.uncollected_ts(ts) is None


def test_offset_table_lookup_and_its_ends():
    t1, t2 = utc(20260308, 7), utc(20261101, 6)  # New York 2026
    tt = Timetable(dict(SPEC, timezone="America/New_York", offsets=[[t1, -14400], [t2, -18000]]))
    assert tt.offset(t1 - 86400 * 400) == -14400  # before the table: the first entry's offset
    assert tt.offset(t1) == -14400
    assert tt.offset(t2 - 1) == -14400
    assert tt.offset(t2) == -18000
    assert tt.offset(t2 + 86400 * 4000) == -18000  # after the table: the last entry's
    assert tt.local(t2 - 1) == (20261101, 6, 7199, -14400)  # 01:59:59 EDT
    assert tt.local(t2) == (20261101, 6, 3600, -18000)  # 01:00:00 EST
    # a long table: binary search finds every entry
    table = [[1000 * i, i] for i in range(50)]
    tt = Timetable(dict(SPEC, timezone="Test/Zone", offsets=table))
    for i in range(50):
        assert tt.offset(1000 * i) == i
        assert tt.offset(1000 * i + 999) == i
    assert Timetable(dict(SPEC, timezone="Asia/Tokyo", offsets=[])).offset(0) == 0


def test_london_uses_the_table_inside_and_its_rule_outside():
    t1, t2 = utc(20300101), utc(20300201)
    tt = Timetable(dict(SPEC, offsets=[[t1, 7200], [t2, 0]]))
    assert tt.offset(t1 + 10) == 7200  # the host's table wins where it speaks
    assert tt.offset(t1 - 1) == 0  # before it: the built-in rule (winter)
    assert tt.offset(utc(20290701)) == 3600  # summer before the table
    assert tt.offset(utc(20300701)) == 3600  # summer after the table's last entry


def test_home_time_on_a_weekday_clock_change():
    # A zone whose clocks go forward at 10:00 UTC on Monday 7 Sep 2026: home time that day is on
    # the new offset even though the morning was on the old one.
    change = utc(20260907, 10)
    tt = Timetable(dict(SPEC, timezone="Test/Zone", offsets=[[0, 0], [change, 3600]]))
    morning = utc(20260907, 8)
    assert tt.local(morning)[3] == 0
    assert tt.home_time_ts(morning) == utc(20260907, 14, 15)
    assert tt.pupil_release_ts(morning, True) == utc(20260907, 14, 5)
    assert tt.in_contact(utc(20260907, 9, 50))  # 09:50 local, old offset
    assert tt.in_contact(utc(20260907, 10))  # 11:00 local, new offset
    assert not tt.in_contact(utc(20260907, 11, 15))  # 12:15 local: lunch
