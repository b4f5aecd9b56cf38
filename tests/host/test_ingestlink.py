"""The ingest link against brokers that misbehave: silent before CONNACK, refusing, silent after
SUBACK (keepalive), dropping the connection with messages not yet committed. The broker is a
scripted TCP server speaking the bytes MQTT 3.1.1 specifies; the link runs in a thread and
commits into a recording `Ingestor` stand-in."""

import logging
import os
import socket
import threading
import time

from lockerctl import mqttwire as wire
from lockerctl.ingest import Stats
from lockerctl.ingestlink import Endpoint, IngestLink

CONNACK_OK = b"\x20\x02\x00\x00"
SUBACK_OK = b"\x90\x05\x00\x01\x01\x01\x01"


class Recording:
    """What IngestLink needs of an Ingestor: settings, counters, `write(raw)`."""

    def __init__(self, max_wait=0.02):
        self.max_batch = 2000
        self.max_wait = max_wait
        self.stats = Stats()
        self.publish_ack = None
        self.batches = []

    def write(self, raw):
        self.batches.append(list(raw))
        for topic, _payload in raw:
            self.publish_ack(topic.split("/")[2], {"seq": 1})


class ScriptedBroker:
    """Accepts connections; `script(conn, received)` plays the broker's side of each one."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = bytearray()  # everything any client sent
        self._conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._play, args=(conn,), daemon=True).start()

    def _play(self, conn):
        try:
            self.script(conn, self)
        except OSError:
            pass

    def read_some(self, conn, timeout=5.0):
        conn.settimeout(timeout)
        data = conn.recv(65536)
        self.received += data
        return data

    def handshake(self, conn, suback=SUBACK_OK):
        """Answers the link's CONNECT and SUBSCRIBE (`suback` may carry messages after it)."""
        self.read_some(conn)  # CONNECT
        conn.sendall(CONNACK_OK)
        self.read_some(conn)  # SUBSCRIBE
        conn.sendall(suback)

    def listen(self, conn, timeout=30.0):
        """Reads whatever the link sends (PINGREQs, PUBACKs, acks) and never answers."""
        while self.read_some(conn, timeout=timeout):
            pass

    def close(self):
        self.sock.close()
        for conn in self._conns:
            conn.close()


class Running:
    """An IngestLink in a thread, stopped through its pipe."""

    def __init__(self, port, ingestor, keepalive=30, connect_timeout=10.0):
        endpoint = Endpoint("127.0.0.1", port, "ingest-test", keepalive=keepalive)
        self.reports = []
        self.link = IngestLink(
            endpoint, "school", ingestor, lambda k, v: self.reports.append((k, v))
        )
        self.link.min_backoff = 0.1
        self.link.max_backoff = 0.2
        self.link.connect_timeout = connect_timeout
        self._r, self._w = os.pipe()
        self.thread = threading.Thread(target=self.link.run, args=(self._r,), daemon=True)
        self.thread.start()

    def stop(self):
        t0 = time.monotonic()
        os.write(self._w, b"x")
        self.thread.join(5)
        assert not self.thread.is_alive(), "the link did not stop"
        os.close(self._r)
        os.close(self._w)
        return time.monotonic() - t0


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_silent_broker_is_left_and_retried_and_never_holds_up_the_stop():
    broker = ScriptedBroker(lambda conn, broker: broker.listen(conn))
    run = Running(broker.port, Recording(), connect_timeout=0.3)
    try:
        wait_until(lambda: broker.accepted >= 3, what="three attempts")
        assert wire.connect("ingest-test", 30, False)[:4] in bytes(broker.received)
        assert run.stop() < 1.0
        assert ("connected", True) not in run.reports
    finally:
        broker.close()


def test_a_stop_while_the_broker_never_answers_is_prompt():
    broker = ScriptedBroker(lambda conn, broker: broker.listen(conn))
    run = Running(broker.port, Recording())  # the real 10 s CONNACK timeout
    try:
        wait_until(lambda: broker.accepted >= 1 and broker.received, what="a CONNECT")
        assert run.stop() < 1.0
    finally:
        broker.close()


def test_a_refused_subscription_is_an_error_and_never_reads_as_connected(caplog):
    def refuse_subscription(conn, broker):
        broker.handshake(conn, b"\x90\x05\x00\x01\x80\x80\x80")  # every topic refused
        broker.listen(conn)

    broker = ScriptedBroker(refuse_subscription)
    with caplog.at_level(logging.ERROR, logger="lockerctl.serve"):
        run = Running(broker.port, Recording())
        try:
            wait_until(lambda: broker.accepted >= 2, what="a second attempt")
        finally:
            run.stop()
            broker.close()
    assert ("connected", True) not in run.reports
    lines = [r.getMessage() for r in caplog.records]
    assert any("subscription to event, status, state refused" in line for line in lines), lines


def test_refused_connection_is_one_error_line_and_retried(caplog):
    def refuse(conn, broker):
        broker.read_some(conn)
        conn.sendall(b"\x20\x02\x00\x05")  # not authorised
        conn.close()

    broker = ScriptedBroker(refuse)
    with caplog.at_level(logging.ERROR, logger="lockerctl.serve"):
        run = Running(broker.port, Recording())
        try:
            wait_until(lambda: broker.accepted >= 2, what="a second attempt")
        finally:
            run.stop()
            broker.close()
    lines = [r.getMessage() for r in caplog.records]
    assert any("refused the ingest connection: not authorised" in line for line in lines), lines


def test_a_broker_silent_after_suback_is_found_out_by_the_keepalive():
    def then_silent(conn, broker):
        broker.handshake(conn)
        broker.listen(conn)

    broker = ScriptedBroker(then_silent)
    run = Running(broker.port, Recording(), keepalive=1)
    try:
        wait_until(lambda: ("connected", True) in run.reports, what="subscribed")
        wait_until(lambda: wire.PINGREQ_PACKET in bytes(broker.received), what="a PINGREQ")
        wait_until(lambda: ("connected", False) in run.reports, timeout=5, what="found out")
        wait_until(lambda: broker.accepted >= 2, what="a new connection")
    finally:
        run.stop()
        broker.close()


def test_messages_received_before_the_connection_drops_are_committed_all_the_same():
    events = [wire.publish("lockers/school/L1/event", b'{"seq": %d}' % i, 1, i) for i in (1, 2)]

    def deliver_then_drop(conn, broker):
        broker.handshake(conn, SUBACK_OK + b"".join(events))
        while b"\x40\x02\x00\x02" not in bytes(broker.received):  # the PUBACKs
            broker.read_some(conn)
        conn.close()  # long before the link's 10 s batch window ends

    broker = ScriptedBroker(deliver_then_drop)
    ingestor = Recording(max_wait=10.0)
    run = Running(broker.port, ingestor)
    try:
        wait_until(lambda: ingestor.batches, timeout=5, what="the batch committed")
        assert [p for _, p in ingestor.batches[0]] == [b'{"seq": 1}', b'{"seq": 2}']
        assert ingestor.stats.queued == 2
        # both were acknowledged to the broker (PUBACK 1 and 2) as they arrived
        assert b"\x40\x02\x00\x01\x40\x02\x00\x02" in bytes(broker.received)
    finally:
        run.stop()
        broker.close()


def test_stop_commits_what_arrived_and_sends_its_acks_before_disconnecting():
    def deliver(conn, broker):
        broker.handshake(conn, SUBACK_OK + wire.publish("lockers/school/L2/event", b"{}", 1, 5))
        broker.listen(conn, timeout=10)

    broker = ScriptedBroker(deliver)
    ingestor = Recording(max_wait=30.0)  # only the stop commits
    run = Running(broker.port, ingestor)
    try:
        wait_until(lambda: ingestor.stats.queued == 1, what="the message received")
        run.stop()
        assert ingestor.batches == [[("lockers/school/L2/event", b"{}")]]
        ack = wire.publish("lockers/school/L2/ack", b'{"seq": 1}', 1, 2)
        wait_until(lambda: wire.DISCONNECT_PACKET in bytes(broker.received), what="DISCONNECT")
        sent = bytes(broker.received)
        assert ack in sent and sent.index(ack) < sent.index(wire.DISCONNECT_PACKET)
        assert wire.puback(5) in sent  # the broker's copy is acknowledged, not redelivered
    finally:
        broker.close()


def test_messages_still_in_the_socket_at_the_stop_are_committed_and_acknowledged():
    """A stop that finds data waiting in the socket commits it too, and PUBACKs it before
    DISCONNECT, so that the persistent session does not deliver it again."""
    first = wire.publish("lockers/school/L3/event", b'{"seq": 1}', 1, 5)
    second = wire.publish("lockers/school/L3/event", b'{"seq": 2}', 1, 6)
    committing = threading.Event()

    def deliver(conn, broker):
        broker.handshake(conn, SUBACK_OK + first)
        committing.wait(10)
        conn.sendall(second)  # arrives while the link is busy committing the first
        broker.listen(conn, timeout=10)

    class Slow(Recording):
        def write(self, raw):
            committing.set()
            if len(self.batches) == 0:
                time.sleep(0.5)
            super().write(raw)

    broker = ScriptedBroker(deliver)
    ingestor = Slow()
    run = Running(broker.port, ingestor)
    try:
        assert committing.wait(10)
        time.sleep(0.2)  # the second message is in the socket now
        run.stop()  # asked while the first commit is still running
        assert [[p for _, p in b] for b in ingestor.batches] == [[b'{"seq": 1}'], [b'{"seq": 2}']]
        wait_until(lambda: wire.DISCONNECT_PACKET in bytes(broker.received), what="DISCONNECT")
        sent = bytes(broker.received)
        assert wire.puback(6) in sent
        assert sent.index(wire.puback(6)) < sent.index(wire.DISCONNECT_PACKET)
    finally:
        broker.close()
