"""The office's Alerts page and SLT's daily review in chromium, on a store filled directly:
urgent alerts above routine ones (even a newer routine one), no policy flags, "a pupil" for the
office, the receipt time with the locker's own time beside it when its clock is off; the kind
filter; acknowledging every open alert of a kind with a note; the review's flags by pupil,
overrides and emergency opens, for SLT only; an open the locker refused, in plain words."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest
from conftest import PASSWORDS, SITE, login
from playwright.sync_api import expect
from test_accounts import Client

pytestmark = pytest.mark.slow


def more_events(store) -> int:
    """Adds L1's events 6..10 after the fixture's five; returns now."""
    now = int(time.time())

    def ev(seq, ts, kind, bay=None, person=None, by=None, reason=None):
        return ("L1", {"seq": seq, "ts": ts, "type": kind, "bay": bay, "person": person,
                       "by": by, "reason": reason})  # fmt: skip

    store.ingest(
        SITE,
        [
            ev(6, now - 300, "override", bay=4, person="S001", by="H001"),
            ev(7, now - 240, "emergency_open", bay=2, by="H001"),
            ev(8, now - 7200, "door_left_open", bay=1),  # the locker's clock is 2 h behind
            ev(9, now - 20, "door_forced", bay=2),
            ev(10, now - 10, "uncollected", bay=1, person="P001"),  # the newest: routine
        ],
    )
    return now


def test_alerts_urgent_first_filter_and_ack_all_of_a_kind(dash, page, shots):
    more_events(dash.store)
    login(page, dash.url, "olive")
    page.goto(dash.url + "/alerts")
    rows = page.locator("table.alerts.open tbody tr")
    expect(rows.first).to_have_class("urgent")
    severities = [rows.nth(i).get_attribute("class") for i in range(rows.count())]
    kinds = [rows.nth(i).get_attribute("data-kind") for i in range(rows.count())]
    assert severities == sorted(severities, key=lambda s: s != "urgent"), severities
    assert severities[-1] == "routine" and kinds[-1] == "uncollected"  # newest, yet last
    assert kinds.count("door_forced") == 2 and "policy_flag" not in kinds
    main = page.locator("main").inner_text()
    assert "Policy flag" not in main and "phone_not_allowed" not in main
    expect(page.locator('tr[data-kind="uncollected"]')).to_contain_text("a pupil")
    expect(page.locator('tr[data-kind="uncollected"]')).not_to_contain_text("Pia")
    expect(page.locator('tr[data-kind="door_left_open"]')).to_contain_text("(locker's clock: ")
    mine = next(r.id for r in dash.store.events(SITE) if r.type == "door_forced" and r.bay == 2)
    expect(page.locator(f"#alert-event-{mine}")).not_to_contain_text("locker's")  # within 60 s
    shots(page, "alerts-urgent-first")

    # the filter: one kind
    page.select_option("#f-kind", "door_forced")
    page.click("form.filters button:text('Filter')")
    page.wait_for_url("**/alerts?kind=door_forced*")
    filtered = page.locator("table.alerts.open tbody tr")
    expect(filtered).to_have_count(2)
    assert {filtered.nth(i).get_attribute("data-kind") for i in range(2)} == {"door_forced"}

    # every open alert of a kind, with a note
    page.goto(dash.url + "/alerts")
    page.select_option("#ack-kind", "door_forced")
    page.fill("#ack-kind-note", "drill at 10:00")
    page.click("button:text('Acknowledge all of this kind')")
    expect(page.locator(".flash.ok")).to_contain_text("Acknowledged 2 alerts: Door forced open")
    expect(page.locator('table.alerts.open tr[data-kind="door_forced"]')).to_have_count(0)
    expect(page.locator('table.alerts.open tr[data-kind="emergency_open"]')).to_have_count(1)
    page.click("details summary:text('Acknowledged')")
    done = page.locator('table.alerts.done tr[data-kind="door_forced"]')
    expect(done).to_have_count(2)
    expect(done.first).to_contain_text("by olive")
    expect(done.first).to_contain_text("drill at 10:00")
    acks = [a for a in dash.actions("alert_ack") if a["detail"]["kind"] == "door_forced"]
    assert len(acks) == 2 and {a["detail"]["note"] for a in acks} == {"drill at 10:00"}
    assert {a["actor"] for a in acks} == {"web:olive"}


def test_daily_review_for_slt(dash, page, shots):
    now = more_events(dash.store)
    day = dt.datetime.fromtimestamp(now - 300, ZoneInfo(dash.store.timezone(SITE))).date()
    office = Client(dash.url)
    assert office.login("olive", PASSWORDS["olive"])[0] == 303
    assert office.request("/review")[0] == 403  # it names pupils: SLT and admins only
    login(page, dash.url, "hana")
    page.goto(dash.url + f"/review?day={day.isoformat()}")
    flags = page.locator("table.review.flags tbody tr")
    expect(flags).to_have_count(1)
    expect(flags).to_contain_text("Pia Pupil")
    expect(flags).to_contain_text("Year 6")
    overrides = page.locator("table.review.overrides tbody tr")
    expect(overrides).to_have_count(1)
    expect(overrides).to_contain_text("Sam Staff")
    expect(overrides).to_contain_text("Hana Head")
    emergency = page.locator("table.review.emergency tbody tr")
    expect(emergency).to_have_count(1)
    expect(emergency).to_contain_text("L1")
    shots(page, "review")
    # the day before has none of it
    page.click("a:text('the day before')")
    expect(page.locator("table.review.flags")).to_contain_text("No policy flags.")


def test_an_open_the_locker_refused_says_why_in_words(dash):
    office = Client(dash.url)
    assert office.login("olive", PASSWORDS["olive"])[0] == 303
    form = {"csrf": office.csrf("/open"), "scope": "bay", "locker": "L1", "bay": "1",
            "reason": "collected by parent", "confirm": "yes"}  # fmt: skip
    status, headers, _ = office.request("/open", form)
    assert status == 303 and "/open/sent?ref=" in headers["location"]
    dash.store.ingest(
        SITE,
        [("L1", {"seq": 6, "ts": int(time.time()), "type": "cmd_rejected", "bay": None,
                 "person": None, "by": None, "reason": "expired"})],
    )  # fmt: skip
    _, _, body = office.request(headers["location"])
    assert "L1 rejected the command: the command had expired" in body
