"""The locker's network link (firmware/locker/link.py, mqtt.py) against real parts: a real
mosquitto (harness.Broker), the real link on the MicroPython unix port driving a stand-in locker
(tests/firmware/link_scenarios.py), paho on the test side. Brokers that are down, killed, or
silent are real processes or real sockets too."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pwd
import socket
import threading
import zlib

import paho.mqtt.client as mqtt
import pytest
from harness import MICROPYTHON, ROOT, Broker, Process, free_port, wait_for

pytestmark = pytest.mark.slow

SCENARIO = ROOT / "tests" / "firmware" / "link_scenarios.py"
ROOT_TOPIC = "lockers/school/L1/"
FAST = {"backoff_min_s": 0.2, "backoff_max_s": 1}
SECRET = bytes(range(32))  # link_scenarios.py's default secret


def ack_mac(seq: int, jid: str, secret: bytes = SECRET) -> str:
    """docs/protocol.md, `ack`: HMAC-SHA256(HMAC-SHA256(S, "ack"), "<seq>|<jid>")[:16], hex."""
    key = hmac.new(secret, b"ack", hashlib.sha256).digest()
    return hmac.new(key, f"{seq}|{jid}".encode(), hashlib.sha256).digest()[:16].hex()


class Scenario:
    """The link under test in a MicroPython process; its `@@what {json}` lines, parsed."""

    def __init__(self, tmp_path, port, heapsize=None, **spec):
        spec = {"port": port, **spec}
        spec["settings"] = {**FAST, **spec.get("settings", {})}
        argv = [MICROPYTHON]
        if heapsize:
            argv += ["-X", f"heapsize={heapsize}"]
        argv += [SCENARIO, json.dumps(spec)]
        log = tmp_path / f"link-{free_port()}.log"
        self.process = Process(argv, log)

    def start(self):
        self.process.start()
        self.wait("ready")
        return self

    def records(self, what):
        prefix = f"@@{what} "
        return [
            json.loads(line[len(prefix) :])
            for line in self.process.output().splitlines()
            if line.startswith(prefix)
        ]

    def last(self, what):
        got = self.records(what)
        return got[-1] if got else None

    def wait(self, what, pred=lambda r: True, timeout=15.0):
        def found():
            if not self.process.alive():
                raise AssertionError("link process exited:\n" + self.process.output()[-3000:])
            for r in self.records(what):
                if pred(r):
                    return r or True
            return None

        try:
            return wait_for(found, timeout=timeout, what=f"@@{what}")
        except TimeoutError as e:
            raise AssertionError(f"{e}; link output:\n{self.process.output()[-3000:]}") from None

    def text(self):
        return self.process.output()

    def kill(self):
        self.process.kill()


class Watcher:
    """A paho client on the locker's topics: records what the locker publishes, sends to it."""

    def __init__(self, broker: Broker, topics=ROOT_TOPIC + "#", user=None, password=None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        if user:
            self.client.username_pw_set(user, password)
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topics, qos=1)
        self.client.loop_start()
        assert self.subscribed.wait(10), "watcher did not subscribe"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, leaf):
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == ROOT_TOPIC + leaf]

    def sent(self):
        """Every event published, a batch's members one by one (docs/protocol.md, `event`)."""
        out = []
        for p, _ in self.on("event"):
            got = json.loads(p)
            out += got if isinstance(got, list) else [got]
        return out

    def events(self):
        return [ev["seq"] for ev in self.sent()]

    def send(self, leaf, payload, retain=False):
        info = self.client.publish(ROOT_TOPIC + leaf, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def jid(self):
        """The journal id the locker's events carry (the newest one's)."""
        events = self.sent()
        return events[-1]["jid"] if events else "0123456789abcdef"

    def ack(self, seq, jid=None):
        """The host's ack: for the journal the locker's events name, with its MAC."""
        jid = jid or self.jid()
        self.send("ack", json.dumps({"seq": seq, "jid": jid, "mac": ack_mac(seq, jid)}))

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def run(tmp_path):
    started = []

    def make(port, **spec):
        s = Scenario(tmp_path, port, **spec).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.kill()


@pytest.fixture
def watcher(broker):
    w = Watcher(broker)
    yield w
    w.close()


def test_connect_publishes_status_and_state_retained_and_will_on_kill(broker, watcher, run):
    link = run(broker.port)
    wait_for(lambda: (b"online", False) in watcher.on("status"), what="status online")
    wait_for(lambda: watcher.on("state"), what="state")
    state = json.loads(watcher.on("state")[-1][0])
    assert state["online"] is True and state["locker"] == "L1"

    late = Watcher(broker)  # a subscriber arriving later gets both as retained messages
    try:
        wait_for(lambda: (b"online", True) in late.on("status"), what="retained status")
        wait_for(lambda: any(r for _, r in late.on("state")), what="retained state")
    finally:
        late.close()

    link.kill()  # no DISCONNECT: the broker publishes the last will
    wait_for(lambda: (b"offline", False) in watcher.on("status"), what="last will")
    late = Watcher(broker)
    try:
        wait_for(lambda: (b"offline", True) in late.on("status"), what="retained offline")
    finally:
        late.close()


def test_events_in_seq_order_within_window_and_acks_drop_them(broker, watcher, run):
    link = run(broker.port, events=40, settings={"event_window": 32})
    wait_for(lambda: len(watcher.events()) >= 32, what="a window of events")
    # The window holds 32 events in flight: the rest waits for an ack.
    link.wait("link", lambda r: r["sent_hi"] == 32)
    assert watcher.events() == list(range(1, 33))

    watcher.ack(32)
    link.wait("ack", lambda seq: seq == 32)
    wait_for(lambda: len(watcher.events()) >= 40, what="the rest after the ack")
    assert watcher.events() == list(range(1, 41))
    watcher.ack(40)
    link.wait("ack", lambda seq: seq == 40)
    # The state follows the journal: nothing pending any more.
    wait_for(lambda: json.loads(watcher.on("state")[-1][0])["pending"] == 0, what="pending 0")


def test_ack_beyond_highest_sent_is_ignored(broker, watcher, run):
    link = run(broker.port, events=40, settings={"event_window": 32})
    wait_for(lambda: len(watcher.events()) >= 32, what="a window of events")
    watcher.ack(35)  # 33..35 are journaled but were never sent
    link.wait("link", lambda r: r["acks_ignored"] == 1)
    assert link.records("ack") == []
    watcher.ack(20)
    link.wait("ack", lambda seq: seq == 20)
    assert link.records("ack") == [20]


def test_a_backlog_goes_in_batches_within_the_byte_bound_and_acks_are_cumulative(
    broker, watcher, run
):
    # 300 events waiting (an outage): several to a message, every message within
    # event_batch_bytes, several messages in flight, in seq order, each event once.
    link = run(
        broker.port,
        events=300,
        settings={"event_batch_bytes": 1024, "event_window": 1000, "ack_timeout_s": 2},
    )
    wait_for(lambda: len(watcher.events()) >= 300, what="the backlog")
    payloads = [p for p, _ in watcher.on("event")]
    assert watcher.events() == list(range(1, 301))
    assert all(len(p) <= 1024 for p in payloads)
    batches = [json.loads(p) for p in payloads]
    assert all(isinstance(b, list) for b in batches[:-1])  # only the last may be one event
    assert 300 / 1024 * 190 < len(batches) < 300 / 3  # about five events (190 bytes each) a time
    assert max(len(p) for p in payloads) > 1024 - 200  # filled: the next event did not fit
    link.wait("link", lambda r: r["sent_hi"] == 300)

    # An ack inside a batch covers everything up to it, and only that: what is resent after the
    # ack timeout starts right after it, in batches again.
    watcher.ack(137)
    link.wait("ack", lambda seq: seq == 137)
    wait_for(lambda: 300 in watcher.events()[300:], timeout=10, what="the resend")
    assert watcher.events()[300:] == list(range(138, 301))
    watcher.ack(300)
    link.wait("ack", lambda seq: seq == 300)
    wait_for(lambda: json.loads(watcher.on("state")[-1][0])["pending"] == 0, what="pending 0")


def test_a_live_event_goes_at_once_on_its_own(broker, watcher, run):
    # Nothing waiting: each new event is published as it is journaled, one JSON object a
    # message, without waiting for a batch to fill.
    link = run(broker.port, append_every_ms=200, append_max=4, append_when_online=True)
    wait_for(lambda: len(watcher.events()) >= 4, what="four live events")
    sent = [json.loads(p) for p, _ in watcher.on("event")]
    assert [ev["seq"] for ev in sent] == [1, 2, 3, 4]
    assert all(isinstance(ev, dict) for ev in sent)
    link.wait("link", lambda r: r["sent_hi"] == 4)


def test_unacknowledged_events_are_sent_again_from_the_last_ack(broker, watcher, run):
    link = run(broker.port, events=3, settings={"ack_timeout_s": 1})
    wait_for(lambda: watcher.events().count(3) >= 2, what="a resend")
    seqs = watcher.events()
    assert seqs[:6] == [1, 2, 3, 1, 2, 3]
    watcher.ack(2)
    link.wait("ack", lambda seq: seq == 2)
    count_3 = watcher.events().count(3)
    wait_for(lambda: watcher.events().count(3) > count_3, what="resend of 3 only")
    after_ack = watcher.events()[len(seqs) :]
    assert 1 not in after_ack[after_ack.index(3) :] and 2 not in after_ack[after_ack.index(3) :]
    link.wait("link", lambda r: r["resends"] >= 2)


def test_broker_down_at_start_then_up(tmp_path, run):
    port = free_port()
    link = run(port, events=2)
    link.wait("tick", lambda r: r["count"] >= 50)
    assert "no broker" in link.text()
    broker = Broker(tmp_path, port=port).start()
    try:
        w = Watcher(broker)
        try:
            wait_for(lambda: w.events()[:2] == [1, 2], timeout=15, what="events once up")
            link.wait("online", lambda v: v is True)
        finally:
            w.close()
    finally:
        broker.kill()


def test_broker_killed_and_restarted_reconnects_and_resubscribes(tmp_path, run):
    port = free_port()
    broker = Broker(tmp_path, port=port).start()
    try:
        w = Watcher(broker)
        link = run(port, events=2, append_every_ms=300, append_max=100)
        wait_for(lambda: w.events()[:2] == [1, 2], what="first events")
        w.close()
        broker.kill()
        link.wait("online", lambda v: v is False)
        broker = Broker(tmp_path, port=port).start()
        w = Watcher(broker)
        link.wait("link", lambda r: r["connects"] >= 2)
        link.wait("online", lambda v: v is True)
        # Subscriptions are back: an ack and a command reach the locker on the new connection.
        wait_for(lambda: w.events(), what="events after the restart")
        top = max(w.events())
        w.ack(top)
        link.wait("ack", lambda seq: seq == top)
        w.send("cmd", b'{"op": "hello"}')
        link.wait("cmd", lambda r: r["text"] == '{"op": "hello"}')
        w.close()
    finally:
        broker.kill()


class SilentServer:
    """A "broker" that accepts connections and then never reads or says anything (or, with
    connack=True, answers CONNECT once and then goes silent)."""

    def __init__(self, connack=False):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connack = connack
        self.accepted = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            if self.connack:
                conn.recv(1)  # the CONNECT has arrived (enough of it)
                conn.sendall(b"\x20\x02\x00\x00")

    def close(self):
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_silent_broker_never_stalls_the_locker(run):
    server = SilentServer()
    try:
        link = run(server.port, events=5, settings={"connect_timeout_s": 1})
        wait_for(
            lambda: link.text().count("no broker (timed out)") >= 2,
            timeout=20,
            what="two connect attempts timing out",
        )
        assert len(server.accepted) >= 2
        tick = link.last("tick")
        # The counter task ran throughout: it never waited for the link (a link that blocked
        # in connect would have stopped it for the whole second of each attempt).
        assert tick["count"] >= 50
        assert tick["worst_gap_ms"] < 900
        link.wait("tick", lambda r: r["count"] > tick["count"])
    finally:
        server.close()


def test_broker_silent_after_connack_is_detected_by_keepalive(run):
    server = SilentServer(connack=True)
    try:
        link = run(server.port, events=5, settings={"keepalive_s": 1})
        link.wait("link", lambda r: r["connects"] >= 2, timeout=20)
        assert "disconnected (timed out)" in link.text()
        assert len(server.accepted) >= 2
        assert link.last("tick")["worst_gap_ms"] < 900
    finally:
        server.close()


def test_oversized_messages_are_discarded_without_memory_blowup(broker, watcher, run):
    link = run(broker.port, heapsize="96k", max_config_bytes=131072)
    link.wait("online", lambda v: v is True)
    big = os.urandom(300_000)  # three times the heap: it can only be discarded piece by piece
    watcher.send("config", big, retain=True)
    r = link.wait("config_discarded")
    assert r["length"] == 300_000
    assert r["mem_free"] > 32_000  # of 96 KB: nothing of it was buffered
    watcher.send("cmd", b"x" * 5000)
    link.wait("cmd_rejected", lambda reason: reason == "too_large")

    # The connection is still in step: what follows arrives intact.
    cmd = b'{"id": 1, "op": "open", "bay": 3}'
    watcher.send("cmd", cmd)
    r = link.wait("cmd")
    assert r["length"] == len(cmd) and r["crc"] == zlib.crc32(cmd)

    # A config larger than the heap but within max_config_bytes is streamed, never held.
    cfg = os.urandom(120_000)
    watcher.send("config", cfg, retain=True)
    r = link.wait("config", lambda r: r["length"] == 120_000)
    assert r["received"] == 120_000 and r["crc"] == zlib.crc32(cfg)
    assert r["biggest_chunk"] <= 512 and r["chunks"] >= 120_000 // 512
    assert r["mem_free"] > 32_000
    assert link.process.alive()


def test_config_is_streamed_in_chunks_and_retained_config_arrives_on_connect(broker, run):
    cfg = bytes(range(256)) * 20  # 5120 bytes
    w = Watcher(broker)
    try:
        w.send("config", cfg, retain=True)
    finally:
        w.close()
    link = run(broker.port)
    r = link.wait("config")
    assert r["length"] == r["received"] == len(cfg)
    assert r["crc"] == zlib.crc32(cfg)
    assert r["chunks"] == 10 and r["biggest_chunk"] == 512


def test_broker_that_stops_reading_is_dropped_by_the_send_timeout(run):
    # Keepalive off: only the bound on each send can notice a broker whose receive buffer is full.
    server = SilentServer(connack=True)
    try:
        link = run(
            server.port,
            events=2000,
            settings={
                "keepalive_s": 0,
                "write_timeout_s": 1,
                "event_window": 2000,
                "ack_timeout_s": 1,  # resends keep the data coming until the buffers are full
            },
        )
        link.wait("link", lambda r: r["connects"] >= 2, timeout=20)
        assert "disconnected (timed out)" in link.text()
        assert link.last("tick")["worst_gap_ms"] < 900
    finally:
        server.close()


def test_tls_with_the_site_ca(tmp_path, run):
    from lockerctl import broker as site_broker

    ca_key, ca_crt = site_broker.make_ca("school")
    key, crt = site_broker.make_server_cert(ca_key, ca_crt, ["localhost", "127.0.0.1"])
    for name, data in (("ca.crt", ca_crt), ("server.key", key), ("server.crt", crt)):
        (tmp_path / name).write_bytes(data)
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"cafile {tmp_path / 'ca.crt'}\ncertfile {tmp_path / 'server.crt'}\n"
        f"keyfile {tmp_path / 'server.key'}\ntls_version tlsv1.2\n"
        # as root, mosquitto would switch to its own user, who cannot read the test's files
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
    )
    broker = Broker(tmp_path, conf=conf, port=port).start()
    try:
        link = run(port, events=3, tls=True, ca=str(tmp_path / "ca.crt"), heapsize="96k")
        link.wait("link", lambda r: r["connects"] == 1 and r["sent_hi"] == 3)
        link.wait("online", lambda v: v is True)

        # A broker whose certificate the site CA did not sign is refused.
        other_key, other_crt = site_broker.make_ca("elsewhere")
        (tmp_path / "other.crt").write_bytes(other_crt)
        wrong = run(port, tls=True, ca=str(tmp_path / "other.crt"))
        wait_for(lambda: "no broker (MQTTError: TLS:" in wrong.text(), what="a refused handshake")
        assert wrong.last("link")["connects"] == 0
    finally:
        broker.kill()


def test_real_journal_acked_events_stay_acked_across_a_restart(tmp_path, broker, watcher, run):
    journal = str(tmp_path / "journal")
    first = run(broker.port, events=10, journal_dir=journal)
    wait_for(lambda: watcher.events()[:10] == list(range(1, 11)), what="10 events")
    sent = watcher.sent()
    assert sent[0]["type"] == "deposit" and sent[0]["person"] == "P0000"  # events.to_json
    watcher.ack(6)
    first.wait("ack", lambda seq: seq == 6)
    first.kill()

    n = len(watcher.events())
    second = run(broker.port, events=2, journal_dir=journal)  # seq 11 and 12 on top
    wait_for(lambda: 12 in watcher.events()[n:], what="the new events")
    again = watcher.events()[n:]
    assert again[:6] == [7, 8, 9, 10, 11, 12]  # what was not acknowledged, then the new ones
    watcher.ack(12)
    second.wait("ack", lambda seq: seq == 12)
    wait_for(lambda: json.loads(watcher.on("state")[-1][0])["pending"] == 0, what="pending 0")


def event_mac(ev: dict, secret: bytes = SECRET) -> str:
    """docs/protocol.md, `event`, computed here with CPython's hmac (not the firmware's code)."""
    key = hmac.new(secret, b"event", hashlib.sha256).digest()
    fields = [ev[k] for k in ("seq", "ts", "type", "bay", "person", "by", "reason", "jid")]
    text = "|".join("" if v is None else str(v) for v in fields)
    return hmac.new(key, text.encode(), hashlib.sha256).digest()[:16].hex()


def test_events_carry_the_journal_id_and_a_mac_that_checks(tmp_path, broker, watcher, run):
    journal = str(tmp_path / "journal")
    first = run(broker.port, events=3, journal_dir=journal)
    wait_for(lambda: watcher.events()[:3] == [1, 2, 3], what="3 events")
    sent = watcher.sent()
    jid = sent[0]["jid"]
    assert len(jid) == 16 and int(jid, 16) >= 0 and jid == jid.lower()
    for ev in sent:
        assert list(ev) == ["seq", "ts", "type", "bay", "person", "by", "reason", "jid", "mac"]
        assert ev["jid"] == jid and ev["mac"] == event_mac(ev)
        assert event_mac(ev, secret=bytes(32)) != ev["mac"]
    first.kill()
    n = len(watcher.events())
    run(broker.port, events=1, journal_dir=journal)  # the same journal after a restart
    wait_for(lambda: 4 in watcher.events()[n:], what="the new event")
    again = watcher.sent()[n:]
    assert {ev["jid"] for ev in again} == {jid}


def test_forged_acks_never_drop_events(tmp_path, broker, watcher, run):
    """Anyone with the locker's broker password can publish on its `ack` topic: an ack without
    the host's MAC, with a wrong one, or for another journal is ignored and counted, and the
    events stay on flash until the genuine ack."""
    journal = str(tmp_path / "journal")
    first = run(broker.port, events=5, journal_dir=journal)
    wait_for(lambda: watcher.events()[:5] == [1, 2, 3, 4, 5], what="5 events")
    jid = watcher.jid()
    other = "f" * 16 if jid != "f" * 16 else "e" * 16
    forged = [
        {"seq": 5},
        {"seq": 5, "jid": jid},
        {"seq": 5, "jid": jid, "mac": None},
        {"seq": 5, "jid": jid, "mac": "00" * 16},
        {"seq": 5, "jid": jid, "mac": ack_mac(5, jid)[:31]},
        {"seq": 5, "jid": jid, "mac": ack_mac(5, jid, secret=bytes(32))},  # another key
        {"seq": 5, "jid": jid, "mac": ack_mac(4, jid)},  # the MAC of another seq
        {"seq": 5, "jid": other, "mac": ack_mac(5, other)},  # genuine, for another journal
        {"seq": 5, "mac": ack_mac(5, jid)},
    ]
    for ack in forged:
        watcher.send("ack", json.dumps(ack))
    first.wait("link", lambda r: r["acks_ignored"] == len(forged))
    assert first.records("ack") == []
    first.kill()

    n = len(watcher.events())
    second = run(broker.port, journal_dir=journal)
    wait_for(lambda: watcher.events()[n:][:5] == [1, 2, 3, 4, 5], what="all 5 sent again")
    watcher.send("ack", json.dumps({"seq": 3, "jid": jid, "mac": ack_mac(3, jid).upper()}))
    second.wait("ack", lambda seq: seq == 3)
    assert second.last("link")["acks_ignored"] == 0


def test_site_broker_with_passwords_and_acl(tmp_path, run):
    from lockerctl import broker as site_broker

    (tmp_path / "passwd").write_text(
        site_broker.password_file([("L1", "locker-pw"), ("host", "host-pw")])
    )
    (tmp_path / "acl").write_text(site_broker.acl_text("school", ["L1"], "host"))
    port = free_port()
    conf = tmp_path / "site.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n"
        f"password_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n"
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
    )
    broker = Broker(tmp_path, conf=conf, port=port).start()
    host = Watcher(broker, topics="lockers/school/+/#", user="host", password="host-pw")
    try:
        link = run(port, events=3, user="L1", password="locker-pw")
        wait_for(lambda: host.events() == [1, 2, 3], what="events through the ACL")
        assert (b"online", False) in host.on("status")
        host.ack(3)  # the host account may write the locker's ack; the locker may read it
        link.wait("ack", lambda seq: seq == 3)

        refused = run(port, locker_id="L1", user="L1", password="wrong")
        wait_for(lambda: "no broker (MQTTError: 5)" in refused.text(), what="refused login")
        assert refused.last("link")["connects"] == 0
    finally:
        host.close()
        broker.kill()
