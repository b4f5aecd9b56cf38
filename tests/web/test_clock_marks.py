"""The dashboard and a locker's clock (issue 11): a locker whose clock is more than 5 s from the
host's is marked on the lockers page (and its offset is in /api/state); events journaled while a
locker's clock was unknown show the host's receipt time, marked as such, never an empty time.
Over real HTTP against a dashboard on a real store."""

from __future__ import annotations

import html
import json
import re
import time

from conftest import PASSWORDS, SITE
from test_accounts import Client


def _client(dash):
    c = Client(dash.url)
    status, _, _ = c.login("olive", PASSWORDS["olive"])
    assert status in (302, 303), status
    return c


def test_a_clock_more_than_5s_off_is_marked(dash):
    store = dash.store
    now = time.time()
    store.set_clock_offset(SITE, "L1", 12.4, now)
    c = _client(dash)
    status, _, body = c.request("/lockers")
    assert status == 200
    l1 = re.search(r'data-locker="L1".*?</section>', body, re.S).group(0)
    assert 'class="clock-off"' in l1 and "clock 12 s ahead of the host" in l1
    _, _, api = c.request("/api/state")
    offsets = {r["id"]: r["clock_offset"] for r in json.loads(api)["lockers"]}
    assert offsets["L1"] == 12.4 and offsets["L2"] is None

    store.set_clock_offset(SITE, "L1", -4.0, now)  # within 5 s: no mark
    _, _, body = c.request("/lockers")
    assert "clock-off" not in body
    store.set_clock_offset(SITE, "L1", -9.0, now)
    _, _, body = c.request("/lockers")
    assert "clock 9 s behind the host" in body
    store.set_clock_offset(SITE, "L1", -9.0, now - 3600)  # measured an hour ago: not shown
    _, _, body = c.request("/lockers")
    assert "clock-off" not in body


def test_an_event_with_no_clock_shows_when_it_was_received(dash):
    store = dash.store
    store.ingest(SITE, [("L2", {"seq": 1, "ts": None, "type": "boot", "bay": None})])
    c = Client(dash.url)
    c.login("root", PASSWORDS["root"])
    status, _, body = c.request("/trail?locker=L2")
    assert status == 200, body[:300]
    row = re.search(r'<tr>(?:(?!</tr>).)*data-type="boot"(?:(?!</tr>).)*</tr>', body, re.S)
    row = row.group(0)
    assert "Locker started" in row  # the event in plain words
    assert "(received)" in row
    assert re.search(r"\d\d:\d\d:\d\d \(received\)", row), row
    status, _, csv_text = c.request("/trail.csv?locker=L2")
    assert status == 200
    header, *rows = csv_text.splitlines()
    assert header.startswith("time,locker,bay,event,person_id,name,role,by,reason,seq")
    boot = next(r for r in rows if ",boot," in r).split(",")
    assert boot[0] and boot[header.split(",").index("time_source")] == "received"


def test_pages_list_events_by_receipt_with_a_wrong_clock_beside(dash):
    """A locker whose clock is 3 hours fast does not pin its events above newer ones: the
    lockers page's latest events and the trail list by the time the host received them, with
    the locker's own time beside it when the two differ by more than a minute."""
    from lockerctl.store.tables import events

    store = dash.store
    now = int(time.time())

    def put(locker, seq, kind, ts, received_at, **kw):
        ev = {"seq": seq, "ts": ts, "type": kind, "bay": 1, "person": None, "reason": None}
        store.ingest(SITE, [(locker, {**ev, **kw})])
        with store.engine.begin() as conn:
            conn.execute(
                events.update()
                .where(events.c.locker_id == locker, events.c.seq == seq)
                .values(received_at=received_at)
            )

    put("L2", 1, "deposit", now + 3 * 3600, now - 600, person="P002")  # 3 hours fast
    put("L2", 2, "denied", now + 3 * 3600 + 5, now - 590, reason="contact_hours")
    put("L1", 6, "retrieve", now - 30, now - 30, person="P001")  # right clock, newest
    c = Client(dash.url)
    c.login("root", PASSWORDS["root"])
    body = html.unescape(c.request("/lockers")[2])
    items = re.findall(r'<li data-event="(\w+)" data-locker="(\w+)">(.*?)</li>', body, re.S)
    items = [x for x in items if x[1] == "L2" or x[0] == "retrieve"]  # these three, in order
    assert [(t, lk) for t, lk, _ in items[:3]] == [
        ("retrieve", "L1"), ("denied", "L2"), ("deposit", "L2")
    ]  # fmt: skip
    assert "locker's clock" not in items[0][2]
    assert "(locker's clock: " in items[1][2] and "(locker's clock: " in items[2][2]
    assert "Card refused" in items[1][2]  # plain words, not "denied" / "contact_hours"
    assert "during lessons" in items[1][2] and "contact_hours" not in body
    # the trail: the same order, the same marks
    body = html.unescape(c.request("/trail")[2])
    rows = re.findall(r"<tr>(<td>.*?)</tr>", body, re.S)
    rows = [r for r in rows if "<td>L2</td>" in r or 'data-type="retrieve"' in r]
    firsts = [re.search(r'data-type="(\w+)"', r).group(1) for r in rows[:3]]
    assert firsts == ["retrieve", "denied", "deposit"], firsts
    assert "(locker's clock: " in rows[1] and "(locker's clock: " not in rows[0]
    assert "Card refused" in rows[1] and "during lessons" in rows[1]
