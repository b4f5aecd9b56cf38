"""`/healthz` and `/metrics`: values read back with prometheus_client's own text parser, first on
a dashboard over a store filled directly (exact values), then on the live stack (real `lockerctl
serve` with its ingest process, mosquitto, the simulated locker tapping cards).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from conftest import CARDS, ROSTER, SITE
from harness import Broker, Serve, SimLocker, free_port, lockerctl, wait_for
from prometheus_client.parser import text_string_to_metric_families


def fetch(url: str, headers: dict | None = None) -> tuple[int, dict, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def scrape(base: str, token: str | None = None) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, head, body = fetch(base + "/metrics", headers)
    assert status == 200, body
    assert head["Content-Type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels):
    return samples.get((name, frozenset(labels.items())))


# -- exact values on a store filled directly ------------------------------------------------------


def test_metrics_values_from_the_store(dash):
    store = dash.store
    m = scrape(dash.url)
    assert value(m, "classlocker_lockers_registered") == 2
    assert value(m, "classlocker_lockers_online") == 1
    assert value(m, "classlocker_locker_online", locker="L1") == 1
    assert value(m, "classlocker_locker_online", locker="L2") == 0
    assert value(m, "classlocker_locker_pending_events", locker="L1") == 0
    assert value(m, "classlocker_locker_pending_events", locker="L2") == 2
    assert value(m, "classlocker_events_ingested_total") == 0  # counted from the start
    assert value(m, "classlocker_ingest_latency_seconds_count") == 0
    # The fixture's last event (L1) was committed now; L2 has none.
    assert 0 <= value(m, "classlocker_locker_last_event_age_seconds", locker="L1") < 120
    assert value(m, "classlocker_locker_last_event_age_seconds", locker="L2") is None
    assert value(m, "classlocker_alerts_open", kind="door_forced") == 1
    # policy flags are not alerts (issue 16): they are on SLT's daily review
    assert value(m, "classlocker_alerts_open", kind="policy_flag") is None
    assert value(m, "classlocker_alerts_open", kind="clock") == 1  # L2's clock is not trusted
    assert value(m, "classlocker_alerts_open", kind="uncollected") == 0
    assert value(m, "classlocker_email_queue_length") == 0

    now = int(time.time())
    store.ingest(
        SITE,
        [
            ("L2", {"seq": 1, "ts": now - 100, "type": "boot", "bay": None, "person": None}),
            ("L2", {"seq": 2, "ts": now - 3, "type": "deposit", "bay": 2, "person": "P002"}),
            ("L2", {"seq": 3, "ts": None, "type": "retrieve", "bay": 2, "person": "P002"}),
        ],
    )
    from lockerctl.accounts import Accounts

    Accounts(store, SITE).acknowledge("event:4", "root")  # the door_forced alert
    m = scrape(dash.url)
    assert value(m, "classlocker_events_ingested_total") == 3
    # Latency: only the two events with a locker time; 3-ish s and 100-ish s.
    assert value(m, "classlocker_ingest_latency_seconds_count") == 2
    assert value(m, "classlocker_ingest_latency_seconds_bucket", le="2.0") == 0
    assert value(m, "classlocker_ingest_latency_seconds_bucket", le="60.0") == 1
    assert value(m, "classlocker_ingest_latency_seconds_bucket", le="300.0") == 2
    assert value(m, "classlocker_ingest_latency_seconds_bucket", le="+Inf") == 2
    assert 103 <= value(m, "classlocker_ingest_latency_seconds_sum") < 200
    assert 0 <= value(m, "classlocker_locker_last_event_age_seconds", locker="L2") < 120
    assert value(m, "classlocker_alerts_open", kind="door_forced") == 0
    # Scraping again counts nothing twice.
    assert value(scrape(dash.url), "classlocker_events_ingested_total") == 3


def test_mail_queue_metrics_and_the_note_on_every_page(dash):
    """The mail queue's figures from its table; while the mail server is not taking messages,
    every page (not only Alerts) says so."""
    from conftest import PASSWORDS
    from lockerctl.store import alerts as store_alerts
    from test_accounts import Client

    store = dash.store
    m = scrape(dash.url)
    for name in ("classlocker_email_queue_length", "classlocker_emails_sent_total",
                 "classlocker_email_send_failures_total", "classlocker_email_failing",
                 "classlocker_email_oldest_waiting_seconds"):  # fmt: skip
        assert value(m, name) == 0, name
    now = int(time.time())

    def queue(n: int) -> int:
        message = {"fold_key": f"door_forced|L1|{n}", "alert": f"event:{n}",
                   "kind": "door_forced", "locker_id": "L1", "bay": n, "subject": f"bay {n}",
                   "body": "b", "recipients": "office@school.example"}  # fmt: skip
        with store._write() as conn:
            return store_alerts.enqueue(conn, SITE, message, now - 30)

    first, second, third = queue(1), queue(2), queue(3)
    store_alerts.mark_failed(store, first, "(535, b'5.7.8 Authentication credentials invalid')", 0)
    store_alerts.mark_sent(store, first, now)  # sent at its second try
    store_alerts.mark_sent(store, second, now)
    office = Client(dash.url)
    assert office.login("olive", PASSWORDS["olive"])[0] == 303
    assert "mail-trouble" not in office.request("/lockers")[2]  # waiting, not failing
    store_alerts.mark_failed(store, third, "(535, b'5.7.8 Authentication credentials invalid')", 0)
    store_alerts.mark_failed(store, third, "(535, b'5.7.8 Authentication credentials invalid')", 0)
    m = scrape(dash.url)
    assert value(m, "classlocker_email_queue_length") == 1
    assert value(m, "classlocker_emails_sent_total") == 2
    assert value(m, "classlocker_email_send_failures_total") == 3
    assert value(m, "classlocker_email_failing") == 1
    assert 30 <= value(m, "classlocker_email_oldest_waiting_seconds") < 300
    status, _, body = office.request("/lockers")
    assert status == 200
    assert 'id="mail-trouble"' in body and "Authentication credentials invalid" in body
    assert 'id="mail-trouble"' in office.request("/release")[2]
    assert 'id="mail-trouble"' not in office.request("/alerts")[2]  # it has its own note
    assert 'id="mail-note"' in office.request("/alerts")[2]
    store_alerts.mark_sent(store, third, now)
    assert value(scrape(dash.url), "classlocker_email_failing") == 0
    assert "mail-trouble" not in office.request("/lockers")[2]


def test_healthz_says_which_part_is_down(filled_store):
    from lockerctl.web import serve_store

    # A dashboard with no broker connection at all: the store is fine, the broker is not.
    d = serve_store(filled_store, SITE, "127.0.0.1", 0, publish=None)
    try:
        status, head, body = fetch(d.url + "/healthz")
        assert status == 503
        assert head["Content-Type"] == "application/json"
        assert json.loads(body) == {
            "status": "unavailable",
            "store": "ok",
            "broker": "not connected",
        }
    finally:
        d.stop()


def test_metrics_only_for_this_machine_without_a_token(dash):
    from starlette.testclient import TestClient

    # The dashboard's own application, called with the client address a far client would have
    # (a loopback socket cannot have one).
    def status(client: str) -> int:
        with TestClient(dash.dashboard.asgi, client=(client, 40000)) as c:
            return c.get("/metrics").status_code

    assert status("192.0.2.7") == 403
    assert status("::ffff:127.0.0.1") == 200


# -- the live stack -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    db_url = f"sqlite:///{tmp / 'lockers.db'}"
    broker = Broker(tmp).start()
    token = "metrics-token-0123456789abcdef"
    (tmp / "metrics.token").write_text(token + "\n")
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
        locker = SimLocker(tmp, "L1", broker=broker, device=device).start()
        locker.clock(int(time.time()))
        port = free_port()
        serve = Serve(
            tmp,
            db_url,
            broker,
            http_port=port,
            extra=["--metrics-token-file", str(tmp / "metrics.token")],
        ).start()
        wait_for(lambda: locker.state()["config"] is not None, timeout=30, what="the config")
        yield db_url, broker, locker, f"http://127.0.0.1:{port}", token
    finally:
        if serve is not None:
            serve.kill()
        if locker is not None:
            locker.kill()
        broker.kill()


def stored_events(db_url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("select count(*) from events")).scalar()
    finally:
        engine.dispose()


def test_live_metrics_follow_the_locker(stack):
    db_url, broker, locker, base, token = stack
    status, head, _ = fetch(base + "/metrics")
    assert status == 401 and head["WWW-Authenticate"].startswith("Bearer")
    assert fetch(base + "/metrics", {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401

    wait_for(
        lambda: value(scrape(base, token), "classlocker_lockers_online") == 1,
        timeout=20,
        what="the locker online in the metrics",
    )
    m = scrape(base, token)
    assert value(m, "classlocker_locker_online", locker="L1") == 1
    assert value(m, "classlocker_broker_connected") == 1
    counted0, stored0 = value(m, "classlocker_events_ingested_total"), stored_events(db_url)
    latency0 = value(m, "classlocker_ingest_latency_seconds_count")

    assert locker.tap(CARDS["pia"])  # a deposit
    assert locker.tap(CARDS["pat"])  # another

    def caught_up():
        stored = stored_events(db_url)
        counted = value(scrape(base, token), "classlocker_events_ingested_total")
        return stored >= stored0 + 2 and counted - counted0 == stored - stored0

    wait_for(caught_up, timeout=20, what="the two deposits counted")
    m = scrape(base, token)
    new = value(m, "classlocker_events_ingested_total") - counted0
    assert new >= 2
    # The locker's clock is set: every new event has a latency.
    assert value(m, "classlocker_ingest_latency_seconds_count") - latency0 == new
    assert 0 <= value(m, "classlocker_locker_last_event_age_seconds", locker="L1") < 60

    # Pending: what the locker itself reports (0 once the host has acknowledged everything).
    wait_for(
        lambda: (
            value(scrape(base, token), "classlocker_locker_pending_events", locker="L1")
            == locker.state()["pending"]
        ),
        timeout=20,
        what="pending in the metrics to match the locker's",
    )


def test_healthz_follows_the_broker(stack):
    db_url, broker, locker, base, token = stack
    status, _, body = fetch(base + "/healthz")  # no token, no sign-in
    assert status == 200
    assert json.loads(body) == {"status": "ok", "store": "ok", "broker": "ok"}
    broker.kill()
    wait_for(lambda: fetch(base + "/healthz")[0] == 503, timeout=20, what="healthz 503")
    assert json.loads(fetch(base + "/healthz")[2]) == {
        "status": "unavailable",
        "store": "ok",
        "broker": "not connected",
    }
    assert value(scrape(base, token), "classlocker_broker_connected") == 0


# -- PostgreSQL -----------------------------------------------------------------------------------


def test_metrics_and_sso_accounts_on_postgresql(postgres_url):
    import sqlalchemy as sa
    from lockerctl.accounts import Accounts
    from lockerctl.roster import parse_roster
    from lockerctl.store import Store
    from lockerctl.web import serve_store

    store = Store.open(postgres_url)
    with store.engine.begin() as conn:  # start from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    store.close()
    store = Store.open(postgres_url)
    try:
        store.replace_roster(SITE, parse_roster(ROSTER))
        store.add_locker(SITE, "L1", 4, b"\x01" * 32, "pw")
        store.set_locker_status(SITE, "L1", online=True, state={"pending": 5, "bays": []})
        now = int(time.time())
        store.ingest(
            SITE,
            [("L1", {"seq": 1, "ts": now - 40, "type": "boot", "bay": None, "person": None})],
        )
        accounts = Accounts(store, SITE)
        accounts.add_sso_user("Head@School.example", "slt")
        assert accounts.sso_user("HEAD@school.EXAMPLE").username == "head@school.example"
        d = serve_store(store, SITE, "127.0.0.1", 0, publish=None)
        try:
            store.ingest(
                SITE,
                [
                    ("L1", {"seq": 2, "ts": now - 1000, "type": "boot", "bay": None}),
                    ("L1", {"seq": 3, "ts": now - 100, "type": "boot", "bay": None}),
                ],
            )
            m = scrape(d.url)
        finally:
            d.stop()
        assert value(m, "classlocker_lockers_online") == 1
        assert value(m, "classlocker_locker_pending_events", locker="L1") == 5
        assert value(m, "classlocker_events_ingested_total") == 2
        assert value(m, "classlocker_ingest_latency_seconds_bucket", le="60.0") == 0
        assert value(m, "classlocker_ingest_latency_seconds_bucket", le="300.0") == 1
        assert value(m, "classlocker_ingest_latency_seconds_bucket", le="3600.0") == 2
        assert 0 <= value(m, "classlocker_locker_last_event_age_seconds", locker="L1") < 120
    finally:
        store.close()
