"""The lockers page shows each locker's health and its warnings (docs/fleet.md)."""

from __future__ import annotations

from conftest import SITE, login
from playwright.sync_api import expect


def test_lockers_page_shows_health_and_warnings(dash, page):
    l1 = dash.store.locker(SITE, "L1").state
    dash.store.set_locker_status(
        SITE,
        "L1",
        online=True,
        state=dict(
            l1,
            version="1.4.0",
            uptime_s=7500,
            reset_cause="rollback",
            heap_free=40000,
            heap_low=12000,
            journal_fill=0.62,
            rssi=None,
            clock_offset_s=None,
            update={"offered": None, "progress": None, "failed": "1.5.0"},
        ),
    )
    l2 = dash.store.locker(SITE, "L2").state
    dash.store.set_locker_status(
        SITE,
        "L2",
        online=False,
        state=dict(
            l2,
            version="1.4.0",
            uptime_s=60,
            reset_cause="power_on",
            heap_low=30000,
            journal_fill=0.1,
            update={"offered": "1.5.0", "progress": 0.4, "failed": None},
        ),
    )
    login(page, dash.url, "olive")
    one = page.locator('section[data-locker="L1"]')
    expect(one.locator(".health")).to_contain_text("Firmware 1.4.0")
    expect(one.locator(".health")).to_contain_text("last reset: rollback")
    expect(one.locator(".health")).to_contain_text("up 2 h 5 min")
    assert one.locator(".warnings li").all_inner_texts() == [
        "journal 62% full",
        "heap low-water 11 KB",
        "update 1.5.0 failed",
    ]
    two = page.locator('section[data-locker="L2"]')
    expect(two.locator(".health .offered")).to_have_text("1.5.0 offered, 40% fetched")
    assert two.locator(".warnings").count() == 0
