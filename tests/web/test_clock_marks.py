"""The dashboard and a locker's clock (issue 11): a locker whose clock is more than 5 s from the
host's is marked on the lockers page (and its offset is in /api/state); events journaled while a
locker's clock was unknown show the host's receipt time, marked as such, never an empty time.
Over real HTTP against a dashboard on a real store."""

from __future__ import annotations

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
    row = re.search(r"<tr>(?:(?!</tr>).)*>boot<(?:(?!</tr>).)*</tr>", body, re.S).group(0)
    assert "(received)" in row
    assert re.search(r"\d\d:\d\d:\d\d \(received\)", row), row
    status, _, csv_text = c.request("/trail.csv?locker=L2")
    assert status == 200
    header, *rows = csv_text.splitlines()
    assert header.startswith("time,locker,bay,event,person_id,name,role,by,reason,seq")
    boot = next(r for r in rows if ",boot," in r).split(",")
    assert boot[0] and boot[header.split(",").index("time_source")] == "received"
