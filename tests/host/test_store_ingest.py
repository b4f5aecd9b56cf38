"""`store_ingest.ingest_shared`, the ingest of one of several workers: on its own it does what
`Store.ingest_journals` does (the one-event model of test_ingest_batch); three workers at once on
PostgreSQL, each with its share of the lockers' messages and resends crossing between them, store
every event exactly once, keep the chain intact and end with every journal's true watermark."""

import os
import random
import threading

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lockerctl.store import Store
from lockerctl.store.ingest import ingest_shared
from test_ingest_batch import LOCKERS, Model, ev, item


def acks_by_locker(result) -> dict:
    return {locker: ack for (locker, _), ack in result.acks.items()}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(item, max_size=40), min_size=1, max_size=8))
def test_one_worker_matches_the_one_event_model(tmp_path_factory, batches):
    s = Store.open(f"sqlite:///{tmp_path_factory.mktemp('db') / 'lockers.db'}")
    model = Model()
    try:
        for batch in batches:
            assert acks_by_locker(ingest_shared(s, "school", batch)) == model.ingest(batch)
        assert s.duplicates("school") == model.dups
        for locker in LOCKERS:
            got = [r.seq for r in s.events("school", locker=locker)]
            assert sorted(got) == sorted(model.stored.get(locker, ()))
            assert s.ack_seq("school", locker) == model.acks.get(locker, 0)
        assert s.verify_trail()[0] == sum(len(v) for v in model.stored.values())
    finally:
        s.close()


def test_a_conflict_and_a_seq_too_far_ahead_are_kept_aside(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    ingest_shared(s, "school", [("L1", ev(1)), ("L1", ev(2))])
    other = dict(ev(2), bay=8 if ev(2)["bay"] != 8 else 7)
    r = ingest_shared(s, "school", [("L1", other), ("L1", ev(3)), ("L1", ev(90))], max_ahead=50)
    assert r.conflicts == {("L1", ""): [2]}
    assert r.refused == [("L1", "", 90, "seq_ahead")]
    assert r.acks[("L1", "")] == 3 and r.stored == 1
    assert [c.seq for c in s.conflicts("school")] == [2]
    assert s.verify_trail()[0] == 3
    s.close()


@pytest.fixture
def pg_store_url(postgres_url):
    url = os.environ.get("LOCKER_TEST_POSTGRES") or postgres_url
    s = Store.open(url)
    with s.engine.begin() as conn:  # start from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    s.close()
    Store.open(url).close()
    return url


def test_three_workers_at_once_on_postgresql(pg_store_url):
    """Five lockers' events dealt round-robin to three workers (as a shared subscription deals
    them), in batches; a tenth of them sent again to another worker (a locker's resend after a
    lost ack). Every event once, the chain intact, and each journal's watermark its last seq."""
    rng = random.Random(7)
    lockers = [f"L{i}" for i in range(1, 6)]
    per_locker = 400
    stream = [(lid, ev(seq)) for seq in range(1, per_locker + 1) for lid in lockers]
    shares: list[list] = [[], [], []]
    for i, message in enumerate(stream):
        shares[i % 3].append(message)
        if rng.random() < 0.1:
            shares[(i + 1 + rng.randrange(2)) % 3].append(message)
    errors = []

    def worker(share):
        s = Store.open(pg_store_url)
        try:
            for start in range(0, len(share), 97):
                ingest_shared(s, "school", share[start : start + 97], max_ahead=30000)
        except Exception as e:  # reported below: a thread's exception is otherwise lost
            errors.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    s = Store.open(pg_store_url)
    try:
        assert s.count_events("school") == len(stream)
        for lid in lockers:
            assert sorted(r.seq for r in s.events("school", locker=lid)) == list(
                range(1, per_locker + 1)
            )
            assert s.ack_seq("school", lid) == per_locker
        resent = sum(len(x) for x in shares) - len(stream)
        assert s.duplicates("school") == resent > 0
        assert s.verify_trail()[0] == len(stream)
        # one more resend: acknowledged with the whole journal
        last = ingest_shared(s, "school", [(lid, ev(1)) for lid in lockers])
        assert acks_by_locker(last) == {lid: per_locker for lid in lockers}
    finally:
        s.close()
