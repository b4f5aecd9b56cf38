"""Store.ingest in whole-batch statements: exactly once, the ack watermark and the trail, checked
against a plain model over random multi-locker batches (resends, gaps, repeats, junk), on every
insert path (multi-row RETURNING, executemany and a query for the ids, SQLAlchemy Core)."""

import json
import os
import sqlite3

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lockerctl import trail
from lockerctl.store import Store
from lockerctl.store import engine as store_mod

LOCKERS = ("L1", "L2", "L3")


def ev(seq, person="P1"):
    return {
        "seq": seq,
        "ts": None if seq % 7 == 0 else 1_790_000_000 + seq,
        "type": "deposit",
        "bay": 1 + seq % 8,
        "person": person,
        "by": None,
        "reason": "pupil",
    }


class Model:
    """What ingest must do, one event at a time."""

    def __init__(self):
        self.stored = {}  # locker -> set of seqs
        self.acks = {}
        self.dups = 0

    def ingest(self, batch):
        seen = {}
        for locker, e in batch:
            seen.setdefault(locker, set())
            seq = e.get("seq") if isinstance(e, dict) else None
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                continue
            stored = self.stored.setdefault(locker, set())
            if seq in stored:
                self.dups += 1
            else:
                stored.add(seq)
        acks = {}
        for locker in seen:
            stored = self.stored.get(locker, set())
            ack = self.acks.get(locker, 0)
            while ack + 1 in stored:
                ack += 1
            self.acks[locker] = acks[locker] = ack
        return acks


@pytest.fixture(params=["returning", "executemany", "core"])
def insert_path(request, monkeypatch):
    if request.param == "core":  # a driver whose parameter style the store does not write
        monkeypatch.setattr(store_mod, "_PLACEHOLDER", {})
    return request.param


def open_store(path, insert_path):
    s = Store.open(f"sqlite:///{path}")
    if insert_path == "executemany":  # a database without INSERT ... RETURNING
        s.engine.dialect.insert_returning = False
    return s


item = st.one_of(
    st.tuples(st.sampled_from(LOCKERS), st.integers(1, 40).map(ev)),
    st.tuples(
        st.sampled_from(LOCKERS),
        st.sampled_from([{"seq": 0}, {"seq": -3}, {"seq": "4"}, {"seq": True}, {}, "junk"]),
    ),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(item, max_size=40), min_size=1, max_size=8))
def test_batches_match_the_one_event_model(tmp_path_factory, insert_path, batches):
    path = tmp_path_factory.mktemp("db") / "lockers.db"
    s = open_store(path, insert_path)
    model = Model()
    try:
        for batch in batches:
            assert s.ingest("school", batch) == model.ingest(batch)
        assert s.duplicates("school") == model.dups
        for locker in LOCKERS:
            got = [r.seq for r in s.events("school", locker=locker)]
            assert sorted(got) == sorted(model.stored.get(locker, ()))
            assert s.ack_seq("school", locker) == model.acks.get(locker, 0)
        count, _ = s.verify_trail()
        assert count == sum(len(v) for v in model.stored.values())
    finally:
        s.close()


def test_trail_order_and_content_of_a_mixed_batch(tmp_path, insert_path):
    path = tmp_path / "lockers.db"
    s = open_store(path, insert_path)
    s.ingest("school", [("L2", ev(5))])  # L2: 5 stored beyond its watermark (0)
    batch = [("L1", ev(2)), ("L2", ev(1)), ("L1", ev(1)), ("L2", ev(5)), ("L1", ev(2))]
    batch += [("L3", ev(n, person="Zoë ✓")) for n in range(1200, 0, -1)]  # several statements
    assert s.ingest("school", batch) == {"L1": 2, "L2": 1, "L3": 1200}
    assert s.ingest("school", [("L2", ev(4)), ("L2", ev(3)), ("L2", ev(2))]) == {"L2": 5}
    assert s.duplicates("school") == 2
    s.close()
    con = sqlite3.connect(path)
    rows = con.execute(
        "SELECT t.id, t.event_id, t.content_hash, e.locker_id, e.seq, e.ts, e.type, e.bay,"
        " e.person, e.by, e.reason, e.received_at, e.site, e.sort_ts, e.jid, e.mac,"
        " e.unknown_type, e.hash_v FROM trail t JOIN events e"
        " ON e.id = t.event_id ORDER BY t.id"
    ).fetchall()
    con.close()
    # lockers in order of first appearance in the batch, each one's seqs ascending
    order = [(r[3], r[4]) for r in rows]
    expected = [("L2", 5), ("L1", 1), ("L1", 2), ("L2", 1)]
    expected += [("L3", n) for n in range(1, 1201)] + [("L2", n) for n in (2, 3, 4)]
    assert order == expected
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)  # event ids in trail order
    for r in rows:
        content = trail.canonical(
            {
                "kind": "event",
                "site": r[12],
                "locker": r[3],
                "seq": r[4],
                "ts": r[5],
                "type": r[6],
                "bay": r[7],
                "person": r[8],
                "by": r[9],
                "reason": r[10],
                "received_at": r[11],
                # content format 2 (issue 13): what decides what is shown is in the hash too
                "sort_ts": r[13],
                "jid": r[14],
                "mac": r[15],
                "unknown_type": bool(r[16]),
                "v": r[17],
            }
        )
        assert r[17] == 2 and r[13] == (r[5] if r[5] is not None else r[11])
        assert trail.content_hash(content) == r[2]


text = st.one_of(st.none(), st.text(max_size=30), st.integers(-(2**70), 2**70), st.booleans())


@given(st.lists(text, min_size=10, max_size=10))
def test_event_content_is_the_canonical_encoding(values):
    site, locker, seq, ts, type_, bay, person, by, reason, received_at = values
    slow = trail.canonical(
        {
            "kind": "event",
            "site": site,
            "locker": locker,
            "seq": seq,
            "ts": ts,
            "type": type_,
            "bay": bay,
            "person": person,
            "by": by,
            "reason": reason,
            "received_at": received_at,
        }
    )
    got = trail.event_content(site, locker, seq, ts, type_, bay, person, by, reason, received_at)
    assert got == slow
    assert json.loads(got)["kind"] == "event"


def test_postgresql_batches_match_the_model(postgres_url):
    url = os.environ.get("LOCKER_TEST_POSTGRES") or postgres_url
    s = Store.open(url)
    with s.engine.begin() as conn:  # start from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    s.close()
    s = Store.open(url)
    model = Model()
    batches = [
        [("L2", ev(5)), ("L1", ev(1)), ("L1", ev(1)), ("L3", {"seq": 0})],
        [("L3", ev(n, person="Zoë ✓")) for n in range(1500, 0, -1)] + [("L2", ev(1))],
        [("L2", ev(n)) for n in (5, 4, 3, 2, 2)]
        + [("L1", ev(3)), ("L3", ev(1500, person="Zoë ✓"))],  # same content: a duplicate
    ]
    try:
        for batch in batches:
            assert s.ingest("school", batch) == model.ingest(batch)
        assert model.acks == {"L1": 1, "L2": 5, "L3": 1500}
        assert s.duplicates("school") == model.dups == 4
        assert s.count_events("school") == sum(len(v) for v in model.stored.values())
        assert s.verify_trail()[0] == s.count_events("school")
    finally:
        s.close()
