"""A simulated fortnight of a school's lockers, written into a real store through the store's
ingest path (batches, as `lockerctl serve` commits them): the policy report's tests."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from zoneinfo import ZoneInfo

SITE = "school"
ZONE = ZoneInfo("Europe/London")
ROSTER = """person_id,name,role,year,walk_home,card_uid
P001,Pia Pupil,pupil,6,yes,04A1B2C3
P002,Pat Pupil,pupil,4,no,04A2B2C3
P003,Pam Pupil,pupil,3,no,04A3B2C3
P004,Pip Pupil,pupil,6,no,04A4B2C3
S001,Sam Staff,staff,,no,04B1B2C3
H001,Hana Head,slt,,no,04C1B2C3
"""
GROUP = {"P001": "Year 6", "P002": "Year 4", "P003": "Year 3", "P004": "Year 6"}
GROUP.update({"S001": "Staff", "H001": "Staff", None: "No one"})
# 2 Nov is an INSET day (closed); term from 3 Sep; home 15:15; uncollected after 60 minutes
TIMETABLE = (
    'timezone = "Europe/London"\nhome_time = "15:15"\nuncollected_after_minutes = 60\n'
    'contact = [["08:45", "12:00"], ["13:00", "15:15"]]\n'
    'terms = [["2026-09-03", "2026-12-18"]]\nclosed = ["2026-11-02"]\n'
)
FIRST, LAST = dt.date(2026, 11, 2), dt.date(2026, 11, 15)


def make_fortnight(tmp_path):
    """(db url, what was generated: Counter of (day, group, measure))."""
    from lockerctl.roster import parse_roster
    from lockerctl.store import Store
    from lockerctl.timetable import parse_timetable

    db = f"sqlite:///{tmp_path / 'lockers.db'}"
    st = Store.open(db)
    st.replace_roster(SITE, parse_roster(ROSTER))
    st.set_timetable(SITE, TIMETABLE, parse_timetable(TIMETABLE, "t"), "Europe/London")
    st.add_locker(SITE, "L1", 6, b"\x01" * 32, "pw")
    st.add_locker(SITE, "L2", 6, b"\x02" * 32, "pw")
    rnd = random.Random(16)
    made: Counter = Counter()
    seqs = {"L1": 0, "L2": 0}
    batch = []

    def ev(locker, when: dt.datetime, kind, bay=None, person=None, by=None, reason=None):
        seqs[locker] += 1
        ts = int(when.timestamp())
        batch.append(
            (locker, {"seq": seqs[locker], "ts": ts, "type": kind, "bay": bay,
                      "person": person, "by": by, "reason": reason})
        )  # fmt: skip

    day = FIRST
    while day <= LAST:
        school = day.weekday() < 5 and day != dt.date(2026, 11, 2)

        def at(h, m=0, d=day):
            return dt.datetime(d.year, d.month, d.day, h, m, tzinfo=ZONE)

        if school:
            for bay, person in enumerate(["P001", "P002", "P003", "P004", "S001"], start=1):
                locker = "L1" if bay % 2 else "L2"
                if rnd.random() < 0.8:
                    ev(locker, at(8, 20 + bay), "deposit", bay, person, reason="pupil")
                    made[(day, GROUP[person], "deposits")] += 1
                    if person == "P002":  # Year 4, not walk-home: may not bring one
                        ev(locker, at(8, 20 + bay), "policy_flag", bay, person,
                           reason="phone_not_allowed")  # fmt: skip
                        made[(day, GROUP[person], "policy_flags")] += 1
                    choice = rnd.choice(["home", "late", "grant", "exemption", "home"])
                    if choice == "home":
                        ev(locker, at(15, 16), "retrieve", bay, person)
                    elif choice == "late":
                        ev(locker, at(16, 15 + bay), "retrieve", bay, person)
                        made[(day, GROUP[person], "late_collections")] += 1
                    elif choice == "grant":
                        ev(locker, at(11, bay), "retrieve", bay, person, "H001", "grant")
                        made[(day, GROUP[person], "grants")] += 1
                    else:
                        ev(locker, at(12, bay), "retrieve", bay, person, "H001", "exemption")
                        made[(day, GROUP[person], "exemptions")] += 1
            if rnd.random() < 0.5:
                ev("L1", at(10), "override", 5, "S001", "H001")
                made[(day, "Staff", "overrides")] += 1
            if rnd.random() < 0.4:
                ev("L2", at(13), "door_forced", 6)
                made[(day, "No one", "incidents")] += 1
            if rnd.random() < 0.2:
                ev("L1", at(14), "emergency_open", 1, "P001", "H001", "double_tap")
                made[(day, "Year 6", "incidents")] += 1
        elif day.weekday() == 5:  # a Saturday club: a staff deposit on a day off
            ev("L1", at(9), "deposit", 3, "S001", reason="staff")
            made[(day, "Staff", "deposits")] += 1
        day += dt.timedelta(days=1)
    for i in range(0, len(batch), 50):  # in batches, as ingest commits them
        st.ingest(SITE, batch[i : i + 50])
    st.close()
    return db, made
