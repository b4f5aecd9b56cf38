"""Issue 13's findings, reproduced end to end and answered: the site's own locked-down broker
(`lockerctl broker config`), a real `lockerctl serve`, and a test rig in the place of locker L1.

The rig is a second implementation of a locker's MQTT side (docs/protocol.md): it publishes with
L1's broker credentials, MACs its events with L1's secret from `device.json`, checks the MAC of
every ack it gets, and keeps the checkpoints the host sends it (a signed `cmd`) in its retained
`state`, as the firmware does. The attacker is the same broker account without the secret:
what someone holding one locker's broker password can do.

1. a wiped board (a new journal id, seq from 1): every event stored and acknowledged;
2. future events planted with the broker password: refused (bad or missing MAC), alerted, and
   the genuine events at those seqs stored when they come; a seq further ahead than a journal
   holds is refused even with a good MAC; other content for a stored seq is kept aside;
3. a far-future or malformed event and a malformed retained `state`: refused, pages working;
4. `sort_ts` edited, and the newest entries removed head and all: found by `audit verify`.
"""

import http.cookiejar
import json
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from harness import Broker, free_port, lockerctl, verify_as_locker, wait_for
from lockerctl import keys
from lockerctl.ingest import JOURNAL_MAX_EVENTS
from lockerctl.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SITE = "school"
T0 = 1_790_000_000
JID_A, JID_B = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"


class Rig:
    """Locker L1's MQTT side, played by the test with L1's own credentials (and, unless it is
    the attacker, its secret)."""

    def __init__(self, broker, device, secret: bytes | None = None):
        self.locker = device["locker_id"]
        self.secret = secret
        self.root = f"lockers/{SITE}/{self.locker}/"
        self.acks: list[dict] = []
        self.cmds: list[dict] = []
        self.cond = threading.Condition()
        self.last_cmd_id = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"rig-{uuid.uuid4().hex[:8]}"
        )
        self.client.username_pw_set(device["broker"]["user"], device["broker"]["password"])
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe(
            [(self.root + "ack", 1), (self.root + "cmd", 1)]
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(10), "the rig could not subscribe to its ack and cmd"

    def _on_message(self, client, userdata, msg):
        payload = json.loads(msg.payload)
        with self.cond:
            if msg.topic.endswith("/ack"):
                self.acks.append(payload)
            else:
                self.cmds.append(payload)
            self.cond.notify_all()

    def event(self, seq, jid=JID_A, type_="deposit", ts=None, bay=1, person="P001", **kw):
        ev = {
            "seq": seq,
            "ts": T0 + seq if ts is None else ts,
            "type": type_,
            "bay": bay,
            "person": person,
            "by": kw.pop("by", None),
            "reason": kw.pop("reason", "pupil"),
            "jid": jid,
        }
        key = kw.pop("key", self.secret)
        ev["mac"] = keys.event_mac(key, ev) if key is not None else kw.pop("mac", None)
        ev.update(kw)
        return ev

    def send(self, *events, batch=False):
        payloads = [events] if batch else events
        for p in payloads:
            self.client.publish(self.root + "event", json.dumps(p), qos=1).wait_for_publish(5)

    def publish_state(self, state):
        self.client.publish(self.root + "state", json.dumps(state), qos=1, retain=True)

    def acked(self, jid):
        """The highest seq acknowledged for journal `jid` by an ack whose MAC checks."""
        with self.cond:
            good = [
                a["seq"]
                for a in self.acks
                if a.get("jid") == jid and a.get("mac") == keys.ack_mac(self.secret, a["seq"], jid)
            ]
        return max(good, default=0)

    def wait_ack(self, jid, seq, timeout=15):
        wait_for(lambda: self.acked(jid) >= seq, timeout=timeout, what=f"ack {seq} of {jid}")
        assert self.acked(jid) == seq, f"acknowledged beyond {seq}: {self.acked(jid)}"

    def take_checkpoint(self, min_size, timeout=20):
        """The latest checkpoint command of at least `min_size` entries, checked as the locker
        checks a command (its MAC with the locker's key, a fresh id, not expired)."""

        def latest():
            with self.cond:
                for cmd in reversed(self.cmds):
                    if cmd.get("op") == "checkpoint":
                        size = int(cmd["reason"].split("\n")[1])
                        if size >= min_size:
                            return cmd
            return None

        cmd = wait_for(latest, timeout=timeout, what=f"a checkpoint of {min_size}+ entries")
        payload = json.dumps(cmd).encode()
        ok = verify_as_locker(
            payload, self.secret, self.locker, self.last_cmd_id, int(time.time())
        )
        self.last_cmd_id = ok["id"]
        assert (ok["bay"], ok["by"]) == (0, "host")
        return ok["reason"]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def good_state(locker="L1", checkpoint=None):
    state = {
        "locker": locker,
        "clock_ok": True,
        "online": True,
        "pending": 0,
        "config": 1,
        "bays": [
            {"bay": n, "locked": True, "door": "closed", "holder": None} for n in range(1, 5)
        ],
    }
    if checkpoint is not None:
        state["checkpoint"] = checkpoint
    return state


@pytest.fixture
def site(tmp_path, db_url):
    """L1 (4 bays) on the site's locked-down broker; yields (broker, device)."""
    port = free_port()
    out = lockerctl("locker", "add", "L1", "--bays", 4, db=db_url).stdout
    device = json.loads(out)
    conf_dir = tmp_path / "broker"
    lockerctl("broker", "config", conf_dir, "--listen", f"127.0.0.1:{port}", db=db_url)
    broker = Broker(tmp_path, conf=conf_dir / "mosquitto.conf", port=port).start()
    yield broker, device
    broker.kill()


@pytest.fixture
def rig(site):
    broker, device = site
    r = Rig(broker, device, bytes.fromhex(device["secret"]))
    yield r
    r.close()


def export_rows(db_url, *args):
    out = lockerctl("export", "--format", "jsonl", *args, db=db_url).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_finding_1_a_wiped_board_starts_a_new_journal_stored_in_full(
    site, rig, db_url, make_serve
):
    broker, _ = site
    make_serve(db_url, broker)
    rig.send(*[rig.event(seq, person=f"A{seq}") for seq in range(1, 5)])
    rig.wait_ack(JID_A, 4)
    # the board is wiped (or replaced): a new journal id, seq from 1 again, other events
    rig.send(rig.event(1, JID_B, person="B1"), rig.event(2, JID_B, person="B2"))
    rig.send(rig.event(3, JID_B, person="B3"), batch=True)  # a batch of one
    rig.wait_ack(JID_B, 3)
    rows = export_rows(db_url)
    assert sorted(r["person_id"] for r in rows) == ["A1", "A2", "A3", "A4", "B1", "B2", "B3"]
    assert {r["jid"] for r in rows} == {JID_A, JID_B}
    with Store.open(db_url) as st:
        assert st.ack_seq(SITE, "L1", JID_A) == 4 and st.ack_seq(SITE, "L1", JID_B) == 3
    assert "intact: " in lockerctl("audit", "verify", "--no-broker", db=db_url).stdout


def test_finding_2_planted_events_are_refused_and_the_genuine_ones_stored(
    site, rig, db_url, make_serve
):
    broker, device = site
    make_serve(db_url, broker)
    rig.send(*[rig.event(seq) for seq in range(1, 4)])
    rig.wait_ack(JID_A, 3)

    attacker = Rig(broker, device, secret=None)  # the broker password, not the secret
    try:
        wrong = bytes(32)
        attacker.send(
            attacker.event(6, person="X6", key=wrong),
            attacker.event(7, person="X7", mac=None),  # no MAC at all
            {k: v for k, v in attacker.event(8, person="X8", key=wrong).items() if k != "jid"},
        )
        attacker.send(attacker.event(9, person="X9", key=wrong), batch=True)
        with Store.open(db_url) as st:
            wait_for(
                lambda: st.refusal_counts(SITE).get(("L1", "bad_mac")) == 4,
                what="four forgeries counted",
            )
            [alert] = [r for r in st.refusals(SITE) if r.kind == "bad_mac"]
            assert alert.count == 4 and alert.locker_id == "L1"  # one alert, with a count
    finally:
        attacker.close()
    # the genuine events at those seqs arrive: stored, acknowledged
    rig.send(*[rig.event(seq, person=f"P{seq}") for seq in range(4, 10)], batch=True)
    rig.wait_ack(JID_A, 9)
    people = {r["seq"]: r["person_id"] for r in export_rows(db_url)}
    assert [people[s] for s in (6, 7, 8, 9)] == ["P6", "P7", "P8", "P9"]

    # a good MAC does not make possible what no journal holds: a seq too far ahead
    far = 9 + JOURNAL_MAX_EVENTS + 1
    rig.send(rig.event(far), rig.event(10))
    rig.wait_ack(JID_A, 10)
    # other content for a stored seq (a cloned board?): kept aside, not acknowledged as stored
    rig.send(rig.event(5, person="CLONE"))
    with Store.open(db_url) as st:
        wait_for(lambda: st.conflicts(SITE), what="the conflict kept")
        [conflict] = st.conflicts(SITE)
        assert conflict.seq == 5 and "CLONE" in conflict.content
        counts = st.refusal_counts(SITE)
        assert counts[("L1", "seq_ahead")] == 1 and counts[("L1", "conflict")] == 1
        assert far not in [r.seq for r in st.events(SITE)]
    assert {r["seq"]: r["person_id"] for r in export_rows(db_url)}[5] == "P5"  # the first kept
    time.sleep(0.5)
    assert rig.acked(JID_A) == 10


def test_finding_3_impossible_events_and_a_malformed_state_are_refused(
    site, rig, db_url, make_serve
):
    broker, _ = site
    http = free_port()
    lockerctl(
        "user", "add", "root", "--role", "admin", "--password-stdin", db=db_url, input="pw pw pw\n"
    )
    make_serve(db_url, broker, http_port=http)
    rig.publish_state(good_state())
    rig.send(rig.event(1))
    rig.wait_ack(JID_A, 1)
    with Store.open(db_url) as st:
        wait_for(lambda: st.locker(SITE, "L1").state == good_state(), what="the state kept")
    rig.send(
        rig.event(2, ts=2**40),  # after the year 9999: no u32 holds it
        rig.event(2, ts=-5),
        rig.event(2, bay=9),  # L1 has 4 bays
        rig.event(2, person="x" * 256),  # longer than the firmware's 255 bytes
    )
    rig.send(rig.event(2, type_="teleported"))  # unknown type: stored, marked
    rig.wait_ack(JID_A, 2)
    for bad in ({"bays": 5}, None, {**good_state(), "bays": [{"bay": 1, "holder": ["P1"]}]}):
        rig.publish_state(bad)
    time.sleep(1)
    with Store.open(db_url) as st:
        assert st.locker(SITE, "L1").state == good_state()  # the last good one
        assert st.refusal_counts(SITE)[("L1", "impossible")] == 4
        assert [(r.seq, r.type) for r in st.events(SITE)] == [(1, "deposit"), (2, "teleported")]
    [row] = [r for r in export_rows(db_url) if r["seq"] == 2]
    assert row["flags"] == "unknown_type"

    client = Client(f"http://127.0.0.1:{http}")
    client.login("root", "pw pw pw")
    for path in ("/lockers", "/api/events", "/trail", "/alerts", "/api/state"):
        status, _, body = client.request(path)
        assert status == 200, (path, status, body[:300])
    status, _, body = client.request("/alerts")
    assert "no firmware can send" in body
    status, _, body = client.request("/trail")
    assert "teleported (unknown type)" in body


class Client:
    """A cookie-keeping HTTP client for the dashboard (redirects not followed)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kw):
            return None

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), self._NoRedirect
        )

    def request(self, path: str, form: dict | None = None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            resp = self.opener.open(urllib.request.Request(self.base + path, data=data))
        except urllib.error.HTTPError as e:
            resp = e
        return resp.status, resp.headers, resp.read().decode("utf-8", "replace")

    def login(self, username: str, password: str):
        _, _, body = self.request("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
        status, _, _ = self.request(
            "/login", {"username": username, "password": password, "csrf": token}
        )
        assert status in (302, 303), status


def _sql(db_url, *statements):
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    try:
        out = [con.execute(sql, args).fetchall() for sql, *args in statements]
        con.commit()
        return out
    finally:
        con.close()


def test_finding_4_sort_ts_edits_and_a_cut_tail_are_found(site, rig, db_url, make_serve, tmp_path):
    broker, _ = site
    make_serve(db_url, broker, extra=("--checkpoint-every", "1"))
    rig.send(*[rig.event(seq, person=f"P{seq}") for seq in range(1, 7)])
    rig.wait_ack(JID_A, 6)
    with Store.open(db_url) as st:
        size = st.trail_head()[0]
    # the locker keeps the host's latest checkpoint and reports it in its retained state
    note = rig.take_checkpoint(size)
    rig.publish_state(good_state(checkpoint={"note": note, "acked": 6}))
    with Store.open(db_url) as st:
        wait_for(lambda: (st.locker(SITE, "L1").state or {}).get("checkpoint"), what="stored")
    export = tmp_path / "trail.csv"
    lockerctl("export", "-o", export, db=db_url)
    assert export.with_name("trail.csv.checkpoint").read_text().split("\n")[1] == str(size)
    assert "classlocker/school" not in export.read_text()  # rows only

    ok = lockerctl("audit", "verify", "--broker", broker.address, db=db_url).stdout
    assert f"audit trail intact: {size} entries" in ok
    assert "from the broker's retained state" in ok
    assert f"locker L1: checkpoint of {size} entries: consistent" in ok

    # sort_ts decides what a date-ranged export shows: editing it hides an event
    [[(event_id, sort_ts)]] = _sql(db_url, ("SELECT id, sort_ts FROM events WHERE seq = 3",))
    _sql(db_url, ("UPDATE events SET sort_ts = 0 WHERE id = ?", event_id))
    assert [r["seq"] for r in export_rows(db_url, "--from", "2026-01-01")].count(3) == 0
    r = lockerctl("audit", "verify", "--no-broker", db=db_url, check=False)
    assert r.returncode == 1 and "content does not match its hash (edited)" in r.stderr
    _sql(db_url, ("UPDATE events SET sort_ts = ? WHERE id = ?", sort_ts, event_id))

    # the newest two entries removed, head and all: the chain alone is intact again ...
    [[(head_hash,)]] = _sql(db_url, ("SELECT hash FROM trail WHERE id = ?", size - 2))
    _sql(
        db_url,
        ("DELETE FROM events WHERE id IN (SELECT event_id FROM trail WHERE id > ?)", size - 2),
        ("DELETE FROM trail WHERE id > ?", size - 2),
        ("UPDATE trail_head SET last_id = ?, hash = ?", size - 2, head_hash),
    )
    # ... but not with what the lockers hold, nor with an export's checkpoint
    missing = f"entries {size - 1}..{size} are missing"
    r = lockerctl("audit", "verify", "--broker", broker.address, db=db_url, check=False)
    assert r.returncode == 1 and "locker L1" in r.stderr and missing in r.stderr
    r = lockerctl("audit", "verify", "--no-broker", db=db_url, check=False)
    assert r.returncode == 1 and missing in r.stderr
    cp = str(export) + ".checkpoint"
    r = lockerctl("audit", "verify", "--no-broker", "--checkpoint", cp, db=db_url, check=False)
    assert r.returncode == 1 and missing in r.stderr and cp in r.stderr


FIRMWARE_HAS_JOURNAL_IDS = "jid" in (ROOT / "firmware" / "locker" / "journal.py").read_text()


@pytest.mark.skipif(
    not FIRMWARE_HAS_JOURNAL_IDS, reason="this firmware does not send journal ids and MACs yet"
)
def test_the_real_firmware_wiped_starts_a_new_journal_and_holds_the_checkpoint(
    site, db_url, make_locker, make_serve, tmp_path
):
    """The same with the firmware on the unix port: its boot event stored and acknowledged; its
    journal wiped, the new boot (seq 1 again, a new journal id) stored and acknowledged too; the
    host's checkpoint kept by the locker, reported in its state and checked by `audit verify`."""
    import shutil

    broker, device = site
    device["broker"].update(host=broker.host, port=broker.port)
    device["data_dir"] = str(tmp_path / "data-L1")
    make_serve(db_url, broker, extra=("--checkpoint-every", "1"))
    locker = make_locker("L1", broker=broker, device=device)
    wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="boot acknowledged")
    locker.kill()
    shutil.rmtree(device["data_dir"])  # a wiped board (or a new one with the same key)
    locker.start()
    wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="new boot acknowledged")
    boots = [r for r in export_rows(db_url) if r["event"] == "boot"]
    assert [r["seq"] for r in boots] == [1, 1] and len({r["jid"] for r in boots}) == 2
    wait_for(
        lambda: (locker.state().get("checkpoint") or {}).get("note"),
        timeout=30,
        what="the locker holds a checkpoint",
    )
    with Store.open(db_url) as st:
        wait_for(lambda: (st.locker(SITE, "L1").state or {}).get("checkpoint"), timeout=20)
    ok = lockerctl("audit", "verify", "--broker", broker.address, db=db_url).stdout
    assert "locker L1: checkpoint of" in ok and ": consistent" in ok
