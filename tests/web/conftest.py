"""Fixtures for the dashboard's tests: Debian's chromium driven by Playwright (never a downloaded
browser), a dashboard on a store filled directly (fast, no broker), and the whole live stack:
real mosquitto, the real firmware on the MicroPython unix port, `lockerctl serve --http`.

Screenshots go under the test run's temporary directory (`shots` fixture); with
LOCKER_UPDATE_SCREENSHOTS=1 they are also copied to docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from harness import ROOT, Broker, Serve, SimLocker, free_port, lockerctl, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SITE = "school"

CARDS = {
    "pia": "04A1B2C3",
    "pat": "04A2B2C3",
    "sam": "04B1B2C3",
    "hana": "04C1B2C3",
    "hana_fob": "04C2B2C3",
    "olive": "04D1B2C3",
}
ROSTER = f"""person_id,name,role,year,walk_home,card_uid
P001,Pia Pupil,pupil,6,yes,{CARDS["pia"]}
P002,Pat Pupil,pupil,4,no,{CARDS["pat"]}
S001,Sam Staff,staff,,no,{CARDS["sam"]}
H001,Hana Head,staff,,no,{CARDS["hana"]}
H001,Hana Head,slt,,no,{CARDS["hana_fob"]}
O001,Olive Office,office,,no,{CARDS["olive"]}
"""
# (username, role, person, password)
ACCOUNTS = [
    ("olive", "office", "O001", "office-pass-1"),
    ("hana", "slt", "H001", "slt-pass-123"),
    ("root", "admin", "H001", "admin-pass-1"),
]
PASSWORDS = {u: pw for u, _, _, pw in ACCOUNTS}


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no {CHROMIUM} (tools/install-system-deps installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1180, "height": 820})
    ctx.set_default_timeout(15000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture(scope="session")
def shots(tmp_path_factory):
    """shots(page, name): a full-page screenshot in the run's output (and docs/ on request)."""
    out = tmp_path_factory.mktemp("screenshots")
    docs = ROOT / "docs" / "screenshots"
    update = os.environ.get("LOCKER_UPDATE_SCREENSHOTS") == "1"

    def shoot(page, name: str) -> Path:
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if update:
            docs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, docs / path.name)
        return path

    shoot.dir = out
    return shoot


def login(page, base: str, username: str, password: str | None = None) -> None:
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", password or PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/lockers")


# -- a dashboard on a store filled directly -------------------------------------------------------


class StoreDashboard:
    def __init__(self, store, dashboard, sent):
        self.store = store
        self.dashboard = dashboard
        self.url = dashboard.url
        self.sent = sent  # (locker, payload) the open page published

    def actions(self, action: str | None = None) -> list[dict]:
        acts = self.store.trail_actions(SITE, limit=1000)
        return [a for a in acts if action is None or a.get("action") == action]


@pytest.fixture
def filled_store(tmp_path):
    from lockerctl.roster import parse_roster
    from lockerctl.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    store.replace_roster(SITE, parse_roster(ROSTER))
    store.add_locker(SITE, "L1", 4, b"\x01" * 32, "pw", control_port=7101)
    store.add_locker(SITE, "L2", 4, b"\x02" * 32, "pw", control_port=7102)
    bays = [
        {"bay": 1, "locked": True, "door": "closed", "holder": "P001"},
        {"bay": 2, "locked": True, "door": "closed", "holder": None},
        {"bay": 3, "locked": False, "door": "open", "holder": None},
        {"bay": 4, "locked": True, "door": "closed", "holder": "S001"},
    ]
    store.set_locker_status(
        SITE,
        "L1",
        online=True,
        state={
            "locker": "L1",
            "clock_ok": True,
            "online": True,
            "pending": 0,
            "config": 3,
            "bays": bays,
        },
    )
    store.set_locker_status(
        SITE,
        "L2",
        online=False,
        state={
            "locker": "L2",
            "clock_ok": False,
            "online": False,
            "pending": 2,
            "config": 3,
            "bays": [dict(b, holder=None, locked=True, door="closed") for b in bays],
        },
    )
    now = int(time.time())
    evs = [
        (
            "L1",
            {
                "seq": i + 1,
                "ts": now - 3600 + i * 60,
                "type": t,
                "bay": bay,
                "person": person,
                "by": None,
                "reason": None,
            },
        )
        for i, (t, bay, person) in enumerate(
            [
                ("boot", None, None),
                ("deposit", 1, "P001"),
                ("deposit", 4, "S001"),
                ("door_forced", 3, None),
                ("policy_flag", 1, "P001"),
            ]
        )
    ]
    store.ingest(SITE, evs)
    from lockerctl.accounts import Accounts

    acc = Accounts(store, SITE)
    for username, role, person, password in ACCOUNTS:
        acc.add_user(username, role, password, person)
    yield store
    store.close()


@pytest.fixture
def dash(filled_store):
    from lockerctl.web import serve_store

    sent = []
    d = serve_store(
        filled_store,
        SITE,
        "127.0.0.1",
        0,
        publish=lambda locker, payload: sent.append((locker, payload)),
    )
    yield StoreDashboard(filled_store, d, sent)
    d.stop()


# -- the live stack -------------------------------------------------------------------------------


class Live:
    def __init__(self, db_url, broker, locker, serve, url):
        self.db_url, self.broker, self.locker, self.serve, self.url = (
            db_url,
            broker,
            locker,
            serve,
            url,
        )

    def store(self):
        from lockerctl.store import Store

        return Store.open(self.db_url)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """mosquitto + one simulated locker (4 bays, clock set) + `lockerctl serve --http`, with the
    roster and three dashboard accounts; shared by the tests of a module."""
    tmp = tmp_path_factory.mktemp("live")
    db_url = f"sqlite:///{tmp / 'lockers.db'}"
    broker = Broker(tmp).start()
    locker = serve = None
    try:
        (tmp / "roster.csv").write_text(ROSTER)
        lockerctl("roster", "import", tmp / "roster.csv", db=db_url)
        device = json.loads(
            lockerctl(
                "locker", "add", "L1", "--bays", 4, "--broker", broker.address, db=db_url
            ).stdout
        )
        device["data_dir"] = str(tmp / "data-L1")
        for username, role, person, password in ACCOUNTS:
            lockerctl(
                "user",
                "add",
                username,
                "--role",
                role,
                "--person",
                person,
                "--password-stdin",
                db=db_url,
                input=password + "\n",
            )
        locker = SimLocker(tmp, "L1", broker=broker, device=device).start()
        locker.clock(int(time.time()))
        port = free_port()
        serve = Serve(tmp, db_url, broker, http_port=port).start()
        wait_for(
            lambda: locker.state()["config"] is not None,
            timeout=30,
            what="the locker's configuration",
        )
        yield Live(db_url, broker, locker, serve, f"http://127.0.0.1:{port}")
    finally:
        if serve is not None:
            serve.kill()
        if locker is not None:
            locker.kill()
        broker.kill()
