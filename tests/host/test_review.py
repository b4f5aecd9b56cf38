"""SLT's daily review (lockerctl/review.py) and the mailer's queue (lockerctl/mailer.py,
store_alerts.py) on a real store filled through the store's ingest path: the day's flags by
pupil with their days this term, overrides, grants, exemptions, visitors and emergency opens;
the review queued once at its time; urgent alerts queued once, repeats folded, a condition
mailed once while it lasts."""

from __future__ import annotations

import datetime as dt

from test_alerts import SITE, TIMETABLE, ZONE, put, store  # noqa: F401 - the fixture

ROSTER_VISITOR = """person_id,name,role,year,walk_home,card_uid
P001,Pia Pupil,pupil,6,yes,04A1B2C3
P002,Pat Pupil,pupil,4,no,04A2B2C3
P003,Pam Pupil,pupil,3,no,04A3B2C3
S001,Sam Staff,staff,,no,04B1B2C3
H001,Hana Head,slt,,no,04C1B2C3
V001,Vic Visitor,visitor,,no,04E1B2C3
"""


def at(day: int, hour: int, minute: int = 0) -> int:
    return int(dt.datetime(2026, 11, day, hour, minute, tzinfo=ZONE).timestamp())


def fill(st):
    from lockerctl.roster import parse_roster
    from lockerctl.timetable import parse_timetable

    try:
        st.replace_roster(SITE, parse_roster(ROSTER_VISITOR))
    except Exception:  # a roster without visitors (before visitors exist): P/S/H only
        st.replace_roster(SITE, parse_roster("\n".join(ROSTER_VISITOR.splitlines()[:-1]) + "\n"))
    st.set_timetable(SITE, TIMETABLE, parse_timetable(TIMETABLE, "t"), "Europe/London")
    seq = iter(range(1, 1000))
    # Pat (Year 4) flagged on three days this term, twice on Thursday 5 Nov; Pam once
    for day in (3, 4):
        put(st, "L1", next(seq), "policy_flag", at(day, 8, 30), bay=1, person="P002")
    put(st, "L1", next(seq), "policy_flag", at(5, 8, 30), bay=1, person="P002")
    put(st, "L1", next(seq), "policy_flag", at(5, 8, 31), bay=2, person="P003")
    put(st, "L1", next(seq), "policy_flag", at(5, 12, 0), bay=1, person="P002")
    put(st, "L1", next(seq), "policy_flag", at(6, 8, 30), bay=1, person="P001")  # Friday
    put(st, "L1", next(seq), "override", at(5, 10), bay=4, person="S001", by="H001")
    put(st, "L1", next(seq), "retrieve", at(5, 11), bay=5, person="P001", reason="grant",
        by="H001")  # fmt: skip
    put(st, "L1", next(seq), "retrieve", at(5, 11, 5), bay=6, person="P003",
        reason="exemption", by="H001")  # fmt: skip
    put(st, "L1", next(seq), "retrieve", at(5, 15, 15), bay=7, person="P001")  # ordinary
    # L2's clock is 20 minutes slow: shown beside the receipt time
    put(st, "L2", 1, "emergency_open", at(5, 13, 0), ts=at(5, 12, 40), bay=2,
        person="P001", by="H001", reason="double_tap")  # fmt: skip
    put(st, "L2", 2, "deposit", at(5, 9), bay=3, person="V001", reason="staff")
    put(st, "L2", 3, "retrieve", at(5, 12), bay=3, person="V001")


def test_the_daily_review(store):  # noqa: F811
    from lockerctl import review

    fill(store)
    r = review.daily_review(store, SITE, dt.date(2026, 11, 5))
    assert [(f.name, f.year, f.today, f.days_this_term) for f in r.flags] == [
        ("Pat Pupil", 4, 2, 3),
        ("Pam Pupil", 3, 1, 1),
    ]
    assert r.term_start == dt.date(2026, 9, 3)
    assert [(e.locker, e.bay, e.name, e.by_name) for e in r.overrides] == [
        ("L1", 4, "Sam Staff", "Hana Head")
    ]
    assert [(e.bay, e.name) for e in r.grants] == [(5, "Pia Pupil")]
    assert [(e.bay, e.name) for e in r.exemptions] == [(6, "Pam Pupil")]
    (emergency,) = r.emergency
    assert emergency.reason == "SLT fob tapped twice"
    assert emergency.when("Europe/London") == "2026-11-05 13:00 (locker's clock: 2026-11-05 12:40)"
    if store.person(SITE, "V001") is not None:
        assert r.visitors == [
            {"person": "V001", "name": "Vic Visitor", "deposits": 1, "collections": 1}
        ]
    subject, body = review.as_text(r, SITE, "https://lockers.example")
    assert subject == "[classlocker school] Daily review 2026-11-05: 2 pupils flagged"
    assert "Pat Pupil (Year 4): 2 today, on 3 days this term (since 2026-09-03)" in body
    assert "phone_not_allowed" not in body and "double_tap" not in body
    assert "https://lockers.example/review?day=2026-11-05" in body


def test_the_mailer_queues_each_urgent_alert_once_and_the_review_at_its_time(store):  # noqa: F811
    from lockerctl.mailer import AlertMailer, MailSettings
    from lockerctl.store import alerts as store_alerts
    from lockerctl.store.tables import lockers

    settings = MailSettings(
        "127.0.0.1", 1, ["office@school.example"], "lockers@school.example",
        review_at=(16, 30), review_to=["head@school.example"],
    )  # fmt: skip
    mailer = AlertMailer(store, SITE, settings)
    put(store, "L1", 1, "door_forced", at(5, 9), bay=3)  # before the mailer's first look
    assert mailer.scan(at(5, 9, 1)) == 0  # what happened before it started is not news
    put(store, "L1", 2, "door_forced", at(5, 9, 2), bay=3)
    put(store, "L1", 3, "policy_flag", at(5, 9, 2), bay=4, person="P002")
    put(store, "L1", 4, "uncollected", at(5, 9, 2), bay=4, person="P002")  # routine: no mail
    assert mailer.scan(at(5, 9, 3)) == 1
    put(store, "L1", 5, "door_forced", at(5, 9, 8), bay=3)  # same bay within 10 minutes
    put(store, "L1", 6, "door_forced", at(5, 9, 8), bay=2)  # another bay: its own message
    assert mailer.scan(at(5, 9, 9)) == 1
    put(store, "L1", 7, "door_forced", at(5, 9, 20), bay=3)  # 18 minutes later: a new one
    assert mailer.scan(at(5, 9, 20)) == 1
    out = store_alerts.outbox(store, SITE)
    assert [(m.kind, m.bay, m.repeats) for m in reversed(out)] == [
        ("door_forced", 3, 1),
        ("door_forced", 2, 0),
        ("door_forced", 3, 0),
    ]
    # a condition: offline in school hours, mailed once while it lasts, again when it recurs
    from lockerctl.timetable import parse_timetable

    store.set_timetable(SITE, TIMETABLE, parse_timetable(TIMETABLE, "t"), "Europe/London")

    def offline(value: bool, since: int):
        with store.engine.begin() as conn:
            conn.execute(
                lockers.update()
                .where(lockers.c.id == "L2")
                .values(online=not value, last_seen=since)
            )

    offline(True, at(5, 10))
    assert mailer.scan(at(5, 10, 6)) == 1
    assert mailer.scan(at(5, 10, 30)) == 0  # still offline: nothing more
    offline(False, at(5, 10, 31))
    assert mailer.scan(at(5, 10, 32)) == 0
    offline(True, at(5, 11))
    assert mailer.scan(at(5, 11, 20)) == 1  # back offline: a new alert (after 10 minutes)
    assert store_alerts.outbox(store, SITE)[0].kind == "offline"
    # the daily review: once, at its time, on a school day, to --review-to
    assert mailer.scan(at(5, 16, 29)) == 0
    assert mailer.scan(at(5, 16, 30)) == 1
    assert mailer.scan(at(5, 16, 45)) == 0
    review_mail = store_alerts.outbox(store, SITE)[0]
    assert review_mail.kind == "review" and review_mail.recipients == "head@school.example"
    assert "Pat Pupil (Year 4): 1 today" in review_mail.body
    assert mailer.scan(at(7, 16, 30)) == 0  # Saturday
    status = store_alerts.mail_status(store, SITE)
    assert status["queued"] == 6 and not status["failing"]
