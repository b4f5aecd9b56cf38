"""Ingest against a real mosquitto and a real SQLite store: each event stored exactly once,
duplicates counted, bad payloads survived, `ack` only after the commit and only up to the first
gap. The service runs in this process (lockerctl.serve.Service) so that a test can wrap its store;
the lockers are played by a paho client publishing the payloads of docs/protocol.md."""

import json
import secrets
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import lockerctl, verify_as_locker, wait_for  # noqa: E402
from lockerctl.clibase import Site  # noqa: E402
from lockerctl.serve import Service, open_store  # noqa: E402

SITE = "school"
# The lockers' keys (deterministic, so that the test rig below can MAC events as a locker does)
SECRETS = {name: bytes([n]) * 32 for n, name in enumerate(("L1", "L2", "L9"), 1)}
JID = "00000000000000a1"  # the rig's journal id


def signed(locker, payload):
    """`payload` as locker `locker` sends it: an event object gets its journal id and MAC
    (docs/protocol.md); anything else is sent as it is."""
    from lockerctl import keys

    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError, TypeError):
        return payload
    if not isinstance(obj, dict) or "mac" in obj or locker not in SECRETS:
        return payload
    obj.setdefault("jid", JID)
    obj["mac"] = keys.event_mac(SECRETS[locker], obj)
    return json.dumps(obj)


def event(seq, type_="deposit", bay=1, person="P001", **kw):
    ev = {
        "seq": seq,
        "ts": 1790000000,
        "type": type_,
        "bay": bay,
        "person": person,
        "by": None,
        "reason": None,
    }
    ev.update(kw)
    return json.dumps(ev)


class Locker:
    """A paho client publishing as lockers and recording every ack the host sends."""

    def __init__(self, broker):
        self.acks: dict[str, list[int]] = {}
        self.payloads: list[tuple[str, dict]] = []  # every ack as it came
        self.on_ack = None
        self.cond = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"lockers/{SITE}/+/ack", qos=1)
        assert subscribed.wait(5)

    def _on_message(self, client, userdata, msg):
        from lockerctl import keys

        locker = msg.topic.split("/")[2]
        ack = json.loads(msg.payload)
        seq = ack["seq"]
        # every ack names the journal and is MACed with the locker's key (issue 13)
        assert ack["jid"] == JID and ack["mac"] == keys.ack_mac(SECRETS[locker], seq, JID)
        if self.on_ack:
            self.on_ack(locker, seq)
        with self.cond:
            self.payloads.append((locker, json.loads(msg.payload)))
            self.acks.setdefault(locker, []).append(seq)
            self.cond.notify_all()

    def publish(self, locker, payload, leaf="event", retain=False):
        if leaf == "event":
            payload = signed(locker, payload)
        self.client.publish(
            f"lockers/{SITE}/{locker}/{leaf}", payload, qos=1, retain=retain
        ).wait_for_publish(5)

    def wait_ack(self, locker, seq, timeout=10):
        with self.cond:
            ok = self.cond.wait_for(lambda: seq in self.acks.get(locker, []), timeout)
        assert ok, f"no ack {seq} for {locker}; got {self.acks.get(locker)}"

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def site(db_url, broker):
    st = open_store(db_url)  # what `lockerctl locker add` does, without a process per locker
    for locker in ("L1", "L2"):
        st.add_locker(SITE, locker, 8, SECRETS[locker], secrets.token_hex(16))
    return Site(db=db_url, site=SITE, broker_host=broker.host, broker_port=broker.port)


@pytest.fixture
def locker(broker):
    lk = Locker(broker)
    yield lk
    lk.close()


@pytest.fixture
def start_service(site):
    started = []

    def start(store_factory=None, **kw):
        svc = Service(
            site,
            client_id=f"serve-{uuid.uuid4().hex[:8]}",
            store_factory=store_factory,
            **{"max_wait": 0.02, **kw},
        )
        svc.ingestor.retry_delay = 0.05
        svc.start()
        assert svc.connected.wait(10), "service did not connect"
        assert svc.ready.wait(10), "the ingest link did not subscribe"
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


def stored(db_url, locker):
    st = open_store(db_url)
    return sorted(ev["seq"] for ev in _events(st, locker))


def _events(st, locker):
    for row in st.events(SITE, locker=locker):
        yield row if isinstance(row, dict) else dict(row._mapping)


@pytest.mark.parametrize("writer_process", [False, True], ids=["thread", "process"])
def test_each_event_stored_once_and_resends_counted(
    site, db_url, locker, start_service, writer_process
):
    svc = start_service(writer_process=writer_process)
    for seq in range(1, 51):
        locker.publish("L1", event(seq))
    locker.wait_ack("L1", 50)
    for seq in range(1, 51):  # the locker lost the ack and sends everything again
        locker.publish("L1", event(seq))
    wait_for(lambda: open_store(db_url).duplicates(SITE) == 50, what="50 duplicates counted")
    wait_for(lambda: locker.acks["L1"].count(50) >= 2, what="the resend acknowledged")
    assert stored(db_url, "L1") == list(range(1, 51))
    assert svc.ingestor.stats.received == 100  # stored or counted as duplicates


@pytest.mark.parametrize("writer_process", [False, True], ids=["thread", "process"])
def test_bad_payloads_are_dropped_and_the_service_goes_on(
    site, db_url, locker, start_service, writer_process
):
    svc = start_service(writer_process=writer_process)
    bad = [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"ts": 1, "type": "deposit"}),  # no seq
        event(0),
        event("1"),
        event(True),
        event(2, type_=5),
        event(2, type_="Deposit; DROP TABLE"),
        event(2, bay="3"),
        event(2, ts="yesterday"),
        event(2, person=["P1"]),
        event(2, reason="x" * 1000),
    ]
    for payload in bad:
        locker.publish("L1", payload)
    locker.publish("L1", b"maybe", leaf="status")
    locker.publish("L1", b"{", leaf="state")
    locker.publish("L1", event(1))
    locker.wait_ack("L1", 1)
    assert stored(db_url, "L1") == [1]
    # not JSON (2), status and state: bad payloads; the rest, MACed by the rig, are events no
    # firmware can send (the array's two members each): refused one by one (issue 13)
    assert svc.ingestor.stats.bad == 4
    wait_for(lambda: svc.ingestor.stats.impossible == len(bad) - 2 + 1, what="refusals counted")


@pytest.mark.parametrize("writer_process", [False, True], ids=["thread", "process"])
def test_a_poison_payload_nested_too_deep_is_one_bad_payload(
    site, db_url, locker, start_service, writer_process
):
    """JSON nested thousands deep makes json.loads raise RecursionError, not ValueError: it is
    a bad payload like any other, even retained (it comes back at every resubscribe)."""
    svc = start_service(writer_process=writer_process)
    locker.publish("L1", b"[" * 100000, leaf="state", retain=True)
    locker.publish("L1", b'{"seq": 1, "ts": 1, "type": ' + b"[" * 5000 + b"}")
    locker.publish("L1", event(1))
    locker.wait_ack("L1", 1)
    assert stored(db_url, "L1") == [1]
    wait_for(lambda: svc.ingestor.stats.bad == 2, what="two bad payloads counted")
    locker.publish("L1", b"", leaf="state", retain=True)  # clear the retained poison


def test_ack_covers_only_events_stored_without_a_gap(site, db_url, locker, start_service):
    start_service()
    for seq in (1, 2, 4, 5):
        locker.publish("L1", event(seq))
    locker.wait_ack("L1", 2)
    time.sleep(0.3)
    assert max(locker.acks["L1"]) == 2  # 4 and 5 are stored but 3 is missing
    assert stored(db_url, "L1") == [1, 2, 4, 5]
    locker.publish("L1", event(3))
    locker.wait_ack("L1", 5)
    assert stored(db_url, "L1") == [1, 2, 3, 4, 5]


def test_each_locker_gets_its_own_ack(site, db_url, locker, start_service):
    start_service()
    for seq in range(1, 4):
        locker.publish("L1", event(seq))
    locker.publish("L2", event(1))
    locker.wait_ack("L1", 3)
    locker.wait_ack("L2", 1)
    assert max(locker.acks["L2"]) == 1


def test_ack_is_sent_only_after_the_commit(site, db_url, locker, start_service):
    """When an ack arrives, a separate connection to the store already sees every event it
    covers."""
    seen_at_ack = []
    locker.on_ack = lambda lk, seq: seen_at_ack.append((seq, stored(db_url, lk)))
    start_service()
    for seq in range(1, 201):
        locker.publish("L1", event(seq))
    locker.wait_ack("L1", 200)
    assert seen_at_ack
    for seq, present in seen_at_ack:
        assert present[:seq] == list(range(1, seq + 1)), f"ack {seq} before its commit"


class FailingStore:
    """The real store, except that `ingest` fails in a chosen way a number of times."""

    def __init__(self, url, fail_before=0, fail_after=0):
        self.real = open_store(url)
        self.fail_before = fail_before  # the commit does not happen
        self.fail_after = fail_after  # the commit happens, then the process "dies"

    def ingest_journals(self, site, batch, max_ahead=None):
        if self.fail_before:
            self.fail_before -= 1
            raise OSError("disk I/O error")
        acks = self.real.ingest_journals(site, batch, max_ahead)
        if self.fail_after:
            self.fail_after -= 1
            raise OSError("killed after commit")
        return acks

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_no_ack_when_the_commit_fails(site, db_url, locker, start_service):
    failing = FailingStore(db_url, fail_before=2)  # the batch and its retry
    start_service(store_factory=lambda: failing)
    locker.publish("L1", event(1))
    wait_for(lambda: failing.fail_before == 0, what="commit attempts")
    time.sleep(0.2)
    assert "L1" not in locker.acks
    assert stored(db_url, "L1") == []
    # the disk is back; the locker resends what was not acknowledged
    locker.publish("L1", event(1))
    locker.wait_ack("L1", 1)
    assert stored(db_url, "L1") == [1]


def test_lost_ack_after_commit_is_repaired_by_the_resend(site, db_url, locker, start_service):
    failing = FailingStore(db_url, fail_after=2)  # the batch and its single-event retry
    start_service(store_factory=lambda: failing)
    locker.publish("L1", event(1))
    wait_for(lambda: failing.fail_after == 0, what="the failed commit")
    time.sleep(0.2)
    assert "L1" not in locker.acks
    assert stored(db_url, "L1") == [1]  # committed, not acknowledged
    locker.publish("L1", event(1))  # the locker resends
    locker.wait_ack("L1", 1)
    assert stored(db_url, "L1") == [1]
    assert open_store(db_url).duplicates(SITE) >= 1


def test_unregistered_locker_is_not_stored(site, db_url, locker, start_service):
    svc = start_service()
    locker.publish("L9", event(1))
    locker.publish("L1", event(1))
    locker.wait_ack("L1", 1)
    wait_for(lambda: svc.ingestor.stats.unknown_locker == 1, what="the unknown locker counted")
    assert "L9" not in locker.acks


def test_status_and_state_are_recorded(site, db_url, locker, start_service):
    start_service()
    state = {
        "locker": "L1",
        "clock_ok": True,
        "online": True,
        "pending": 0,
        "config": 3,
        "bays": [],
    }
    locker.publish("L1", b"online", leaf="status", retain=True)
    locker.publish("L1", json.dumps(state), leaf="state", retain=True)

    def row():
        r = open_store(db_url).locker(SITE, "L1")
        return r if isinstance(r, dict) else r._mapping

    wait_for(lambda: row()["online"], what="L1 online")
    wait_for(lambda: _state(row()) == state, what="L1 state")
    locker.publish("L1", b"offline", leaf="status", retain=True)
    wait_for(lambda: not row()["online"], what="L1 offline")


def _state(row):
    for name in ("state", "last_state"):
        if name in row:
            value = row[name]
            return json.loads(value) if isinstance(value, str) else value
    raise AssertionError(f"no state column in {list(row)}")


@pytest.mark.parametrize("writer_process", [False, True], ids=["thread", "process"])
def test_stop_commits_and_acks_what_was_received(
    site, db_url, locker, start_service, writer_process
):
    svc = start_service(max_batch=5, max_wait=0.2, writer_process=writer_process)
    for seq in range(1, 101):
        locker.publish("L1", event(seq))
    wait_for(lambda: svc.ingestor.stats.queued == 100, what="all 100 received")
    svc.stop()
    assert stored(db_url, "L1") == list(range(1, 101))
    locker.wait_ack("L1", 100)


ROSTER = """person_id,name,role,year,walk_home,card_uid
P001,Ada Pupil,pupil,6,yes,04A1B2C3
S001,Sam Staff,staff,,no,04D4E5F6
H001,Hana Head,slt,,no,04778899
"""

TIMETABLE = """timezone = "Europe/London"
home_time = "15:15"
y6_release_minutes = 10
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["2026-09-03", "2026-10-23"]]
"""


class ConfigWatcher:
    def __init__(self, broker):
        self.bundles: dict[str, list[bytes]] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"lockers/{SITE}/+/config", qos=1)

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.bundles.setdefault(msg.topic.split("/")[2], []).append(msg.payload)
            self.cond.notify_all()

    def latest(self, locker, secret, min_version=1, timeout=10):
        from lockerctl.bundle import read_bundle

        def newest():
            got = self.bundles.get(locker)
            if got:
                b = read_bundle(secret, got[-1])
                if b["version"] >= min_version:
                    return b
            return None

        with self.cond:
            b = self.cond.wait_for(newest, timeout)
        assert b, f"no config >= v{min_version} for {locker}"
        return b

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_config_published_retained_and_again_after_a_change(
    site, db_url, broker, tmp_path, start_service
):
    st = open_store(db_url)
    secret = {r.id: bytes(r.secret) for r in st.lockers(SITE)}
    start_service()
    watcher = ConfigWatcher(broker)  # subscribes after the publish: the bundles are retained
    try:
        first = watcher.latest("L1", secret["L1"])
        assert first["version"] == st.config_version(SITE)
        assert first["header"]["locker"] == "L1" and first["cards"] == []
        assert watcher.latest("L2", secret["L2"])["header"]["locker"] == "L2"
        # another process changes the roster and the timetable: republished within seconds
        (tmp_path / "roster.csv").write_text(ROSTER)
        (tmp_path / "tt.toml").write_text(TIMETABLE)
        lockerctl("roster", "import", tmp_path / "roster.csv", db=db_url)
        lockerctl("timetable", "set", tmp_path / "tt.toml", db=db_url)
        version = open_store(db_url).config_version(SITE)
        assert version > first["version"]
        newer = watcher.latest("L1", secret["L1"], min_version=version, timeout=5)
        assert sorted(c["person_id"] for c in newer["cards"]) == ["H001", "P001", "S001"]
        tt = newer["header"]["timetable"]
        assert tt["home_time"] == 15 * 60 + 15 and tt["terms"] == [[20260903, 20261023]]
        assert tt["offsets"]
        with pytest.raises(ValueError):  # signed with L1's key, not L2's
            from lockerctl.bundle import read_bundle

            read_bundle(secret["L2"], watcher.bundles["L1"][-1])
    finally:
        watcher.close()


def test_open_command_is_signed_recorded_and_published(site, db_url, broker, tmp_path, locker):
    (tmp_path / "roster.csv").write_text(ROSTER)
    lockerctl("roster", "import", tmp_path / "roster.csv", db=db_url)
    cmds = []
    got = threading.Event()

    def on_cmd(client, userdata, msg):
        cmds.append(msg.payload)
        got.set()

    locker.client.message_callback_add(f"lockers/{SITE}/L1/cmd", on_cmd)
    locker.client.subscribe(f"lockers/{SITE}/L1/cmd", qos=1)
    time.sleep(0.2)
    args = ("open", "L1", "3", "--by", "S001", "--reason", "medical", "--broker", broker.address)
    out = lockerctl(*args, db=db_url)
    assert "sent open 3 to L1" in out.stdout
    assert got.wait(5)
    secret = bytes(open_store(db_url).locker(SITE, "L1").secret)
    cmd = verify_as_locker(cmds[0], secret, "L1", 0, int(time.time()))
    assert (cmd["op"], cmd["bay"], cmd["by"], cmd["reason"]) == ("open", 3, "S001", "medical")
    # a second open gets a higher id
    lockerctl(
        "open",
        "L1",
        "all",
        "--by",
        "S001",
        "--reason",
        "fire drill",
        "--broker",
        broker.address,
        db=db_url,
    )
    wait_for(lambda: len(cmds) == 2, what="second command")
    second = verify_as_locker(cmds[1], secret, "L1", cmd["id"], int(time.time()))
    assert second["bay"] == "all" and second["id"] > cmd["id"]
    actions = open_store(db_url).trail_actions(SITE)
    opens = [a for a in actions if "open" in json.dumps(a, default=str)]
    assert len(opens) >= 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("L1", "3", "--by", "S001", "--reason", "  "), "--reason must not be empty"),
        (("L1", "3", "--by", "NOBODY", "--reason", "x"), "not a person on the roster"),
        (("L1", "9", "--by", "S001", "--reason", "x"), "bay 9 does not exist"),
        (("L1", "left", "--by", "S001", "--reason", "x"), "bay must be a number"),
        (("L7", "1", "--by", "S001", "--reason", "x"), "no locker 'L7'"),
        (("L1", "1", "--by", "S001", "--reason", "x"), "cannot reach the broker"),
    ],
)
def test_open_refuses_bad_requests_with_one_line(site, db_url, tmp_path, args, message):
    (tmp_path / "roster.csv").write_text(ROSTER)
    lockerctl("roster", "import", tmp_path / "roster.csv", db=db_url)
    before = len(open_store(db_url).trail_actions(SITE))
    proc = lockerctl("open", *args, "--broker", "127.0.0.1:9", db=db_url, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert len(open_store(db_url).trail_actions(SITE)) == before  # nothing recorded


def test_events_sent_while_serve_is_away_wait_in_its_session(site, db_url, locker):
    """A fixed client id and a persistent session: QoS 1 events published while serve is
    stopped are delivered when it comes back."""
    client_id = f"serve-{uuid.uuid4().hex[:8]}"
    first = Service(site, client_id=client_id).start()
    assert first.ready.wait(10)
    first.stop()
    for seq in (1, 2, 3):
        locker.publish("L1", event(seq))
    second = Service(site, client_id=client_id).start()
    try:
        locker.wait_ack("L1", 3)
        assert stored(db_url, "L1") == [1, 2, 3]
    finally:
        second.stop()


def test_config_republished_after_the_broker_restarts(site, db_url, broker, start_service):
    """A broker restarted without persistence has lost the retained bundles: serve publishes
    them again when it reconnects."""
    from harness import Broker

    st = open_store(db_url)
    secret = bytes(st.locker(SITE, "L1").secret)
    svc = start_service()
    watcher = ConfigWatcher(broker)
    watcher.latest("L1", secret)
    watcher.close()
    broker.kill()
    svc.connected.clear()
    again = Broker(broker.workdir, port=broker.port).start()
    try:
        assert svc.connected.wait(20), "serve did not reconnect"
        watcher = ConfigWatcher(again)
        try:
            assert watcher.latest("L1", secret)["version"] == st.config_version(SITE)
        finally:
            watcher.close()
    finally:
        again.kill()


def test_parse_event_fills_absent_optional_fields_and_ignores_extra_keys():
    from lockerctl.payloads import parse_event

    ev = parse_event(
        b'{"seq": 7, "ts": null, "type": "boot", "fw": "1.0", "jid": "%s", "mac": "%s"}'
        % (JID.encode(), b"0" * 32)
    )
    assert ev == {
        "seq": 7,
        "ts": None,
        "type": "boot",
        "bay": None,
        "person": None,
        "by": None,
        "reason": None,
        "jid": JID,
        "mac": "0" * 32,
        "unknown_type": False,
    }


def test_bad_payload_lines_are_limited_per_minute(caplog):
    from lockerctl.ingest import Ingestor

    ingestor = Ingestor(None, SITE, None)
    with caplog.at_level("WARNING", logger="lockerctl.serve"):
        for _ in range(ingestor.bad_log_limit + 30):
            ingestor._parse(f"lockers/{SITE}/L1/event", b"junk")
    assert ingestor.stats.bad == ingestor.bad_log_limit + 30
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == ingestor.bad_log_limit
    assert lines[0] == f"bad event on lockers/{SITE}/L1/event: not JSON (JSONDecodeError)"


def test_a_dead_ingest_process_is_started_again(site, db_url, locker, start_service):
    svc = start_service(writer_process=True)
    locker.publish("L1", event(1))
    locker.wait_ack("L1", 1)
    first = svc.ingest.proc
    first.kill()
    first.join(5)
    wait_for(lambda: svc.ingest.proc is not first, what="a new ingest process")
    assert svc.ready.wait(15), "the new ingest process did not subscribe"
    for seq in (2, 3):
        locker.publish("L1", event(seq))
    locker.wait_ack("L1", 3)
    assert stored(db_url, "L1") == [1, 2, 3]
    wait_for(lambda: svc.ingestor.stats.received >= 3, what="the counts of both processes")


def test_a_stop_never_leaves_the_ingest_process_behind(site, db_url, locker, start_service):
    """An ingest process stuck in the store (another writer holds SQLite's lock; it would wait
    its 30 s busy timeout per attempt) is killed when it does not stop in time."""
    import sqlite3

    svc = start_service(writer_process=True)
    blocker = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=1)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        locker.publish("L1", event(1))
        time.sleep(0.5)  # the child is in its commit now, waiting for the lock
        child = svc.ingest.proc
        t0 = time.monotonic()
        svc.ingest.stop(timeout=1)
        assert time.monotonic() - t0 < 10
        assert not child.is_alive()
    finally:
        blocker.rollback()
        blocker.close()
    assert stored(db_url, "L1") == []  # rolled back with the process: the locker sends it again


class RefusingStore:
    """The real store, refusing any batch that holds L2's event 1 (as a constraint would)."""

    def __init__(self, url):
        self.real = open_store(url)
        self.refuse = True

    def ingest_journals(self, site, batch, max_ahead=None):
        if self.refuse and ("L2", 1) in {(lk, ev["seq"]) for lk, ev in batch}:
            raise ValueError("CHECK constraint failed")
        return self.real.ingest_journals(site, batch, max_ahead)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_one_refused_event_does_not_hold_back_the_others(site, db_url, locker, start_service):
    refusing = RefusingStore(db_url)
    svc = start_service(store_factory=lambda: refusing)
    svc.ingestor.max_wait = 0.3  # all four in one batch
    for lk, seq in (("L1", 1), ("L2", 1), ("L1", 2), ("L2", 2)):
        locker.publish(lk, event(seq))
    locker.wait_ack("L1", 2)
    assert stored(db_url, "L1") == [1, 2]
    assert stored(db_url, "L2") == [2]
    assert "L2" not in locker.acks  # 1 is missing: nothing to acknowledge yet
    refusing.refuse = False
    locker.publish("L2", event(1))  # the locker sends it again
    locker.wait_ack("L2", 2)
