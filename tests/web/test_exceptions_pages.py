"""The everyday exceptions' pages in chromium: the office's named release against the real
firmware and broker (search by name, a reason from the list, the locker's answer, exactly one
bay opened), the SLT's exemptions page (a new exemption, the review list, ending one), and the
emergency form's safer defaults (one bay; a whole bank asks a second time)."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from conftest import CARDS, ROSTER, SITE, login
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
    # ending asks first: a POST without the confirmation, or Cancel, changes nothing
    eid = acts[0]["detail"]["id"]
    resp = page.request.post(dash.url + "/exemptions/end", form={"csrf": _csrf(page), "id": eid})
    assert resp.status == 200 and f"End exemption {eid} of Pat Pupil (P002)?" in resp.text()
    page.click("table.exemptions button:text('End')")
    expect(page.locator("#confirm-q")).to_have_text(f"End exemption {eid} of Pat Pupil (P002)?")
    page.click("a:text('Cancel')")
    page.wait_for_url(dash.url + "/exemptions")
    expect(page.locator("table.exemptions tr[data-id]")).to_have_count(1)
    assert not dash.actions("exemption_end")
    # ended: off the register (and the lockers' bundles)
    page.click("table.exemptions button:text('End')")
    page.click("button:text('End the exemption')")
    page.wait_for_url(dash.url + "/exemptions")
    expect(page.locator("table.exemptions tr[data-id]")).to_have_count(0)
    assert [a["actor"] for a in dash.actions("exemption_end")] == ["web:hana"]


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


def _csrf(page) -> str:
    return page.locator('input[name="csrf"]').first.get_attribute("value")


@pytest.fixture
def other_page(browser):
    """other_page(): a page in a context of its own (another account signed in)."""
    made = []

    def make():
        made.append(browser.new_context())
        made[-1].set_default_timeout(15000)
        return made[-1].new_page()

    yield make
    for c in made:
        c.close()


def test_only_a_named_approver_records_a_consent(dash, page, other_page, shots):
    """The consents page: an SLT account whose person no admin has named sees the consents and
    no form (a POST anyway: 403); the admin names the Headteacher there (only SLT members are
    offered; anyone else sent anyway: 400); she then records a consent as herself."""
    from lockerctl.accounts import Accounts
    from lockerctl.roster import parse_roster

    # Sam is made an SLT member with an account; nobody has been named an approver yet
    dash.store.replace_roster(SITE, parse_roster(ROSTER + "S001,Sam Staff,slt,,no,04B9B2C3\n"))
    Accounts(dash.store, SITE).add_user("sam", "slt", "sam-pass-123", "S001")
    login(page, dash.url, "hana")
    page.click("nav a:text('Consents')")
    expect(page.locator("#no-approver")).to_contain_text("lockerctl consent approver add")
    expect(page.locator("#new-consent")).to_have_count(0)
    form = {"csrf": _csrf(page), "person": "P002", "reason": "parent asked"}
    resp = page.request.post(dash.url + "/consents", form=form)
    assert resp.status == 403 and "may record a keep-safe consent" in resp.text()
    # naming approvers is for admins only
    resp = page.request.post(dash.url + "/consents/approvers", form={**form, "person": "H001"})
    assert resp.status == 403
    assert dash.actions("consent_add") == [] and dash.actions("consent_approver_add") == []

    admin = other_page()
    login(admin, dash.url, "root")
    admin.goto(dash.url + "/consents")
    # only SLT members are offered; a pupil or an unknown id sent anyway is refused
    offered = admin.locator("#approver option").evaluate_all("os => os.map(o => o.value)")
    assert offered == ["H001", "S001"]
    for bad, words in (("P001", "not an SLT member"), ("NOPE", "not on the roster")):
        resp = admin.request.post(
            dash.url + "/consents/approvers", form={"csrf": _csrf(admin), "person": bad}
        )
        assert resp.status == 400 and words in resp.text(), bad
    admin.select_option("#approver", "H001")
    admin.click("button:text('Name approver')")
    admin.wait_for_url(dash.url + "/consents")
    expect(admin.locator('table.approvers tr[data-person="H001"]')).to_contain_text("Hana Head")
    assert [a["actor"] for a in dash.actions("consent_approver_add")] == ["web:root"]

    # Hana, now an approver, records a consent as herself
    page.reload()
    expect(page.locator("#approved-by")).to_contain_text("Hana Head (H001)")
    page.fill("#person", "P002")
    page.fill("#creason", "parent asked")
    shots(page, "consents")
    page.click("button:text('Record consent')")
    page.wait_for_url(dash.url + "/consents")
    expect(page.locator("table.consents tr[data-id]")).to_contain_text("Pat Pupil")
    (act,) = dash.actions("consent_add")
    assert act["actor"] == "web:hana" and act["detail"]["by"] == "H001"

    # Sam, SLT but not named, sees the consents and cannot add one
    sam = other_page()
    login(sam, dash.url, "sam", "sam-pass-123")
    sam.goto(dash.url + "/consents")
    expect(sam.locator("table.consents tr[data-id]")).to_have_count(1)
    expect(sam.locator("#not-approver")).to_contain_text("S001 is not one of them")
    expect(sam.locator("#new-consent")).to_have_count(0)
    expect(sam.locator("table.approvers button")).to_have_count(0)
    resp = sam.request.post(dash.url + "/consents", form={"csrf": _csrf(sam), "person": "P001"})
    assert resp.status == 403 and len(dash.actions("consent_add")) == 1

    # removed: Hana's consent stands, she may not add another
    admin.reload()
    resp = admin.request.post(
        dash.url + "/consents/approvers/remove", form={"csrf": _csrf(admin), "person": "S001"}
    )
    assert resp.status == 400 and "is not an approver" in resp.text()
    admin.click("button[aria-label='Remove H001 from the approvers']")
    admin.wait_for_url(dash.url + "/consents")
    expect(admin.locator("table.approvers tr[data-person]")).to_have_count(0)
    assert [a["actor"] for a in dash.actions("consent_approver_remove")] == ["web:root"]
    resp = page.request.post(dash.url + "/consents", form={"csrf": _csrf(page), "person": "P001"})
    assert resp.status == 403
    page.reload()
    expect(page.locator("table.consents tr[data-id]")).to_have_count(1)

    # ending the consent asks first; without the confirmation nothing changes
    resp = page.request.post(
        dash.url + "/consents/end", form={"csrf": _csrf(page), "person": "P002"}
    )
    assert resp.status == 200 and "End the keep-safe consent of Pat Pupil (P002)?" in resp.text()
    assert dash.actions("consent_end") == []
    page.click("button[aria-label='End the consent of P002']")
    expect(page.locator("#confirm-q")).to_have_text(
        "End the keep-safe consent of Pat Pupil (P002)?"
    )
    page.click("button:text('End the consent')")
    page.wait_for_url(dash.url + "/consents")
    expect(page.locator("table.consents tr[data-id]")).to_have_count(0)
    assert [a["actor"] for a in dash.actions("consent_end")] == ["web:hana"]


def test_the_trail_page_shows_host_actions_and_downloads_them(dash, page):
    login(page, dash.url, "hana")
    page.goto(dash.url + "/exemptions")
    page.fill("#person", "P002")
    page.select_option("#category", "send")
    page.fill("#window1", "10:00-10:15")
    page.fill("#review", dt.date.today().isoformat())
    page.click("button:text('Record exemption')")
    page.wait_for_url(dash.url + "/exemptions")
    page.goto(dash.url + "/trail")
    assert page.locator("table.trail-actions").count() == 0  # only when asked for
    page.check("#tactions")
    page.click("button:text('Search')")
    row = page.locator("table.trail-actions tbody tr").filter(has_text="exemption_add")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("P002")
    expect(row).to_contain_text("Pat Pupil")
    expect(row).to_contain_text("web:hana")
    # a person's search keeps the actions about them, and only those
    page.fill("#tperson", "P001")
    page.click("button:text('Search')")
    expect(page.locator("table.trail-actions")).to_contain_text("Nothing to show.")
    # actions belong to no locker
    page.goto(dash.url + "/trail?actions=1&locker=L1")
    expect(page.locator("main")).to_contain_text("Host actions belong to no locker")

    page.context.clear_cookies()
    login(page, dash.url, "root")
    page.goto(dash.url + "/trail?actions=1&person=P002")
    with page.expect_download() as info:
        page.click("a:text('CSV')")
    text = open(info.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    acts = [r for r in rows if r["event"] == "exemption_add"]
    assert len(acts) == 1 and acts[0]["locker"] == "" and acts[0]["by"] == "web:hana"
    downloads = dash.actions("export")
    assert downloads and downloads[0]["detail"]["actions"] is True
