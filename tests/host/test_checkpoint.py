"""Signed checkpoints (C2SP tlog-checkpoint in a C2SP signed note): the format, the key kept in
the store, `audit key`, `audit verify --checkpoint`, and serve's checkpointer refusing to sign
over a checkpoint a locker holds that the store no longer matches."""

import base64
import hashlib
import json
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from harness import lockerctl, verify_as_locker
from lockerctl import checkpoint as cp
from lockerctl.checkpointer import Checkpointer
from lockerctl.store import Store

SITE = "school"


def ev(seq, person="P1"):
    return {"seq": seq, "ts": 1_790_000_000 + seq, "type": "deposit", "bay": 1, "person": person}


@pytest.fixture
def st(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    s.add_locker(SITE, "L1", 4, bytes(range(32)), "pw")
    s.ingest(SITE, [("L1", ev(n)) for n in range(1, 6)])
    yield s
    s.close()


def test_note_is_a_c2sp_signed_checkpoint(st):
    c = cp.make(st, SITE)
    size, head = st.trail_head()
    body, sig_line = c.note.split("\n\n")
    assert body.split("\n") == [
        "classlocker/school",
        str(size),
        base64.b64encode(bytes.fromhex(head)).decode(),
    ]
    assert (c.size, c.head, c.origin) == (size, head, "classlocker/school")
    assert sig_line.startswith("\u2014 classlocker/school ") and sig_line.endswith("\n")
    raw = base64.b64decode(sig_line.rsplit(" ", 1)[1])
    public = st.host_public_key(cp.KEY)
    # key id: SHA-256(name || 0x0A || 0x01 || public key)[:4]; then the Ed25519 signature of
    # the body with its final newline
    assert raw[:4] == hashlib.sha256(b"classlocker/school\n\x01" + public).digest()[:4]
    Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], (body + "\n").encode())
    assert len(c.note.encode()) <= cp.MAX_NOTE_BYTES


def test_the_key_is_made_once_and_kept(st, tmp_path):
    first = cp.host_key(st, SITE)
    assert cp.host_key(st, SITE) == first
    out = lockerctl("audit", "key", db=st.url.render_as_string(hide_password=False)).stdout
    vkey, raw = out.splitlines()
    assert cp.parse_verifier_key(vkey) == ("classlocker/school", first[1])
    assert raw == f"ed25519 {first[1].hex()}"
    assert first[0].hex() not in out


@pytest.mark.parametrize(
    "edit",
    [
        lambda n: n.replace(f"\n{n.split(chr(10))[1]}\n", "\n99\n", 1),  # another size
        lambda n: n.replace("classlocker/school\n", "classlocker/other\n", 1),
        lambda n: n.split("\n\n")[0] + "\n\n",  # no signature
        lambda n: n[:-6] + "AAAAA\n",  # a damaged signature
        lambda n: "",
    ],
)
def test_an_altered_note_is_refused(st, edit):
    c = cp.make(st, SITE)
    public = st.host_public_key(cp.KEY)
    with pytest.raises(cp.CheckpointError):
        cp.verify(edit(c.note), public)
    other = cp.new_key()[1]
    with pytest.raises(cp.CheckpointError):
        cp.verify(c.note, other)  # signed by this host only


def test_audit_verify_against_a_checkpoint_file(st, tmp_path):
    url = st.url.render_as_string(hide_password=False)
    note = tmp_path / "old.checkpoint"
    note.write_text(cp.make(st, SITE).note)
    size = st.trail_head()[0]
    st.ingest(SITE, [("L1", ev(6))])  # the trail grows: the old checkpoint is a prefix
    ok = lockerctl("audit", "verify", "--no-broker", "--checkpoint", note, db=url).stdout
    assert f"{note}: checkpoint of {size} entries: consistent" in ok
    # signed by another key: refused outright (a file the user named must hold)
    forged = tmp_path / "forged.checkpoint"
    forged.write_text(cp.sign(cp.new_key()[0], SITE, size + 10, "00" * 32))
    r = lockerctl("audit", "verify", "--checkpoint", forged, db=url, check=False)
    assert r.returncode == 1 and "not signed by this host's checkpoint key" in r.stderr
    # the tail cut, head and all (events, trail entries, the recorded head)
    db = sqlite3.connect(str(tmp_path / "lockers.db"))
    keep = size - 2
    (keep_hash,) = db.execute("SELECT hash FROM trail WHERE id = ?", (keep,)).fetchone()
    db.execute("DELETE FROM events WHERE id IN (SELECT event_id FROM trail WHERE id > ?)", (keep,))
    db.execute("DELETE FROM trail WHERE id > ?", (keep,))
    db.execute("UPDATE trail_head SET last_id = ?, hash = ?", (keep, keep_hash))
    db.commit()
    db.close()
    assert "intact" in lockerctl("audit", "verify", "--no-broker", db=url).stdout  # chain alone
    r = lockerctl("audit", "verify", "--no-broker", "--checkpoint", note, db=url, check=False)
    assert r.returncode == 1
    assert f"entries {keep + 1}..{size} are missing (the tail was cut)" in r.stderr
    # with the key pinned (--key), a store whose key was swapped cannot talk its way out
    vkey = cp.verifier_key("classlocker/school", st.host_public_key(cp.KEY))
    r = lockerctl(
        "audit", "verify", "--no-broker", "--key", vkey, "--checkpoint", note, db=url, check=False
    )
    assert r.returncode == 1 and "missing" in r.stderr


def test_a_rewritten_prefix_is_found(st, tmp_path):
    url = st.url.render_as_string(hide_password=False)
    note = tmp_path / "cp"
    note.write_text(cp.make(st, SITE).note)
    # rebuild the whole chain over edited content: every link holds, the old head does not
    db = sqlite3.connect(str(tmp_path / "lockers.db"))
    db.execute("UPDATE events SET person = 'P9' WHERE seq = 2")
    db.commit()
    db.close()
    from lockerctl import trail

    with st.engine.begin() as conn:
        rows = conn.exec_driver_sql(
            "SELECT t.id, e.site, e.locker_id, e.seq, e.ts, e.type, e.bay, e.person, e.by,"
            " e.reason, e.received_at, e.hash_v, e.jid, e.mac, e.sort_ts, e.unknown_type,"
            " t.content_hash FROM trail t LEFT JOIN events e ON e.id = t.event_id ORDER BY t.id"
        ).all()
        head = trail.GENESIS
        for r in rows:
            chash = r[16]
            if r[1] is not None:  # an event: its content again, as edited
                chash = trail.content_hash(trail.event_content(*r[1:15], bool(r[15])))
            head = trail.link(head, chash)
            conn.exec_driver_sql(
                "UPDATE trail SET content_hash = ?, hash = ? WHERE id = ?", (chash, head, r[0])
            )
        conn.exec_driver_sql("UPDATE trail_head SET hash = ?", (head,))
    assert "intact" in lockerctl("audit", "verify", "--no-broker", db=url).stdout
    r = lockerctl("audit", "verify", "--no-broker", "--checkpoint", note, db=url, check=False)
    assert r.returncode == 1 and "does not have the hash its checkpoint names" in r.stderr


def test_checkpointer_sends_signed_commands_and_refuses_to_sign_behind_a_locker(st):
    sent = []
    c = Checkpointer(st, SITE, lambda locker, payload: sent.append((locker, payload)))
    assert c.round() == 1
    [(locker, payload)] = sent
    cmd = verify_as_locker(payload, bytes(range(32)), "L1", 0, None)
    assert (cmd["op"], cmd["bay"], cmd["by"]) == ("checkpoint", 0, "host")
    held = cp.verify(cmd["reason"], st.host_public_key(cp.KEY))
    assert (held.size, held.head) == st.trail_head()
    # the locker reports it: nothing new to send while the head stays
    state = {"locker": "L1", "checkpoint": {"note": cmd["reason"], "acked": 5}}
    st.set_locker_status(SITE, "L1", state=state)
    assert c.round() == 0
    st.ingest(SITE, [("L1", ev(6))])
    assert c.round() == 1  # the head moved
    # a store restored from an older copy is behind what L1 holds: nothing signed, an alert
    st.set_locker_status(
        SITE,
        "L1",
        state={
            "locker": "L1",
            "checkpoint": {
                "note": cp.sign(st.host_key(SITE, cp.KEY, cp.new_key)[0], SITE, 99, "11" * 32),
                "acked": 9,
            },
        },
    )
    sent.clear()
    assert c.round() == 0 and sent == []
    assert st.refusal_counts(SITE)[("-", "checkpoint")] == 1
    assert "L1" in json.dumps([tuple(r) for r in st.refusals(SITE)])


def test_every_export_states_its_checkpoint_beside_the_rows(st, tmp_path):
    from openpyxl import load_workbook

    url = st.url.render_as_string(hide_password=False)
    public = st.host_public_key(cp.KEY) or cp.host_key(st, SITE)[1]
    size = st.trail_head()[0]
    r = lockerctl("export", "--format", "jsonl", db=url)
    assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == [1, 2, 3, 4, 5]
    note = r.stderr.split("checkpoint:\n", 1)[1]
    assert cp.verify(note, public).size == size
    out = tmp_path / "e.csv"
    r = lockerctl("export", "-o", out, db=url)
    assert cp.verify((tmp_path / "e.csv.checkpoint").read_text(), public).size == size
    assert all(line.count(",") == 12 for line in out.read_text().splitlines())  # rows only
    xlsx = tmp_path / "e.xlsx"
    lockerctl("export", "--format", "xlsx", "-o", xlsx, db=url)
    wb = load_workbook(xlsx, read_only=True)
    lines = [row[0] for row in wb["Checkpoint"].iter_rows(values_only=True)]
    assert (
        "\n".join(str(x or "") for x in lines) + "\n"
        == (tmp_path / "e.xlsx.checkpoint").read_text()
    )
