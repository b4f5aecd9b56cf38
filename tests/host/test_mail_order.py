"""The alert mailer with several ingest workers on PostgreSQL: ids are taken when a worker
inserts its events and committed when it gets the chain, so an event can commit after one with a
higher id. The mailer must still send it (a cursor on the highest id mailed would skip it)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import sqlalchemy as sa
from lockerctl.mailer import AlertMailer, MailSettings
from lockerctl.store import Store
from lockerctl.store import alerts as store_alerts
from lockerctl.store import ingest as store_ingest
from lockerctl.store.ingest import ingest_shared

SITE = "school"


@pytest.fixture
def pg_url(postgres_url):
    url = os.environ.get("LOCKER_TEST_POSTGRES") or postgres_url
    s = Store.open(url)
    with s.engine.begin() as conn:  # start from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    s.close()
    Store.open(url).close()
    return url


def ev(seq: int, kind: str, bay: int | None = None) -> dict:
    return {"seq": seq, "ts": int(time.time()), "type": kind, "bay": bay, "person": None,
            "by": None, "reason": None}  # fmt: skip


def test_an_alert_committed_after_a_higher_id_is_still_mailed(pg_url, monkeypatch):
    store = Store.open(pg_url)
    settings = MailSettings("127.0.0.1", 1, ["office@school.example"], "lockers@school.example")
    mailer = AlertMailer(store, SITE, settings)
    ingest_shared(store, SITE, [("L3", ev(1, "boot"))])  # the site's row exists
    assert mailer.scan(time.time()) == 0  # its first look: nothing is news yet

    real_chain = store_ingest._chain
    holding, release = threading.Event(), threading.Event()

    def chain_after_a_pause(conn):
        # the slow worker stops between its two parts: its event has an id, not yet committed
        if threading.current_thread().name == "slow-worker":
            holding.set()
            assert release.wait(60)
        return real_chain(conn)

    monkeypatch.setattr(store_ingest, "_chain", chain_after_a_pause)
    errors: list = []

    def slow_worker():
        s = Store.open(pg_url)
        try:
            ingest_shared(s, SITE, [("L1", ev(1, "door_forced", bay=2))])
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            s.close()

    t = threading.Thread(target=slow_worker, name="slow-worker")
    t.start()
    try:
        assert holding.wait(30), "the slow worker never reached its second part"
        ingest_shared(store, SITE, [("L2", ev(1, "door_forced", bay=1))])  # a higher id, first
        assert mailer.scan(time.time()) == 1  # L2's
    finally:
        release.set()
        t.join(60)
    assert not errors, errors
    ids = {r.locker_id: r.id for r in store.events(SITE)}
    assert ids["L1"] < ids["L2"]  # the case itself: committed out of id order
    assert mailer.scan(time.time()) == 1  # L1's, not skipped
    assert mailer.scan(time.time()) == 0  # and neither sent twice
    out = store_alerts.outbox(store, SITE)
    assert sorted((m.locker_id, m.bay, m.kind) for m in out) == [
        ("L1", 2, "door_forced"),
        ("L2", 1, "door_forced"),
    ]
    store.close()
