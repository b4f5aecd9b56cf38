"""The dashboard's JSON API (`/api/v1/`) with per-account API tokens, over real HTTP against a
dashboard on a real store: tokens made on the page and with `lockerctl token add`, used,
revoked; the role rules of the pages (office 403 on the trail and grants), 401 for a bad or
revoked token; the OpenAPI document; a browser session's writes need its CSRF token."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import sqlalchemy as sa
from conftest import PASSWORDS, SITE
from harness import lockerctl
from test_accounts import Client


def call(base: str, path: str, token: str | None = None, method: str = "GET", body=None):
    """(status, JSON or text) of one API call."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    text = raw.decode()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def cli_token(dash, username: str) -> str:
    out = lockerctl("token", "add", username, "--label", "tests", db=str(dash.store.engine.url))
    token = out.stdout.strip()
    assert token.startswith("clt_") and "shown once" in out.stderr
    return token


def page_token(dash, username: str) -> str:
    c = Client(dash.url)
    assert c.login(username, PASSWORDS[username])[0] == 303
    csrf = c.csrf("/account/tokens")
    status, _, body = c.request("/account/tokens", {"csrf": csrf, "label": "wall display"})
    assert status == 200
    return re.search(r'<code id="new-token">([^<]+)</code>', body).group(1)


def test_a_token_made_on_the_page_reads_the_lockers_with_its_role(dash):
    admin = page_token(dash, "root")
    status, lockers = call(dash.url, "/api/v1/lockers", admin)
    assert status == 200
    l1 = next(x for x in lockers if x["id"] == "L1")
    assert l1["online"] is True
    assert [b["holder"] for b in l1["bays"]] == ["P001", None, None, "S001"]  # names: admin
    assert call(dash.url, "/api/v1/me", admin) == (
        200,
        {"username": "root", "role": "admin", "person_id": "H001"},
    )
    # the same reads for office, holders masked as on the page
    office = cli_token(dash, "olive")
    _, lockers = call(dash.url, "/api/v1/lockers", office)
    l1 = next(x for x in lockers if x["id"] == "L1")
    assert [b["holder"] for b in l1["bays"]] == ["occupied", None, None, "occupied"]
    status, one = call(dash.url, "/api/v1/lockers/L2", office)
    assert status == 200 and one["id"] == "L2" and one["clock_ok"] is False
    assert call(dash.url, "/api/v1/lockers/L9", office)[0] == 404
    status, alerts = call(dash.url, "/api/v1/alerts", office)
    assert status == 200
    assert any(a["kind"] == "door_forced" and a["locker"] == "L1" for a in alerts)
    # making a token is in the trail; the store holds its hash, never the token
    made = dash.actions("api_token_add")
    assert {a["detail"]["username"] for a in made} == {"root", "olive"}
    with dash.store.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.text("select * from api_tokens")).all()]
    assert stored and not any(admin in map(str, row) or office in map(str, row) for row in stored)


def test_wrong_role_is_403_and_a_bad_or_revoked_token_401(dash):
    office = cli_token(dash, "olive")
    for path in ("/api/v1/trail", "/api/v1/grants", "/api/v1/events"):
        status, body = call(dash.url, path, office)
        assert status == 403, path
        assert "office" in body["error"]
    status, body = call(dash.url, "/api/v1/lockers", office[:-2] + "xx")
    assert status == 401 and body == {"error": "bad or revoked API token"}
    assert call(dash.url, "/api/v1/lockers")[0] == 401
    assert call(dash.url, "/api/v1/lockers", "not-a-token")[0] == 401
    # revoked with the command: refused at once
    listing = lockerctl("token", "list", "olive", db=str(dash.store.engine.url)).stdout
    token_id = re.search(r"^(\d+)\s+olive\s+tests", listing, re.M).group(1)
    lockerctl("token", "revoke", token_id, db=str(dash.store.engine.url))
    assert call(dash.url, "/api/v1/lockers", office)[0] == 401
    assert dash.actions("api_token_revoke")[0]["detail"]["token"] == int(token_id)
    # an office account cannot revoke another account's token on the page
    admin = page_token(dash, "root")
    c = Client(dash.url)
    assert c.login("olive", PASSWORDS["olive"])[0] == 303
    csrf = c.csrf("/account/tokens")
    admin_id = next(t for t in _tokens(dash) if t[1] == "root")[0]
    c.request("/account/tokens/revoke", {"csrf": csrf, "id": str(admin_id)})
    assert call(dash.url, "/api/v1/lockers", admin)[0] == 200
    # and the account holder can
    c = Client(dash.url)
    assert c.login("root", PASSWORDS["root"])[0] == 303
    csrf = c.csrf("/account/tokens")
    status, _, _ = c.request("/account/tokens/revoke", {"csrf": csrf, "id": str(admin_id)})
    assert status == 303
    assert call(dash.url, "/api/v1/lockers", admin)[0] == 401


def _tokens(dash) -> list[tuple]:
    with dash.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("select id, username from api_tokens"))]


def test_the_trail_pages_and_grants_through_the_api(dash):
    slt = cli_token(dash, "hana")
    status, page = call(dash.url, "/api/v1/trail?page=1", slt)
    assert status == 200 and page["total"] == 5 and page["pages"] == 1
    assert [e["type"] for e in page["events"]][0] == "policy_flag"  # newest first
    assert page["events"][0]["name"] == "Pia Pupil"
    assert call(dash.url, "/api/v1/trail?from=1999-01-01", slt)[0] == 400
    status, after = call(dash.url, f"/api/v1/events?after={page['events'][1]['id']}", slt)
    assert status == 200 and [e["type"] for e in after] == ["policy_flag"]
    grant = {
        "person": "P002",
        "from": "2030-01-01T10:00",
        "until": "2030-01-01T11:00",
        "reason": "dentist",
    }
    status, made = call(dash.url, "/api/v1/grants", slt, "POST", grant)
    assert status == 201 and made["person_id"] == "P002" and made["by"] == "H001"
    assert [g.person_id for g in dash.store.grants(SITE)] == ["P002"]
    assert any(a["actor"] == "web:hana" for a in dash.actions("grant"))
    bad = dict(grant, person="NOPE")
    status, body = call(dash.url, "/api/v1/grants", slt, "POST", bad)
    assert status == 400 and "not on the roster" in body["error"]
    status, _ = call(dash.url, f"/api/v1/grants/{made['id']}", slt, "DELETE")
    assert status == 204 and dash.store.grants(SITE) == []


def test_an_open_through_the_api_is_signed_sent_and_recorded(dash):
    office = cli_token(dash, "olive")
    body = {"scope": "bay", "locker": "L1", "bay": 1, "reason": "fire drill"}
    status, sent = call(dash.url, "/api/v1/open", office, "POST", body)
    assert status == 202, sent
    assert sent["what"] == "bay 1 of L1" and sent["sent"][0]["locker"] == "L1"
    assert [locker for locker, _ in dash.sent] == ["L1"]
    opens = dash.actions("open")
    assert opens[0]["actor"] == "web:olive" and opens[0]["detail"]["by"] == "O001"
    status, outcome = call(dash.url, f"/api/v1/open/{sent['ref']}", office)
    assert status == 200 and outcome == {"answers": [], "waiting": ["L1"]}
    status, body = call(dash.url, "/api/v1/open", office, "POST", dict(body, reason=""))
    assert status == 400 and "reason" in body["error"]
    assert call(dash.url, "/api/v1/open", office, "POST", {"scope": "nope"})[0] == 422


def test_a_browser_session_writes_only_with_its_csrf_token(dash):
    c = Client(dash.url)
    assert c.login("olive", PASSWORDS["olive"])[0] == 303
    csrf = c.csrf("/lockers")
    body = json.dumps({"scope": "bay", "locker": "L1", "bay": 1, "reason": "drill"}).encode()
    for headers, status in (({}, 403), ({"X-CSRF-Token": csrf}, 202)):
        req = urllib.request.Request(
            dash.url + "/api/v1/open",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            got = c.opener.open(req).status
        except urllib.error.HTTPError as err:
            got = err.code
        assert got == status, headers
    assert len(dash.sent) == 1
    assert c.request("/api/v1/lockers")[0] == 200  # reads need no header


def test_the_openapi_document_is_served(dash):
    token = cli_token(dash, "olive")
    status, spec = call(dash.url, "/api/openapi.json", token)
    assert status == 200 and spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in ("/api/v1/lockers", "/api/v1/trail", "/api/v1/grants", "/api/v1/open"):
        assert path in paths, path
    assert "/lockers" not in paths and "/login" not in paths  # the pages are not the API
    assert call(dash.url, "/api/openapi.json")[0] == 401
    c = Client(dash.url)
    assert c.login("olive", PASSWORDS["olive"])[0] == 303
    status, _, page = c.request("/api/docs")
    assert status == 200 and "/api/v1/trail" in page and "/api/openapi.json" in page
    assert "<script src=" in page and "http" not in page.split("<script src=")[1][:10]
