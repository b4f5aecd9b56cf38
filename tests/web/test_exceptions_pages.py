"""The everyday exceptions' pages in chromium: the office's named release against the real
firmware and broker (search by name, a reason from the list, the locker's answer, exactly one
bay opened), the SLT's exemptions page (a new exemption, the review list, ending one), and the
emergency form's safer defaults (one bay; a whole bank asks a second time)."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import CARDS, login
from harness import wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def deposit(locker, who: str) -> int:
    reply = locker.tap(CARDS[who])
    assert reply["result"] == "granted" and reply["action"] == "deposit", reply
    assert locker.door(reply["bay"], "open") == {"ok": True}
    assert locker.door(reply["bay"], "close") == {"ok": True}
    return reply["bay"]


def test_office_releases_one_named_phone(live, page, shots):
    pia = deposit(live.locker, "pia")
    pat = deposit(live.locker, "pat")
    wait_for(lambda: live.locker.state()["pending"] == 0, timeout=20, what="events stored")
    login(page, live.url, "olive")
    # the grid never names anyone for the office
    assert "Pia" not in page.locator('section[data-locker="L1"]').inner_text()
    page.click("nav a:text('Release a phone')")
    page.fill("#q", "pia")
    page.click("button:text('Search')")
    result = page.locator('li.result[data-person="P001"]')
    expect(result).to_contain_text("Pia Pupil")
    expect(result).to_contain_text("phone in a locker")
    expect(page.locator("li.result")).to_have_count(1)  # names only of those searched for
    result.locator("select").select_option("collected by parent")
    shots(page, "release-search")
    result.locator("button:text('Release this phone')").click()
    page.wait_for_url("**/release/sent?ref=*")
    expect(page.locator("#release-answer")).to_have_text(f"L1 bay {pia} opened", timeout=20000)
    shots(page, "release-answer")
    bays = live.locker.state()["bays"]
    assert [b["bay"] for b in bays if not b["locked"]] == [pia]
    assert bays[pat - 1]["locked"] and bays[pat - 1]["holder"] == "P002"
    assert live.locker.door(pia, "open") == {"ok": True}
    assert live.locker.door(pia, "close") == {"ok": True}
    with live.store() as st:
        acts = [a for a in st.trail_actions("school") if a["action"] == "release"]
        assert acts[0]["actor"] == "web:olive"
        assert acts[0]["detail"]["person"] == "P001"
        assert acts[0]["detail"]["reason"] == "collected by parent"
    # nobody's phone left for Pia: the page says so and sends nothing
    page.goto(live.url + "/release?q=Pia")
    expect(page.locator('li.result[data-person="P001"]')).to_contain_text("no phone in a locker")
    expect(page.locator('li.result[data-person="P001"] button')).to_have_count(0)


def test_slt_records_an_exemption_and_sees_it_due_for_review(dash, page, shots):
    login(page, dash.url, "hana")
    page.click("nav a:text('Exemptions')")
    today = dt.date.today()
    page.fill("#person", "P002")
    page.select_option("#category", "medical")
    page.fill("#window1", "10:00-10:15")
    page.fill("#window2", "12:30-12:45")
    page.fill("#review", today.isoformat())
    page.click("button:text('Record exemption')")
    page.wait_for_url(dash.url + "/exemptions")
    row = page.locator("table.exemptions tr[data-id]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Pat Pupil")
    expect(row).to_contain_text("10:00-10:15,12:30-12:45")
    expect(row).to_contain_text("Hana Head (H001)")  # the `by` by name, not only the id
    expect(page.locator("table.exemptions-due tr[data-id]")).to_have_count(1)
    shots(page, "exemptions")
    acts = dash.actions("exemption_add")
    assert acts and acts[0]["actor"] == "web:hana" and acts[0]["detail"]["by"] == "H001"
    # a window the wrong way round is refused, nothing recorded
    page.fill("#person", "P001")
    page.fill("#window1", "10:15-10:00")
    page.fill("#review", (today + dt.timedelta(days=30)).isoformat())
    page.click("button:text('Record exemption')")
    expect(page.locator("p.error")).to_contain_text("start is not before its end")
    assert len(dash.actions("exemption_add")) == 1
    # ended: off the register (and the lockers' bundles)
    page.click("table.exemptions button:text('End')")
    page.wait_for_url(dash.url + "/exemptions")
    expect(page.locator("table.exemptions tr[data-id]")).to_have_count(0)
    assert dash.actions("exemption_end")


def test_office_cannot_use_the_slt_pages(dash, page):
    login(page, dash.url, "olive")
    assert page.locator("nav a", has_text="Exemptions").count() == 0
    for path in ("/exemptions", "/consents"):
        assert page.request.get(dash.url + path).status == 403, path


def test_the_emergency_form_defaults_to_one_bay_and_a_bank_asks_twice(dash, page):
    login(page, dash.url, "olive")
    page.goto(dash.url + "/open")
    expect(page.locator('input[name="scope"][value="bay"]')).to_be_checked()
    page.check('input[name="scope"][value="locker"]')
    page.select_option("#locker", "L1")
    page.fill("#reason", "fire")
    page.click("button:text('Continue')")
    expect(page.locator("#confirm-q")).to_have_text("Open every occupied bay of L1?")
    # the confirm button alone does not open a bank: its own box must be ticked
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    form = {"csrf": csrf, "scope": "locker", "locker": "L1", "reason": "fire", "confirm": "yes"}
    resp = page.request.post(dash.url + "/open", form=form)
    assert resp.status == 200 and "Tick the box" in resp.text()
    assert dash.sent == []
    page.check("#confirm-bank")
    page.click("button:text('Confirm open')")
    page.wait_for_url("**/open/sent?ref=*")
    assert [locker for locker, _ in dash.sent] == ["L1"]
