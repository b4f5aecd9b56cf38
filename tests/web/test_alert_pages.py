"""The alerts page's filters and acknowledge-all-of-a-kind with a note, and SLT's review and
report pages, over HTTP on a dashboard with a store filled directly."""

from __future__ import annotations

from conftest import PASSWORDS
from test_accounts import Client


def test_alert_filters_ack_of_a_kind_and_slt_pages(dash):
    admin, office = Client(dash.url), Client(dash.url)
    assert admin.login("root", PASSWORDS["root"])[0] == 303
    assert office.login("olive", PASSWORDS["olive"])[0] == 303
    status, _, body = office.request("/alerts")
    assert status == 200 and "Door forced open" in body
    assert "Policy flag" not in body and "phone_not_allowed" not in body
    assert "(holder)" not in body
    assert office.request("/alerts?kind=bogus")[0] == 400
    status, _, body = office.request("/alerts?kind=uncollected")
    assert status == 200 and "Door forced open" not in body.split("Needs attention")[1]
    csrf = office.csrf("/alerts")
    status, _, _ = office.request(
        "/alerts/ack-kind", {"csrf": csrf, "kind": "door_forced", "note": "drill"}
    )
    assert status == 303
    acks = [a for a in dash.actions("alert_ack") if a["detail"].get("kind") == "door_forced"]
    assert acks and all(a["detail"]["note"] == "drill" for a in acks)
    for path in ("/review", "/report", "/report.csv"):
        assert admin.request(path)[0] == 200, path
        assert office.request(path)[0] == 403, path
    status, _, body = admin.request("/report")
    assert "<svg" in body and "Phones deposited per day" in body
