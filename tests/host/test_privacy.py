"""`lockerctl retention apply` and `lockerctl sar` on a real SQLite store: personal fields of old
events removed while `audit verify` still passes, ended grants and departed people deleted, and a
subject access export that holds everything about one person and nothing about anyone else."""

import json
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import lockerctl  # noqa: E402
from lockerctl import migrations, privacy  # noqa: E402
from lockerctl import trail as trail_mod  # noqa: E402
from lockerctl.store import Store  # noqa: E402
from lockerctl.store import chain as store_mod  # noqa: E402
from lockerctl.store import engine as store_engine  # noqa: E402

SITE = "school"
DAY = 86400
NOW = int(time.time())
OLD = NOW - 60 * DAY  # when the "old" events arrived

ROSTER = [
    ("P001", "Ada Pupil", "pupil", 6, True, "04A1B2C3"),
    ("P001", "Ada Pupil", "pupil", 6, True, "04A1B2C3D4E5F6"),
    ("P002", "Ben Pupil", "pupil", 3, False, "0BADCAFE"),
    ("S01", "Sam Head", "slt", 0, False, "5A5A5A5A"),
    ("S01", "Sam Head", "staff", 0, False, "5B5B5B5B"),
    ("X9", "Xena Leaver", "pupil", 4, False, "99999999"),
]


def roster(rows):
    return [
        {"person_id": p, "name": n, "role": r, "year": y, "walk_home": w, "card_uid": u}
        for p, n, r, y, w, u in rows
    ]


def ev(seq, type_, person=None, by=None, reason=None, bay=1, ts=None):
    return {
        "seq": seq,
        "ts": ts or NOW - 3600,
        "type": type_,
        "bay": bay,
        "person": person,
        "by": by,
        "reason": reason,
    }


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A store with a roster, a locker, old and recent events and grants."""
    db = f"sqlite:///{tmp_path / 'lockers.db'}"
    st = Store.open(db)
    st.replace_roster(SITE, roster(ROSTER))
    st.add_locker(SITE, "L1", 8, b"\x01" * 32, "pw")
    # Sixty days ago: the old events arrived and a grant ran out.
    monkeypatch.setattr(store_engine, "_now", lambda: OLD)
    st.ingest(
        SITE,
        [
            ("L1", ev(1, "deposit", "P001", ts=OLD)),
            ("L1", ev(2, "override", "P001", by="S01", reason="dentist at 2pm", ts=OLD + 60)),
            ("L1", ev(3, "deposit", "X9", ts=OLD + 120, bay=2)),
            ("L1", ev(4, "denied", "P002", reason="contact_hours", ts=OLD + 180, bay=None)),
        ],
    )
    st.add_grant(SITE, "P001", OLD, OLD + 3600, "S01", "orthodontist", locker_id="L1")
    monkeypatch.setattr(store_engine, "_now", lambda: NOW)
    # Recent: events, a live grant, a revocation.
    st.ingest(
        SITE,
        [
            ("L1", ev(5, "deposit", "P001", ts=NOW - 600)),
            (
                "L1",
                ev(
                    6,
                    "emergency_open",
                    None,
                    by="S01",
                    reason="fire drill",
                    bay=None,
                    ts=NOW - 300,
                ),
            ),
            ("L1", ev(7, "deposit", "P002", ts=NOW - 200, bay=3)),
        ],
    )
    st.add_grant(SITE, "P002", NOW - 100, NOW + 3600, "S01", "hospital visit")
    st.revoke_cards(SITE, "P001", "04A1B2C3")
    st.set_locker_status(
        SITE,
        "L1",
        state={
            "locker": "L1",
            "bays": [
                {"bay": 1, "locked": True, "door": "closed", "holder": "P001"},
                {"bay": 3, "locked": True, "door": "closed", "holder": "P002"},
            ],
        },
    )
    # X9 leaves the school: no longer on the roster.
    st.replace_roster(SITE, roster([r for r in ROSTER if r[0] != "X9"]))
    st.close()
    return db


def events(db):
    st = Store.open(db)
    try:
        return {e.seq: e for e in st.events(SITE)}
    finally:
        st.close()


def test_retention_removes_old_personal_fields_and_the_trail_still_verifies(site):
    before = lockerctl("audit", "verify", db=site)
    r = lockerctl("retention", "apply", "--keep-days", "30", db=site)
    assert "redacted" in r.stdout
    evs = events(site)
    for seq in (1, 2, 3, 4):  # old: who, by whom and why are gone; what, where and when stay
        e = evs[seq]
        assert (e.person, e.by, e.reason) == (None, None, None), seq
        assert e.type and e.locker_id == "L1"
    assert evs[2].type == "override" and evs[4].type == "denied"
    assert (evs[5].person, evs[6].by, evs[6].reason) == ("P001", "S01", "fire drill")
    after = lockerctl("audit", "verify", db=site)
    assert "intact" in after.stdout and "intact" in before.stdout
    exported = [
        json.loads(line)
        for line in lockerctl("export", "--format", "jsonl", db=site).stdout.splitlines()
    ]
    text = json.dumps(exported)
    assert "dentist" not in text and "Xena" not in text
    assert "fire drill" in text
    # The old grant is gone, the live one stays; the leaver's name is gone.
    st = Store.open(site)
    try:
        reasons = [g.reason for g in st.grants(SITE, include_ended=True)]
        assert reasons == ["hospital visit"]
        assert st.person(SITE, "X9") is None
        assert st.person(SITE, "P001").name == "Ada Pupil"
        actions = st.trail_actions(SITE)
        assert any(a.get("action") == "retention" for a in actions)
    finally:
        st.close()
    # A second run finds nothing more to do and the chain still holds.
    again = lockerctl("retention", "apply", "--keep-days", "30", db=site)
    assert "redacted 0 " in again.stdout
    lockerctl("audit", "verify", db=site)


def test_retention_still_catches_tampering_with_recent_entries(site):
    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    path = site.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET person = 'P002' WHERE seq = 5")
    r = lockerctl("audit", "verify", db=site, check=False)
    assert r.returncode != 0 and "broken" in r.stderr


def _sql(site, *statements):
    with sqlite3.connect(site.removeprefix("sqlite:///")) as conn:
        for st in statements:
            conn.execute(st)


def _verify_fails(site, *words):
    r = lockerctl("audit", "verify", db=site, check=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for word in words:
        assert word in r.stderr, r.stderr
    return r.stderr


def _redacted_entry(site, seq):
    path = site.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT t.id FROM trail t JOIN events e ON e.id = t.event_id WHERE e.seq = ?", (seq,)
        ).fetchone()[0]


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE events SET type = 'retrieve' WHERE seq = 2",
        "UPDATE events SET bay = 7 WHERE seq = 2",
        "UPDATE events SET ts = ts - 3600 WHERE seq = 2",
        "UPDATE events SET person = 'P002' WHERE seq = 2",  # a holder written back in
    ],
    ids=["type", "bay", "ts", "person"],
)
def test_what_stays_of_a_redacted_event_is_still_tamper_evident(site, edit):
    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    _sql(site, edit)
    entry = _redacted_entry(site, 2)
    _verify_fails(site, f"entry {entry}:", "edited after its redaction")


def test_a_redaction_record_edited_or_deleted_is_found(site):
    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    lockerctl("audit", "verify", db=site)
    entry = _redacted_entry(site, 3)
    _sql(site, f"DELETE FROM redactions WHERE entry_id = {entry}")
    _verify_fails(site, f"entry {entry}:", "without a redaction record")


def test_records_rewritten_to_match_an_edit_are_found_by_the_redaction_digest(site):
    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    entry = _redacted_entry(site, 2)
    # Someone edits the event and rewrites its record's hash to match what they left.
    _sql(site, "UPDATE events SET type = 'retrieve' WHERE seq = 2")
    st = Store.open(site)
    try:
        forged = _public_hash(st, entry)
    finally:
        st.close()
    _sql(site, f"UPDATE redactions SET public_hash = '{forged}' WHERE entry_id = {entry}")
    _verify_fails(site, "do not match their records")


def test_marking_a_recent_entry_redacted_does_not_hide_an_edit(site):
    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    entry = _redacted_entry(site, 5)
    _sql(
        site,
        f"UPDATE trail SET redacted = 1 WHERE id = {entry}",
        "UPDATE events SET person = 'P002' WHERE seq = 5",
    )
    _verify_fails(site, f"entry {entry}:", "without a redaction record")


def test_retention_refuses_to_redact_an_entry_that_was_edited(site):
    _sql(site, "UPDATE events SET type = 'retrieve' WHERE seq = 2")
    entry = _redacted_entry(site, 2)
    r = lockerctl("retention", "apply", "--keep-days", "30", db=site, check=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"trail entry {entry} does not match its hash" in r.stderr
    assert events(site)[2].reason == "dentist at 2pm"  # nothing redacted


def test_a_store_redacted_before_redaction_records_gets_them_on_upgrade(site):
    """Entries redacted by a version without the `redactions` table: migration 0003 records
    what stays of them as it is, under one `redact` action by `migration`."""
    # Redact the way the previous version did: blank, mark, one `redact` action without digest.
    cutoff = NOW - 30 * DAY
    st = Store.open(site)
    try:
        t, e = store_mod.trail_entries, store_mod.events
        with st._write() as conn:
            old = t.c.at < cutoff, t.c.kind == "event"
            gone = sa.select(t.c.event_id).where(*old)
            blank = {"person": None, "by": None, "reason": None}
            conn.execute(e.update().where(e.c.id.in_(gone)).values(**blank))
            n = conn.execute(t.update().where(*old).values(redacted=True)).rowcount
            detail = {"before": cutoff, "entries": n}
            store_mod._append_action(conn, SITE, "retention", "redact", detail)
    finally:
        st.close()
    # ... in a store of that version: no `redactions`, its history the old `migrations` table
    every = migrations.revisions()
    _sql(
        site,
        "DROP TABLE redactions",
        "DROP TABLE alembic_version",
        "CREATE TABLE migrations (name VARCHAR(100) PRIMARY KEY, applied_at BIGINT NOT NULL)",
        *[f"INSERT INTO migrations VALUES ('{n}', 0)" for n in every if n != "0003_redactions"],
    )
    st = Store.open(site)  # migrates
    try:
        st.verify_trail()
        legacy = [a for a in st.trail_actions(SITE) if a.get("actor") == "migration"]
        assert len(legacy) == 1 and legacy[0]["detail"]["legacy"] is True
        assert legacy[0]["detail"]["entries"] > 0
    finally:
        st.close()
    _sql(site, "UPDATE events SET bay = 7 WHERE seq = 2")
    _verify_fails(site, "edited after its redaction")


def test_dry_run_changes_nothing(site):
    r = lockerctl("retention", "apply", "--keep-days", "30", "--dry-run", db=site)
    assert "would redact" in r.stdout
    assert events(site)[2].reason == "dentist at 2pm"
    st = Store.open(site)
    try:
        assert len(st.grants(SITE, include_ended=True)) == 2
    finally:
        st.close()


def test_keep_days_zero_redacts_everything_received_before_now(site):
    st = Store.open(site)
    try:
        r = privacy.apply_retention(st, SITE, 0, now=NOW + 10)
        assert r["entries"] > 0
        assert all(e.person is None and e.by is None for e in st.events(SITE))
        count, _ = st.verify_trail()
        assert count > 0
    finally:
        st.close()


@pytest.mark.parametrize("args", [["--keep-days", "-1"], ["--keep-days", "x"], []])
def test_bad_retention_input_is_one_line(site, args):
    r = lockerctl("retention", "apply", *args, db=site, check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "keep-days" in r.stderr


def test_sar_holds_everything_about_one_person(site, tmp_path):
    out = tmp_path / "sar.json"
    lockerctl("sar", "P001", "-o", out, db=site)
    assert out.stat().st_mode & 0o077 == 0
    report = json.loads(out.read_text())
    assert report["subject"] == "P001"
    assert report["person"]["name"] == "Ada Pupil"
    cards = {c["card"]: c for c in report["cards"]}
    assert set(cards) == {"****B2C3", "****E5F6"}
    assert cards["****B2C3"]["revoked"] is True and cards["****E5F6"]["revoked"] is False
    assert [(e["seq"], e["as"]) for e in report["events"]] == [
        (1, ["subject"]),
        (2, ["subject"]),
        (5, ["subject"]),
    ]
    assert report["events"][1]["reason"] == "dentist at 2pm"
    assert [g["reason"] for g in report["grants"]] == ["orthodontist"]
    assert report["holding"] == [{"locker": "L1", "bay": 1}]
    assert any(a["action"] == "card_revoke" for a in report["actions"])
    text = out.read_text()
    # No raw card UID, nothing about anybody else.
    for uid in ("04A1B2C3", "04A1B2C3D4E5F6", "0BADCAFE"):
        assert uid not in text
    assert "Ben Pupil" not in text and "hospital visit" not in text
    # The request is itself in the trail.
    st = Store.open(site)
    try:
        assert any(
            a.get("action") == "subject_access" and a["detail"]["person"] == "P001"
            for a in st.trail_actions(SITE)
        )
    finally:
        st.close()


def test_sar_for_an_slt_member_includes_what_they_did(site):
    report = json.loads(lockerctl("sar", "S01", db=site).stdout)
    assert {(e["seq"], tuple(e["as"])) for e in report["events"]} == {
        (2, ("actor",)),
        (6, ("actor",)),
    }
    assert sorted(g["reason"] for g in report["grants"]) == ["hospital visit", "orthodontist"]
    assert all(g["as"] == ["granted_by"] for g in report["grants"])
    assert len(report["cards"]) == 2


def test_sar_after_retention_no_longer_holds_redacted_events(site):
    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    report = json.loads(lockerctl("sar", "P001", db=site).stdout)
    assert [e["seq"] for e in report["events"]] == [5]
    assert report["grants"] == []
    assert "dentist" not in json.dumps(report)


def test_sar_unknown_and_bad_person(site):
    r = lockerctl("sar", "NOBODY", db=site)
    report = json.loads(r.stdout)
    assert report["person"] is None and report["events"] == []
    assert "nothing is held" in r.stderr
    bad = lockerctl("sar", "a/b", db=site, check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "person id" in bad.stderr


def _content(st, entry) -> bytes:
    """A trail entry's canonical content as the store builds it."""
    with st.engine.connect() as conn:
        row = conn.execute(
            store_mod._entries_with_events().where(store_mod.trail_entries.c.id == entry)
        ).first()
    return trail_mod.entry_content(row)


def _public_hash(st, entry):
    from lockerctl import trail

    return trail.content_hash(trail.public_content(_content(st, entry)))


def test_a_forged_redaction_appended_to_hide_a_recent_edit_is_found(site):
    """Someone with write access edits a recent event, marks it redacted and appends a chained
    `redact` action whose digest matches. Retention redacts every older entry of the site, so a
    redaction that left older entries as they were is not retention's."""
    from lockerctl import trail

    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    entry = _redacted_entry(site, 5)
    _sql(
        site,
        "UPDATE events SET bay = 7, person = NULL WHERE seq = 5",
        f"UPDATE trail SET redacted = 1 WHERE id = {entry}",
    )
    st = Store.open(site)
    try:
        public = _public_hash(st, entry)
        digest = trail.RedactionDigest()
        digest.add(entry, public)
        with st._write() as conn:
            chain = store_mod._chain(conn)
            conn.execute(
                store_mod.redactions.insert().values(
                    entry_id=entry, public_hash=public, action_id=chain.last_id + 1
                )
            )
            detail = {"before": NOW + 60, "entries": 1, "digest": digest.hexdigest()}
            store_mod._append_action(conn, SITE, "retention", "redact", detail, chain)
            store_mod._save_chain(conn, chain)
    finally:
        st.close()
    _verify_fails(site, "left older entries of its site unredacted")


def test_an_event_entry_turned_into_an_action_is_found(site):
    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    entry = _redacted_entry(site, 2)
    st = Store.open(site)
    try:
        content = _content(st, entry).decode().replace("'", "''")
    finally:
        st.close()
    _sql(site, f"UPDATE trail SET kind = 'action', content = '{content}' WHERE id = {entry}")
    _verify_fails(site, f"entry {entry}:", "pointing at an event row")


@pytest.mark.parametrize("target", ["recent", "missing"])
def test_a_redaction_record_added_is_found_and_retention_refuses_it(site, target):
    entry = _redacted_entry(site, 5) if target == "recent" else 999999
    _sql(site, f"INSERT INTO redactions VALUES ({entry}, '{'0' * 64}', 1)")
    stderr = _verify_fails(site)
    assert "not redacted" in stderr or "which is not there" in stderr, stderr
    if target == "recent":
        r = lockerctl("retention", "apply", "--keep-days", "0", db=site, check=False)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "already has a redaction record" in r.stderr


def test_an_action_that_is_not_json_any_more_is_a_broken_entry_not_a_traceback(site):
    lockerctl("retention", "apply", "--keep-days", "30", db=site)
    last = 'SELECT MAX(id) FROM trail WHERE content LIKE \'%"action":"redact"%\''
    _sql(site, f'UPDATE trail SET content = \'{{"action":"redact"\' WHERE id = ({last})')
    _verify_fails(site, "content is not valid JSON")


def test_dry_run_counts_what_apply_redacts(site):
    st = Store.open(site)
    try:
        later = int(time.time()) + 60  # a fixed "now" after everything written so far
        privacy.apply_retention(st, SITE, 0, now=later)
        # Left since: the `retention` action; `redact` actions are never redacted.
        would = privacy.retention_preview(st, SITE, 0, now=later + 60)["entries"]
        did = privacy.apply_retention(st, SITE, 0, now=later + 60)["entries"]
        assert would == did == 1
    finally:
        st.close()
