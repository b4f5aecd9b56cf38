"""Alerts by severity (lockerctl/alerts.py), their plain words (lockerctl/words.py) and their
acknowledgement with a note (lockerctl/store_alerts.py), on a real SQLite store filled through
the store's ingest path."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
SITE = "school"
ZONE = ZoneInfo("Europe/London")
ROSTER = """person_id,name,role,year,walk_home,card_uid
P001,Pia Pupil,pupil,6,yes,04A1B2C3
P002,Pat Pupil,pupil,4,no,04A2B2C3
S001,Sam Staff,staff,,no,04B1B2C3
"""
TIMETABLE = (
    'timezone = "Europe/London"\nhome_time = "15:15"\n'
    'contact = [["08:45", "12:00"], ["13:00", "15:15"]]\n'
    'terms = [["2026-09-03", "2026-12-18"]]\nclosed = ["2026-11-02"]\n'
)


@pytest.fixture
def store(tmp_path):
    from lockerctl.roster import parse_roster
    from lockerctl.store import Store

    st = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    st.replace_roster(SITE, parse_roster(ROSTER))
    st.add_locker(SITE, "L1", 8, b"\x01" * 32, "pw")
    st.add_locker(SITE, "L2", 8, b"\x02" * 32, "pw")
    st.set_locker_status(SITE, "L1", online=True, state={"clock_ok": True, "bays": []})
    st.set_locker_status(SITE, "L2", online=True, state={"clock_ok": True, "bays": []})
    yield st
    st.close()


def put(store, locker: str, seq: int, kind: str, received_at: int, ts=None, **kw):
    """One event through the store's ingest path, received at `received_at`."""
    from lockerctl.store import events

    ev = {"seq": seq, "ts": ts if ts is not None else received_at, "type": kind}
    ev.update({"bay": None, "person": None, "by": None, "reason": None, **kw})
    store.ingest(SITE, [(locker, ev)])
    with store.engine.begin() as conn:
        conn.execute(
            events.update()
            .where(events.c.locker_id == locker, events.c.seq == seq)
            .values(received_at=received_at)
        )


def test_urgent_first_no_policy_flags_and_newest_received_first(store):
    from lockerctl import alerts

    now = int(dt.datetime(2026, 11, 5, 14, 0, tzinfo=ZONE).timestamp())
    put(store, "L1", 1, "policy_flag", now - 900, bay=1, person="P002", reason="phone_not_allowed")
    put(store, "L1", 2, "door_forced", now - 800, bay=3)
    put(store, "L1", 3, "uncollected", now - 60, bay=1, person="P002")  # newest, but routine
    # L2's clock is a day ahead: by its own clock this is the newest event; it arrived earlier
    put(store, "L2", 1, "door_left_open", now - 700, ts=now + 86400, bay=2, person="S001")
    put(store, "L2", 2, "cmd_rejected", now - 600, reason="expired")
    found, _ = alerts.compute(store, SITE, {}, now=now)
    kinds = [a.kind for a in found]
    assert "policy_flag" not in kinds  # for SLT's daily review, not the office's alerts
    assert kinds == ["cmd_rejected", "door_left_open", "door_forced", "uncollected"]
    assert [a.severity for a in found] == ["urgent"] * 3 + ["routine"]
    assert found[0].detail == "the command had expired"  # plain words, not `expired`
    # names for those who may see them, "a pupil" / "a staff member" for the office
    by_kind = {a.kind: a for a in found}
    assert by_kind["uncollected"].who(show_names=True) == "Pat Pupil"
    assert by_kind["uncollected"].who(show_names=False) == "a pupil"
    assert by_kind["door_left_open"].who(show_names=False) == "a staff member"
    assert by_kind["door_forced"].who(show_names=False) == ""


def test_filters_by_kind_locker_and_day(store):
    from lockerctl import alerts

    day1 = int(dt.datetime(2026, 11, 4, 10, 0, tzinfo=ZONE).timestamp())
    day2 = day1 + 86400
    put(store, "L1", 1, "door_forced", day1, bay=1)
    put(store, "L1", 2, "door_forced", day2, bay=2)
    put(store, "L2", 1, "door_forced", day2, bay=1)
    put(store, "L2", 2, "journal_near_full", day2)
    found, _ = alerts.compute(store, SITE, {}, now=day2 + 60)
    assert len(alerts.select(found, kind="door_forced")) == 3
    assert [a.bay for a in alerts.select(found, kind="door_forced", locker="L1")] == [2, 1]
    on_day1 = alerts.select(found, day=dt.date(2026, 11, 4), timezone="Europe/London")
    assert [(a.locker, a.bay) for a in on_day1] == [("L1", 1)]
    assert [a.kind for a in alerts.select(found, locker="L2", severity_="urgent")] == [
        "door_forced",
        "journal_near_full",
    ]
    assert alerts.select(found, severity_="routine") == []


def test_acknowledge_every_alert_of_a_kind_with_a_note(store):
    from lockerctl import alerts, store_alerts

    now = int(dt.datetime(2026, 11, 5, 10, 0, tzinfo=ZONE).timestamp())
    for seq in (1, 2, 3):
        put(store, "L1", seq, "door_forced", now - 100 * seq, bay=seq)
    put(store, "L1", 4, "door_left_open", now - 50, bay=4)
    with pytest.raises(ValueError, match="control"):
        alerts.acknowledge(store, SITE, "olive", kind="door_forced", note="fine\x1b[2J", now=now)
    found, _ = alerts.compute(store, SITE, {}, now=now)
    acks = _acks(store)
    assert acks == {}  # a bad note acknowledges nothing
    n = alerts.acknowledge(
        store, SITE, "olive", kind="door_forced", note="fire drill: doors tested", now=now
    )
    assert n == 3
    assert alerts.acknowledge(store, SITE, "olive", kind="door_forced", now=now) == 0
    acks = _acks(store)
    found, _ = alerts.compute(store, SITE, acks, now=now, notes=store_alerts.notes(store, SITE))
    done = [a for a in found if a.acked_by]
    assert {a.kind for a in done} == {"door_forced"} and len(done) == 3
    assert {a.note for a in done} == {"fire drill: doors tested"}
    assert [a.kind for a in found if not a.acked_by] == ["door_left_open"]
    trail = [a for a in store.trail_actions(SITE, limit=100) if a.get("action") == "alert_ack"]
    assert len(trail) == 3
    assert all(a["detail"]["note"] == "fire drill: doors tested" for a in trail), trail


def _acks(store):
    from lockerctl.accounts import alert_acks

    with store.engine.begin() as conn:
        return {r.alert: (r.by, r.at) for r in conn.execute(sa.select(alert_acks))}


def test_offline_for_five_minutes_in_the_timetables_school_hours(store):
    from lockerctl import alerts
    from lockerctl.store import lockers
    from lockerctl.timetable import parse_timetable

    def offline_since(when: dt.datetime, since: dt.datetime | None) -> bool:
        with store.engine.begin() as conn:
            conn.execute(
                lockers.update()
                .where(lockers.c.id == "L2")
                .values(online=False, last_seen=since.timestamp() if since else None)
            )
        found, _ = alerts.compute(store, SITE, {}, now=when.timestamp())
        return "offline:L2" in {a.key for a in found}

    thursday = dt.datetime(2026, 11, 5, 10, 0, tzinfo=ZONE)
    # no timetable: no school hours known, no offline alert (the lockers enforce nothing)
    assert not offline_since(thursday, thursday - dt.timedelta(hours=1))
    store.set_timetable(SITE, TIMETABLE, parse_timetable(TIMETABLE, "t"), "Europe/London")
    assert offline_since(thursday, thursday - dt.timedelta(hours=1))
    assert offline_since(thursday, None)  # never seen
    assert not offline_since(thursday, thursday - dt.timedelta(minutes=4))  # not 5 minutes yet
    assert offline_since(thursday, thursday - dt.timedelta(minutes=6))
    early = thursday.replace(hour=8, minute=40)  # before the first contact period
    assert not offline_since(early, early - dt.timedelta(hours=12))
    assert offline_since(thursday.replace(hour=8, minute=45), early - dt.timedelta(hours=12))
    assert not offline_since(thursday.replace(hour=15, minute=15), thursday)  # home time
    assert not offline_since(thursday.replace(day=2), thursday)  # 2 Nov: closed
    assert not offline_since(thursday.replace(day=7), thursday)  # Saturday
    assert not offline_since(thursday.replace(month=12, day=21), thursday)  # holiday


def test_school_hours_follow_the_clock_change_as_the_lockers_do(store):
    """The firmware's calendar: 08:45 local is 08:45 UTC in winter, 07:45 UTC in summer."""
    from lockerctl import alerts
    from lockerctl.timetable import parse_timetable

    text = TIMETABLE.replace('"2026-09-03", "2026-12-18"', '"2026-03-02", "2026-12-18"')
    store.set_timetable(SITE, text, parse_timetable(text, "t"), "Europe/London")
    row = store.timetable(SITE)
    utc = dt.UTC
    summer = dt.datetime(2026, 6, 4, 7, 50, tzinfo=utc).timestamp()  # 08:50 BST
    winter = dt.datetime(2026, 11, 5, 7, 50, tzinfo=utc).timestamp()  # 07:50 GMT
    assert alerts.school_hours(row, summer)
    assert not alerts.school_hours(row, winter)


def _firmware_words(name: str) -> tuple:
    tree = ast.parse((ROOT / "firmware/locker/events.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"no {name} in events.py")


def test_every_event_type_and_reason_has_plain_words():
    from lockerctl import alerts, words

    for kind in _firmware_words("TYPES"):
        assert words.EVENTS.get(kind), kind
        assert "_" not in words.event_words(kind)
    for reason in _firmware_words("REASONS"):
        assert words.REASONS.get(reason), reason
    for kind in alerts.KINDS:
        assert words.ALERTS.get(kind), kind
    assert words.reason_words("contact_hours") == (
        "during lessons (phones stay locked until home time)"
    )
    assert words.reason_words("unknown_card x3 1790000000-1790000100 0a1b2c3d") == (
        "card not on the roster, 3 more times"
    )
    assert words.reason_words("fire drill") == "fire drill"  # the office's own words
    assert words.describe("denied", "phone_not_allowed") == (
        "Card refused: this pupil may not bring a phone"
    )


def test_the_host_runs_the_lockers_own_calendar():
    """lockerctl/fwcalendar.py runs the firmware's locker/timetable.py itself (the package's
    data/locker_timetable.pysrc is a link to it), so the host's school hours cannot drift from
    what the lockers enforce; and it puts no `locker` module in sys.modules."""
    import sys

    from lockerctl import fwcalendar

    link = ROOT / "host_tools/lockerctl/data/locker_timetable.pysrc"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "firmware/locker/timetable.py").resolve()
    assert fwcalendar.Timetable.__init__.__code__.co_filename == "firmware/locker/timetable.py"
    assert sys.modules.get("locker") is None or hasattr(sys.modules["locker"], "__file__")
