"""Names on the grants page, and the two changes that ask first, in chromium: revoking a grant
and removing an account show a question, Cancel changes nothing, and a POST without the
confirmation (a stray click, a form replayed) changes nothing either: the server asks."""

from __future__ import annotations

import time

import pytest
from conftest import SITE, login
from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def csrf_of(page) -> str:
    return page.locator('input[name="csrf"]').first.get_attribute("value")


def test_revoking_a_grant_asks_first_and_shows_names(dash, page, shots):
    now = int(time.time())
    gid = dash.store.add_grant(
        SITE, "P002", now - 60, now + 7200, "H001", "dentist at 14:00", None, actor="test"
    )
    login(page, dash.url, "hana")
    page.goto(dash.url + "/grants")
    row = page.locator("table.grants tbody tr", has_text="dentist")
    expect(row).to_contain_text("Pat Pupil (P002)")
    expect(row).to_contain_text("Hana Head (H001)")
    # a POST without the confirmation only asks
    resp = page.request.post(dash.url + "/grants/revoke", form={"csrf": csrf_of(page), "id": gid})
    assert resp.status == 200 and "Revoke grant" in resp.text()
    assert [g.id for g in dash.store.grants(SITE)] == [gid]
    # the button asks; Cancel leaves the grant
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("#confirm-q")).to_have_text(f"Revoke grant {gid} of Pat Pupil (P002)?")
    shots(page, "grant-revoke-confirm")
    page.click("a:text('Cancel')")
    page.wait_for_url(dash.url + "/grants")
    assert [g.id for g in dash.store.grants(SITE)] == [gid]
    assert not dash.actions("grant_revoke")
    # confirmed: revoked, recorded
    page.locator("table.grants tbody tr", has_text="dentist").get_by_role(
        "button", name="Revoke"
    ).click()
    page.click("button:text('Revoke the grant')")
    expect(page.locator(".flash.ok")).to_contain_text(f"Grant {gid} revoked")
    assert dash.store.grants(SITE) == []
    assert [a["actor"] for a in dash.actions("grant_revoke")] == ["web:hana"]


def test_removing_an_account_asks_first(dash, page):
    from lockerctl.accounts import Accounts

    acc = Accounts(dash.store, SITE)
    login(page, dash.url, "root")
    page.goto(dash.url + "/admin/users")
    resp = page.request.post(
        dash.url + "/admin/users/remove", form={"csrf": csrf_of(page), "username": "olive"}
    )
    assert resp.status == 200 and "Remove the account olive" in resp.text()
    assert acc.user("olive") is not None
    page.locator("table.users tr", has_text="olive").get_by_role("button", name="Remove").click()
    expect(page.locator("#confirm-q")).to_have_text("Remove the account olive (office)?")
    page.click("a:text('Cancel')")
    page.wait_for_url(dash.url + "/admin/users")
    assert acc.user("olive") is not None
    page.locator("table.users tr", has_text="olive").get_by_role("button", name="Remove").click()
    page.click("button:text('Remove the account')")
    expect(page.locator(".flash.ok")).to_contain_text("Account olive removed")
    assert acc.user("olive") is None
    assert [a["detail"]["username"] for a in dash.actions("user_remove")] == ["olive"]
    # an account that is not there: an error, nothing asked
    resp = page.request.post(
        dash.url + "/admin/users/remove",
        form={"csrf": csrf_of(page), "username": "nobody", "confirm": "yes"},
    )
    assert resp.ok and "no account" in resp.text()
