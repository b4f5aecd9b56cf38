"""Live updates are pushed, not polled: in chromium, an event ingested into the store while a
page is open appears on it without a reload, and after loading the page makes one request
(its `EventSource` on /live) and no other, however long it stays open."""

from __future__ import annotations

import time

import pytest
from conftest import SITE, login
from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def watch_requests(page) -> list[str]:
    """The URLs the page requests from now on."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    return seen


def ingest(store, seq: int, type_: str, bay: int, person: str | None = None) -> None:
    ev = {"seq": seq, "ts": int(time.time()), "type": type_, "bay": bay, "person": person}
    store.ingest(SITE, [("L1", {**ev, "by": None, "reason": None})])


def test_an_event_ingested_appears_without_reload_or_polling(dash, page):
    login(page, dash.url, "hana")
    expect(page.locator('section[data-locker="L1"] li[data-bay="2"]')).to_have_attribute(
        "data-status", "free"
    )
    page.wait_for_load_state("networkidle")
    page.evaluate("window.__sameDocument = 1")
    seen = watch_requests(page)
    page.reload()  # from a fresh load: every request the page makes is seen
    page.evaluate("window.__sameDocument = 1")
    expect(page.locator("#lockers[data-updated]")).to_have_count(1)  # the stream is open
    loaded = [u for u in seen if "/static/" not in u and not u.endswith("/lockers")]
    # The locker reports bay 2 occupied (its state) and the deposit (the event).
    state = dash.store.locker(SITE, "L1").state
    state["bays"][1] = {"bay": 2, "locked": True, "door": "closed", "holder": "P002"}
    dash.store.set_locker_status(SITE, "L1", online=True, state=state)
    ingest(dash.store, 6, "deposit", 2, "P002")
    cell = page.locator('section[data-locker="L1"] li[data-bay="2"]')
    expect(cell).to_have_attribute("data-status", "occupied", timeout=20000)
    expect(cell).to_contain_text("Pat Pupil")  # as slt sees it
    first = page.locator("#events li").first
    expect(first).to_have_attribute("data-event", "deposit")
    expect(first).to_contain_text("Pat Pupil")
    assert page.evaluate("window.__sameDocument") == 1  # updated in place, never reloaded
    # Several seconds more (the old page polled every 1.5 s): still no other request.
    page.wait_for_timeout(4000)
    after = [u for u in seen if "/static/" not in u and not u.endswith("/lockers")]
    assert after == loaded, after
    assert len([u for u in after if "/live?" in u]) == 1, after
    assert "part=lockers" in after[0] and "part=events" in after[0]


def test_an_alert_and_its_badge_appear_live(dash, page):
    login(page, dash.url, "olive")
    page.goto(dash.url + "/alerts")
    badge = page.locator("#alert-count")
    before = int(badge.get_attribute("data-count"))
    page.evaluate("window.__sameDocument = 2")
    seen = watch_requests(page)
    expect(page.locator("#alerts[data-updated]")).to_have_count(1)
    ingest(dash.store, 6, "door_left_open", 2)
    row = page.locator("table.alerts.open tr", has_text="L1").filter(has_text="open")
    expect(page.locator("table.alerts.open")).to_contain_text("left open", timeout=20000)
    expect(badge).to_have_attribute("data-count", str(before + 1))
    assert row.count() >= 1
    assert page.evaluate("window.__sameDocument") == 2
    others = [u for u in seen if "/static/" not in u and "/live?" not in u]
    assert others == [] and len(seen) - len(others) <= 1, seen  # pushed on the open stream


def test_an_ended_session_leaves_the_live_page(dash, page):
    login(page, dash.url, "olive")
    expect(page.locator("#lockers[data-updated]")).to_have_count(1)
    from lockerctl.accounts import Accounts

    Accounts(dash.store, SITE).remove_user("olive")  # ends its sessions
    ingest(dash.store, 6, "boot", None)
    page.wait_for_url(dash.url + "/login", timeout=20000)
