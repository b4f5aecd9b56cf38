"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright).

Live tests run the whole stack (real mosquitto, the real firmware on the MicroPython unix port,
`lockerctl serve --http`): a deposit at the locker appears without a reload, an office open with
a reason unlocks the bay in the simulation and its outcome shows, grants reach the locker, the
trail downloads as CSV and Excel. The other tests drive a dashboard on a store filled directly.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from zoneinfo import ZoneInfo

import pytest
from conftest import CARDS, SITE, login
from harness import wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def bay_cell(page, locker: str, bay: int):
    return page.locator(f'section[data-locker="{locker}"] li[data-bay="{bay}"]')


def deposit(locker, who: str) -> int:
    reply = locker.tap(CARDS[who])
    assert reply["result"] == "granted" and reply["action"] == "deposit", reply
    assert locker.door(reply["bay"], "open") == {"ok": True}
    assert locker.door(reply["bay"], "close") == {"ok": True}
    return reply["bay"]


# -- live: the whole stack ------------------------------------------------------------------------


def test_office_watches_a_deposit_live_and_opens_the_bay(live, page, shots):
    login(page, live.url, "olive")
    expect(page.locator('section[data-locker="L1"] .status')).to_have_text("online")
    page.evaluate("window.__sameDocument = 42")

    bay = deposit(live.locker, "pia")
    cell = bay_cell(page, "L1", bay)
    expect(cell).to_have_attribute("data-status", "occupied", timeout=20000)
    expect(page.locator('#events li[data-event="deposit"]').first).to_be_visible()
    assert page.evaluate("window.__sameDocument") == 42  # updated in place, never reloaded
    # office staff see that a bay is occupied, not whose phone it is
    assert "Pia" not in page.locator('section[data-locker="L1"]').inner_text()
    shots(page, "lockers-office")

    cell.locator("a").click()  # an occupied bay leads to the open form, filled in
    expect(page.locator('input[name="scope"][value="bay"]')).to_be_checked()
    expect(page.locator("#bay")).to_have_value(str(bay))
    expect(page.locator("#locker")).to_have_value("L1")
    page.fill("#reason", "fire drill: phones out")
    page.click("button:text('Continue')")
    expect(page.locator("#confirm-q")).to_have_text(f"Open bay {bay} of L1?")
    assert live.locker.state()["bays"][bay - 1]["locked"]  # nothing happens before confirming
    shots(page, "open-confirm")
    page.click("button:text('Confirm open')")
    page.wait_for_url("**/open/sent?ref=*")

    wait_for(
        lambda: not live.locker.state()["bays"][bay - 1]["locked"],
        timeout=20,
        what="the bay unlocked in the simulation",
    )
    expect(page.locator(".outcome.opened")).to_contain_text(f"bay {bay} opened", timeout=20000)
    shots(page, "open-outcome")
    live.locker.door(bay, "open")  # the phone is handed back
    live.locker.door(bay, "close")

    with live.store() as st:
        opens = [a for a in st.trail_actions(SITE, 200) if a.get("action") == "open"]
    assert opens and opens[0]["actor"] == "web:olive"
    assert opens[0]["detail"]["reason"] == "fire drill: phones out"
    assert opens[0]["detail"]["by"] == "O001"


def test_alert_appears_live_and_is_acknowledged_by_name(live, page, shots):
    login(page, live.url, "olive")
    page.goto(live.url + "/alerts")
    page.evaluate("window.__sameDocument = 7")
    free = [b["bay"] for b in live.locker.state()["bays"] if b["holder"] is None]
    live.locker.door(free[-1], "open")  # forced: the bay is locked
    row = (
        page.locator("table.alerts.open tr", has_text="Door forced open")
        .filter(has_text="L1")
        .first
    )
    expect(row).to_be_visible(timeout=20000)
    assert page.evaluate("window.__sameDocument") == 7
    shots(page, "alerts")
    row.get_by_role("button", name="Acknowledge").click()
    expect(page.locator(".flash.ok")).to_contain_text("Acknowledged")
    page.click("summary")
    expect(page.locator("table.alerts.done")).to_contain_text("by olive")
    live.locker.door(free[-1], "close")
    with live.store() as st:
        acks = [a for a in st.trail_actions(SITE, 200) if a.get("action") == "alert_ack"]
    assert acks and acks[0]["actor"] == "web:olive"


def test_slt_sees_holder_names_and_grants_reach_the_locker(live, page, shots):
    bay = deposit(live.locker, "sam")
    login(page, live.url, "hana")
    expect(bay_cell(page, "L1", bay)).to_contain_text("Sam Staff", timeout=20000)

    with live.store() as st:
        before = st.config_version(SITE)
    page.goto(live.url + "/grants")
    zone = ZoneInfo("Europe/London")
    until = (dt.datetime.now(zone) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    page.fill("#person", "P002")
    page.fill("#until", until)
    page.fill("#greason", "dentist at 14:00")
    page.click("button:text('Grant')")
    row = page.locator("table.grants tbody tr", has_text="P002")
    expect(row).to_contain_text("dentist at 14:00")
    shots(page, "grants")
    with live.store() as st:
        after = st.config_version(SITE)
        grants = st.grants(SITE)
        actions = st.trail_actions(SITE, 200)
    assert after > before
    assert [(g.person_id, g.by) for g in grants] == [("P002", "H001")]
    assert any(a.get("action") == "grant" and a["actor"] == "web:hana" for a in actions)
    wait_for(
        lambda: (live.locker.state()["config"] or 0) >= after,
        timeout=20,
        what="the new configuration at the locker",
    )

    expect(row).to_contain_text("Pat Pupil (P002)")  # names, for SLT
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("#confirm-q")).to_contain_text("Revoke grant")
    page.click("button:text('Revoke the grant')")
    expect(page.locator(".flash.ok")).to_contain_text("revoked")
    expect(page.locator("table.grants tbody tr", has_text="P002")).to_have_count(0)
    with live.store() as st:
        assert st.grants(SITE) == []


def test_office_cannot_grant(live, page):
    login(page, live.url, "olive")
    assert page.locator("nav a", has_text="Grants").count() == 0
    assert page.locator("nav a", has_text="Trail").count() == 0
    resp = page.goto(live.url + "/grants")
    assert resp.status == 403
    page.goto(live.url + "/open")
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    resp = page.request.post(
        live.url + "/grants",
        form={
            "csrf": csrf,
            "person": "P002",
            "from": "2030-01-01T10:00",
            "until": "2030-01-01T11:00",
            "reason": "sneaky",
        },
    )
    assert resp.status == 403
    for path in ("/trail", "/trail.csv", "/admin/roster", "/admin/users"):
        assert page.request.get(live.url + path).status == 403, path
    with live.store() as st:
        assert not any(g.reason == "sneaky" for g in st.grants(SITE, include_ended=True))


def test_anonymous_visitor_only_sees_the_login_page(live, page, shots):
    for path in (
        "/",
        "/lockers",
        "/alerts",
        "/open",
        "/grants",
        "/trail",
        "/admin/users",
        "/admin/device.json?locker=L1",
        "/trail.csv",
    ):
        page.goto(live.url + path)
        assert page.url == live.url + "/login", path
        assert page.locator("form input[name=username]").count() == 1
        assert page.locator("form input[name=password][type=password]").count() == 1
        assert page.locator("nav").count() == 0
    shots(page, "login")
    assert page.request.get(live.url + "/api/lockers").status == 401
    assert page.request.get(live.url + "/api/state").status == 401
    # a wrong password keeps the visitor on the login page
    page.fill("#username", "olive")
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("Wrong username or password")
    assert page.url.endswith("/login")


def test_admin_downloads_the_trail_as_csv_and_excel(live, page, shots):
    deposit(live.locker, "pat")
    with live.store() as st:
        wait_for(
            lambda: st.count_events(SITE, types=["deposit"], person="P002") >= 1,
            timeout=20,
            what="the deposit stored",
        )
    login(page, live.url, "root")
    page.goto(live.url + "/trail")
    page.fill("#tperson", "P002")
    page.click("button:text('Search')")
    expect(page.locator("table.trail tbody")).to_contain_text("deposit")
    expect(page.locator("table.trail tbody")).to_contain_text("Pat Pupil")
    shots(page, "trail")

    with page.expect_download() as info:
        page.click("a:text('CSV')")
    rows = list(csv.DictReader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    assert list(rows[0])[:10] == [
        "time",
        "locker",
        "bay",
        "event",
        "person_id",
        "name",
        "role",
        "by",
        "reason",
        "seq",
    ]
    assert {r["person_id"] for r in rows if r["person_id"]} == {"P002"}
    assert any(r["event"] == "deposit" and r["name"] == "Pat Pupil" for r in rows)

    with page.expect_download() as info:
        page.click("a:text('Excel')")
    from openpyxl import load_workbook

    ws = load_workbook(io.BytesIO(info.value.path().read_bytes()), read_only=True).active
    sheet = [list(r) for r in ws.iter_rows(values_only=True)]
    assert sheet[0][:4] == ["time", "locker", "bay", "event"]
    assert len(sheet) - 1 == len(rows)
    assert any(r[3] == "deposit" and r[5] == "Pat Pupil" for r in sheet[1:])
    with live.store() as st:
        exports = [a for a in st.trail_actions(SITE, 200) if a.get("action") == "export"]
    assert [a["detail"]["format"] for a in exports[:2]] == ["xlsx", "csv"]
    assert exports[0]["actor"] == "web:root"

    for path, name in (
        ("/lockers", "lockers-admin-view"),
        ("/admin/roster", "admin-roster"),
        ("/admin/timetable", "admin-timetable"),
        ("/admin/lockers", "admin-lockers"),
        ("/admin/users", "admin-users"),
    ):
        page.goto(live.url + path)
        shots(page, name)


# -- a dashboard on a store filled directly -------------------------------------------------------


def test_each_role_sees_its_pages(dash, page):
    expected = {
        "olive": ["Lockers", "Alerts", "Release a phone", "Emergency open", "Visitors"],
        "hana": [
            "Lockers",
            "Alerts",
            "Release a phone",
            "Emergency open",
            "Visitors",
            "Daily review",
            "Report",
            "Grants",
            "Consents",
            "Exemptions",
            "Trail",
        ],
        "root": [
            "Lockers",
            "Alerts",
            "Release a phone",
            "Emergency open",
            "Visitors",
            "Daily review",
            "Report",
            "Grants",
            "Consents",
            "Exemptions",
            "Trail",
            "Roster",
            "Timetable",
            "Lockers setup",
            "Users",
        ],
    }
    for username, links in expected.items():
        page.context.clear_cookies()
        login(page, dash.url, username)
        names = [
            t.strip().rstrip("0123456789").strip() for t in page.locator("nav a").all_inner_texts()
        ]
        assert names == links, username
        # the bay grid: states in words, holders only for slt and admin
        l1 = page.locator('section[data-locker="L1"]')
        assert [c.get_attribute("data-status") for c in l1.locator("li.bay").all()] == [
            "occupied",
            "free",
            "door-open",
            "occupied",
        ]
        expect(page.locator('section[data-locker="L2"] .status')).to_have_text("offline")
        assert ("Pia Pupil" in l1.inner_text()) == (username != "olive")
    logins = [a for a in dash.actions("login")]
    assert {a["actor"] for a in logins} == {"web:olive", "web:hana", "web:root"}


def test_open_needs_a_reason_and_a_confirmation(dash, page):
    login(page, dash.url, "olive")
    page.goto(dash.url + "/open?locker=L2")
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    resp = page.request.post(
        dash.url + "/open",
        form={"csrf": csrf, "scope": "locker", "locker": "L2", "reason": "  ", "confirm": "yes"},
    )
    assert resp.status == 400 and "a reason is required" in resp.text()
    assert dash.sent == []
    page.check('input[name="scope"][value="staff"]')
    page.fill("#reason", "evacuation")
    page.click("button:text('Continue')")
    expect(page.locator("#confirm-q")).to_have_text("Open every staff bay of the school?")
    assert dash.sent == []
    page.click("a:text('Cancel')")
    page.wait_for_url(dash.url + "/open")
    assert dash.sent == []
    page.check('input[name="scope"][value="staff"]')
    page.fill("#reason", "evacuation")
    page.click("button:text('Continue')")
    page.click("button:text('Confirm open')")
    page.wait_for_url("**/open/sent?ref=*")
    expect(page.locator(".waiting")).to_contain_text("L1, L2")
    assert sorted(locker for locker, _ in dash.sent) == ["L1", "L2"]
    details = [a["detail"] for a in dash.actions("open")]
    assert sorted((d["locker"], d["bay"], d["reason"]) for d in details) == [
        ("L1", "staff", "evacuation"),
        ("L2", "staff", "evacuation"),
    ]


def test_roster_upload_shows_each_bad_line(dash, page, tmp_path, shots):
    login(page, dash.url, "root")
    page.goto(dash.url + "/admin/roster")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "person_id,name,role,year,walk_home,card_uid\n"
        "P010,Ok Pupil,pupil,3,no,04AA0001\n"
        "P011,Bad Year,pupil,9,no,04AA0002\n"
        "P012,Bad Card,staff,,no,XYZ\n"
    )
    page.set_input_files("#roster", str(bad))
    page.click("button:text('Upload')")
    problems = page.locator("table.problems tbody tr")
    expect(problems).to_have_count(2)
    assert problems.nth(0).inner_text().startswith("3")
    assert "year" in problems.nth(0).inner_text()
    assert problems.nth(1).inner_text().startswith("4")
    assert "not hexadecimal" in problems.nth(1).inner_text()
    shots(page, "admin-roster-errors")
    assert dash.store.person(SITE, "P010") is None  # nothing applied

    good = tmp_path / "good.csv"
    good.write_text(
        "person_id,name,role,year,walk_home,card_uid\n"
        "P010,Ok Pupil,pupil,3,no,04AA0001\nS001,Sam Staff,staff,,no,04B1B2C3\n"
    )
    page.set_input_files("#roster", str(good))
    page.click("button:text('Upload')")
    expect(page.locator(".flash.ok")).to_contain_text("2 people, 2 cards")
    assert dash.store.person(SITE, "P010") is not None
    assert dash.actions("roster_import")[0]["actor"] == "web:root"


def test_timetable_is_validated_before_it_is_saved(dash, page):
    login(page, dash.url, "root")
    page.goto(dash.url + "/admin/timetable")
    page.fill(
        "#toml", 'timezone = "Mars/Olympus"\nhome_time = "15:15"\ncontact = []\nterms = []\n'
    )
    page.click("button:text('Check and save')")
    expect(page.locator(".error")).to_contain_text("timezone")
    assert dash.store.timetable(SITE) is None
    text = (
        'timezone = "Europe/London"\nhome_time = "15:15"\n'
        'contact = [["08:45", "12:00"], ["13:00", "15:15"]]\n'
        'terms = [["2026-09-03", "2026-12-18"]]\n'
    )
    page.fill("#toml", text)
    page.click("button:text('Check and save')")
    expect(page.locator(".flash.ok")).to_contain_text("Timetable saved")
    assert dash.store.timetable(SITE).source == text


def test_admin_adds_a_locker_and_downloads_its_device_json(dash, page):
    import json

    login(page, dash.url, "root")
    page.goto(dash.url + "/admin/lockers")
    page.fill("#lid", "Hall-2")
    page.fill("#lbays", "12")
    page.click("button:text('Add')")
    expect(page.locator(".flash.ok")).to_contain_text("Hall-2 added")
    with page.expect_download() as info:
        page.locator("table.lockers-admin tr", has_text="Hall-2").locator("a").click()
    device = json.loads(open(info.value.path()).read())
    row = dash.store.locker(SITE, "Hall-2")
    assert device["locker_id"] == "Hall-2" and device["bays"] == 12
    assert bytes.fromhex(device["secret"]) == bytes(row.secret)
    assert device["broker"]["password"] == row.broker_password
    page.fill("#lid", "Hall-2")
    page.click("button:text('Add')")
    expect(page.locator(".error")).to_contain_text("already exists")
    assert [a["detail"]["locker"] for a in dash.actions("device_json")] == ["Hall-2"]


def test_admin_adds_an_account_that_can_sign_in(dash, page, browser):
    login(page, dash.url, "root")
    page.goto(dash.url + "/admin/users")
    page.fill("#uname", "bea")
    page.select_option("#urole", "office")
    page.fill("#uperson", "S001")
    page.fill("#upw", "bea-password")
    page.click("button:text('Add account')")
    expect(page.locator("table.users")).to_contain_text("bea")
    ctx = browser.new_context()
    try:
        other = ctx.new_page()
        login(other, dash.url, "bea", "bea-password")
        assert other.locator("nav a", has_text="Users").count() == 0
    finally:
        ctx.close()
    assert dash.actions("user_add")[0]["actor"] == "web:root"


def test_trail_is_paginated_and_filtered(dash, page):
    now = int(time.time())
    dash.store.ingest(
        SITE,
        [
            (
                "L2",
                {
                    "seq": i,
                    "ts": now - 10000 + i,
                    "type": "deposit",
                    "bay": 1,
                    "person": "P002",
                    "by": None,
                    "reason": None,
                },
            )
            for i in range(1, 121)
        ],
    )
    login(page, dash.url, "hana")
    page.goto(dash.url + "/trail?locker=L2")
    expect(page.locator(".pager")).to_contain_text("Page 1 of 3 (120 events)")
    assert page.locator("table.trail tbody tr").count() == 50
    assert page.locator("a:text('CSV')").count() == 0  # exports are for admins
    page.click("a[rel=next]")
    expect(page.locator(".pager")).to_contain_text("Page 2 of 3")
    page.click("a[rel=next]")
    expect(page.locator(".pager")).to_contain_text("Page 3 of 3")  # the click has navigated
    expect(page.locator("table.trail tbody tr")).to_have_count(20)
    page.goto(dash.url + "/trail?person=S001")
    expect(page.locator(".pager")).to_contain_text("(1 events)")


def test_usable_on_a_tablet_and_by_keyboard(dash, browser):
    ctx = browser.new_context(viewport={"width": 768, "height": 1024}, has_touch=True)
    try:
        page = ctx.new_page()
        page.goto(dash.url + "/login")
        assert page.evaluate("document.activeElement.id") == "username"  # autofocus
        page.keyboard.press("Shift+Tab")  # the skip link comes first
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Tab")
        page.keyboard.type("olive")
        page.keyboard.press("Tab")
        page.keyboard.type("office-pass-1")
        page.keyboard.press("Enter")
        page.wait_for_url(dash.url + "/lockers")
        for path in ("/lockers", "/alerts", "/open"):
            page.goto(dash.url + path)
            assert page.evaluate(
                "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
            ), path
            # every form control has a label
            unlabeled = page.evaluate("""() => [...document.querySelectorAll(
                'input:not([type=hidden]), select, textarea')].filter(el =>
                !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).length""")
            assert unlabeled == 0, path
    finally:
        ctx.close()


def test_offline_locker_is_an_alert_in_school_hours_only(filled_store):
    from lockerctl import alerts
    from lockerctl.timetable import parse_timetable

    text = (
        'timezone = "Europe/London"\nhome_time = "15:15"\n'
        'contact = [["08:45", "12:00"], ["13:00", "15:15"]]\n'
        'terms = [["2026-09-03", "2026-12-18"]]\nclosed = ["2026-11-02"]\n'
    )
    filled_store.set_timetable(SITE, text, parse_timetable(text, "t"), "Europe/London")
    zone = ZoneInfo("Europe/London")
    # L2 has been offline since before the days below (an alert after 5 minutes offline)
    from lockerctl.store.tables import lockers

    with filled_store.engine.begin() as conn:
        since = dt.datetime(2026, 11, 1, tzinfo=zone).timestamp()
        conn.execute(lockers.update().where(lockers.c.id == "L2").values(last_seen=since))

    def keys(when: dt.datetime):
        found, _ = alerts.compute(filled_store, SITE, {}, now=when.timestamp())
        # (the timetable set here makes L1, which reports config 3, behind: `config:L1` once
        # two minutes have passed; this test is about the clock and offline conditions)
        return {a.key for a in found if a.key.split(":")[0] in ("offline", "clock")}

    thursday = dt.datetime(2026, 11, 5, 10, 0, tzinfo=zone)
    assert keys(thursday) == {"offline:L2", "clock:L2"}  # L1 is online
    assert keys(thursday.replace(hour=16)) == {"clock:L2"}  # after home time
    assert keys(thursday.replace(day=7)) == {"clock:L2"}  # Saturday
    assert keys(dt.datetime(2026, 11, 2, 10, 0, tzinfo=zone)) == {"clock:L2"}  # INSET day
    assert keys(dt.datetime(2026, 12, 21, 10, 0, tzinfo=zone)) == {"clock:L2"}  # holiday
    # an acknowledged condition that has cleared is forgotten, so a recurrence shows again
    _, stale = alerts.compute(
        filled_store, SITE, {"offline:L2": ("olive", 1)}, now=thursday.replace(hour=16).timestamp()
    )
    assert stale == ["offline:L2"]
