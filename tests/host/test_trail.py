"""The tamper-evident trail: the chain itself, and tampering with a real SQLite store file."""

import sqlite3

import pytest
from lockerctl import trail
from lockerctl.store import Store


def ev(seq, ts=1_790_000_000, type="deposit", bay=1, person="P1", by=None, reason=None):
    return {
        "seq": seq,
        "ts": ts,
        "type": type,
        "bay": bay,
        "person": person,
        "by": by,
        "reason": reason,
    }


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "lockers.db"
    st = Store.open(f"sqlite:///{path}")
    st.record_action("school", "cli:test", "roster_import", {"cards": 3})
    st.ingest("school", [("L1", ev(i)) for i in range(1, 6)])
    st.record_action("school", "cli:test", "grant", {"person": "P1"})
    st.ingest("school", [("L2", ev(1, person="P2")), ("L2", ev(2, person="P2"))])
    yield st, path
    st.close()


def sql(path, *statements):
    con = sqlite3.connect(path)
    with con:
        for s in statements:
            con.execute(s)
    con.close()


def broken(st) -> trail.Broken:
    with pytest.raises(trail.Broken) as info:
        st.verify_trail()
    return info.value


def test_canonical_encoding_is_sorted_compact_utf8():
    assert trail.canonical({"b": 1, "a": "é", "c": None}) == '{"a":"é","b":1,"c":null}'.encode()
    chash = trail.content_hash(b"x")
    assert trail.link(trail.GENESIS, chash) != trail.link(chash, chash)


def test_chain_and_verifier_agree():
    chain, v = trail.Chain(), trail.Verifier()
    contents = [trail.canonical({"n": i}) for i in range(5)]
    for c in contents:
        entry_id, chash, h = chain.append(c)
        v.feed(entry_id, chash, h, c)
    v.finish(chain.last_id, chain.head)
    assert v.count == 5 and v.head == chain.head


def test_intact_store_verifies(store):
    st, _ = store
    count, head = st.verify_trail()
    assert count == 9
    assert len(head) == 64


def test_edit_of_an_event_is_found(store):
    st, path = store
    sql(path, "UPDATE events SET person = 'P9' WHERE locker_id = 'L1' AND seq = 3")
    e = broken(st)
    assert e.entry_id == 4  # action 1, then L1 seq 1, 2, 3
    assert "edited" in e.what


def test_edit_of_an_action_is_found(store):
    st, path = store
    sql(path, "UPDATE trail SET content = replace(content, 'P1', 'P7') WHERE kind = 'action'")
    assert broken(st).entry_id == 7


def test_rehashed_edit_still_breaks_the_link(store):
    st, path = store
    # A forger who also recomputes the content hash cannot fix the link without the chain.
    content = trail.action_content("school", 0, "x", "grant", {"person": "P7"})
    sql(
        path,
        f"UPDATE trail SET content = '{content.decode()}', "
        f"content_hash = '{trail.content_hash(content)}' WHERE id = 7",
    )
    e = broken(st)
    assert e.entry_id == 7 and "link" in e.what


def test_deleted_entry_is_found(store):
    st, path = store
    sql(path, "DELETE FROM trail WHERE id = 5")
    e = broken(st)
    assert e.entry_id == 5 and "missing" in e.what


def test_deleted_event_row_is_found(store):
    st, path = store
    sql(path, "PRAGMA foreign_keys=OFF", "DELETE FROM events WHERE locker_id = 'L2' AND seq = 1")
    e = broken(st)
    assert e.entry_id == 8 and "deleted" in e.what


def test_deleted_tail_is_found(store):
    st, path = store
    sql(path, "DELETE FROM trail WHERE id = 9")
    e = broken(st)
    assert e.entry_id == 9 and "missing" in e.what


def test_reorder_is_found(store):
    st, path = store
    sql(
        path,
        "UPDATE trail SET id = -1 WHERE id = 3",
        "UPDATE trail SET id = 3 WHERE id = 4",
        "UPDATE trail SET id = 4 WHERE id = -1",
    )
    e = broken(st)
    assert e.entry_id == 3 and "link" in e.what


def test_inserted_event_is_found(store):
    st, path = store
    sql(
        path,
        "INSERT INTO events (site, locker_id, seq, ts, type, received_at, sort_ts) "
        "VALUES ('school', 'L1', 99, 1, 'retrieve', 1, 1)",
    )
    assert "not in the trail" in broken(st).what


def test_redaction_keeps_the_chain_verifiable(store):
    st, path = store
    n = st.redact_before("school", cutoff_ts=2**40)
    assert n == 9
    rows = list(st.events("school"))
    assert rows and all(r.person is None for r in rows)
    count, _ = st.verify_trail()
    assert count == 10  # the 9 redacted entries and the redaction itself
    actions = st.trail_actions("school")
    assert actions[0]["action"] == "redact"
    # a redacted entry's link is still checked
    sql(path, "DELETE FROM trail WHERE id = 2")
    assert broken(st).entry_id == 2


def test_appends_from_two_stores_keep_one_chain(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    a, b = Store.open(url), Store.open(url)
    for i in range(1, 11):
        a.ingest("school", [("L1", ev(i))])
        b.record_action("school", "cli:test", "note", {"i": i})
    assert a.verify_trail()[0] == 20
    a.close()
    b.close()
