"""The dashboard's bounds (issue 14): dates in the years 2000-2100 on the trail, a page past the
end shows the last page, a grant at a local time that does not exist is refused by name, text
with control characters is refused, a timetable's mistakes are shown all at once."""

from __future__ import annotations

import re
import time

from conftest import PASSWORDS, SITE
from test_accounts import Client


def admin(dash) -> Client:
    c = Client(dash.url)
    assert c.login("root", PASSWORDS["root"])[0] == 303
    return c


def test_trail_dates_outside_2000_2100_are_a_400_and_a_huge_page_is_the_last(dash):
    c = admin(dash)
    for query in ("to=9999-12-31", "from=0001-01-01", "from=1999-12-31", "to=2101-01-01"):
        for path in ("/trail", "/trail.csv", "/trail.xlsx"):
            status, _, body = c.request(f"{path}?{query}")
            assert status == 400, (path, query, status)
            assert "2000-2100" in body
    status, _, body = c.request("/trail?to=2100-12-31&from=2000-01-01")
    assert status == 200
    for huge in ("99999999999999999999999", "9" * 5000, "-5", "x"):
        status, _, body = c.request(f"/trail?page={huge}")
        assert status == 200, huge
        assert "Page 1 of 1 (5 events)" in body


def grant_form(c: Client, **values) -> tuple[int, str]:
    token = re.search(r'name="csrf" value="([^"]+)"', c.request("/grants")[2]).group(1)
    form = {"person": "P001", "locker": "", "reason": "trip", "csrf": token, **values}
    status, _, body = c.request("/grants", form)
    return status, body


def test_grant_form_refuses_a_time_that_does_not_exist_and_control_characters(dash):
    c = admin(dash)
    status, body = grant_form(c, **{"from": "2027-03-28T01:30", "until": "2027-03-28T02:00"})
    assert status == 400
    assert "01:30 does not exist on 2027-03-28 (clocks go forward)" in body
    status, body = grant_form(c, **{"from": "9999-12-31T00:00", "until": "9999-12-31T23:00"})
    assert status == 400 and "2000-2100" in body
    status, body = grant_form(
        c, **{"from": "2040-01-01T08:00", "until": "2040-01-01T09:00", "reason": "a\x1b[2Jb"}
    )
    assert status == 400 and "control character (U+001B)" in body
    assert dash.store.grants(SITE, now=int(time.time())) == []
    status, _ = grant_form(c, **{"from": "2040-01-01T08:00", "until": "2040-01-01T09:00"})
    assert status == 303
    assert len(dash.store.grants(SITE, now=int(time.time()))) == 1


def test_open_form_refuses_control_characters_in_the_reason(dash):
    c = admin(dash)
    token = re.search(r'name="csrf" value="([^"]+)"', c.request("/open")[2]).group(1)
    form = {"scope": "bay", "locker": "L1", "bay": "1", "reason": "fire\x00drill", "csrf": token}
    status, _, body = c.request("/open", form)
    assert status == 400 and "control character (U+0000)" in body
    assert dash.sent == []


def test_timetable_page_shows_every_mistake(dash):
    c = admin(dash)
    token = re.search(r'name="csrf" value="([^"]+)"', c.request("/admin/timetable")[2]).group(1)
    text = (
        'timezone = "Europe/London"\nhome_time = "15:00"\ny6_release_minutes = 900\n'
        "uncollected_after_minutes = 99999999999999999999\n"
        'contact = [["08:45", "15:15"]]\nterms = [["2026-09-03", "2026-12-18"]]\n'
    )
    status, _, body = c.request("/admin/timetable", {"toml": text, "csrf": token})
    assert status == 400
    errors = re.search(r'<p class="error" role="alert">(.*?)</p>', body).group(1).split("<br>")
    assert [re.search(r"line (\d)", x).group(1) for x in errors] == ["2", "3", "4"], errors
    assert dash.store.timetable(SITE) is None
