"""The ingest connection's MQTT codec: packets as MQTT 3.1.1 spells them, cut out of a stream fed
in pieces of any size, and spoken with a real mosquitto."""

import json
import random
import socket
import struct
import time

import pytest
from lockerctl import mqttwire as wire


def _stream(messages):
    return b"".join(wire.publish(t, p, qos, pid) for t, p, qos, pid in messages)


MESSAGES = [
    ("lockers/school/L1/event", b'{"seq": 1}', 1, 1),
    ("lockers/school/L2/status", b"online", 0, 0),
    ("lockers/school/L1/state", b"x" * 200, 1, 2),  # two-byte remaining length
    ("lockers/school/L3/event", b"y" * 20000, 1, 65535),  # three-byte remaining length
    ("lockers/school/L3/event", b"", 1, 7),  # empty payload
]


def test_packets_are_byte_for_byte_the_standard():
    # MQTT 3.1.1 section 3.3: fixed header, topic with its length, packet id for QoS 1, payload
    assert wire.publish("a/b", b"hi", 1, 10) == b"\x32\x09\x00\x03a/b\x00\x0ahi"
    assert wire.publish("a/b", b"hi", 0) == b"\x30\x07\x00\x03a/bhi"
    # section 2.2.3: 321 is 0xC1 0x02, 16,383 is 0xFF 0x7F, 16,384 is 0x80 0x80 0x01
    assert [wire._length(n) for n in (0, 127, 128, 321, 16383, 16384)] == [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xc1\x02",
        b"\xff\x7f",
        b"\x80\x80\x01",
    ]
    assert wire.puback(258) == b"\x40\x02\x01\x02"
    assert wire.subscribe(1, [("a/+", 1)]) == b"\x82\x08\x00\x01\x00\x03a/+\x01"
    assert wire.connect("id", 30, False, "u", "p") == (
        b"\x10\x14\x00\x04MQTT\x04\xc0\x00\x1e\x00\x02id\x00\x01u\x00\x01p"
    )


@pytest.mark.parametrize("seed", range(20))
def test_packets_fed_in_random_pieces_come_out_whole_and_in_order(seed):
    rng = random.Random(seed)
    data = _stream(MESSAGES) + b"\xd0\x00" + _stream(MESSAGES)  # a PINGRESP between
    reader = wire.Reader()
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice([1, 2, 3, 7, 100, 4096, len(data)])
        out += reader.feed(data[pos : pos + n])
        pos += n
    publishes = [(p[1], bytes(p[2]), p[3]) for p in out if p[0] == wire.PUBLISH]
    want = [(t, p, pid) for t, p, _, pid in MESSAGES]
    assert publishes == want + want
    assert [p[0] for p in out].count(wire.PINGRESP) == 1
    # one PUBACK for every QoS 1 message, with its packet id, none for QoS 0
    ids = [pid for _, _, qos, pid in MESSAGES if qos == 1] * 2
    assert bytes(reader.acks) == b"".join(b"\x40\x02" + struct.pack("!H", i) for i in ids)


def test_a_length_longer_than_four_bytes_or_the_limit_is_a_protocol_error():
    with pytest.raises(wire.ProtocolError, match="longer than 4 bytes"):
        wire.Reader().feed(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(wire.ProtocolError, match="limit"):
        wire.Reader(max_packet=1000).feed(b"\x30" + wire._length(1001))


def test_a_topic_longer_than_its_packet_is_a_protocol_error():
    with pytest.raises(wire.ProtocolError, match="topic"):
        wire.Reader().feed(b"\x30\x04\x00\x09ab")
    with pytest.raises(wire.ProtocolError, match="topic"):
        wire.Reader().feed(b"\x30\x00")  # no room for even the topic's length
    with pytest.raises(wire.ProtocolError, match="packet id"):
        wire.Reader().feed(b"\x32\x03\x00\x01a")  # QoS 1 without its packet id
    with pytest.raises(wire.ProtocolError, match="QoS 2"):
        wire.Reader().feed(b"\x34\x05\x00\x01a\x00\x01")


def test_against_mosquitto_connect_subscribe_receive_and_publish(broker):
    """A real broker accepts what `mqttwire` writes and what it sends back parses."""
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    reader = wire.Reader()

    def read_until(pred):
        got = []
        deadline = time.monotonic() + 5
        while not any(pred(p) for p in got):
            assert time.monotonic() < deadline, got
            got += reader.feed(sock.recv(65536))
        return got

    sock.sendall(wire.connect("wire-test", 30, True))
    connack = read_until(lambda p: p[0] == wire.CONNACK)
    assert connack[0][2] == b"\x00\x00"
    sock.sendall(wire.subscribe(1, [("wire/#", 1)]))
    suback = read_until(lambda p: p[0] == wire.SUBACK)
    assert suback[0][2] == b"\x00\x01\x01"  # packet id 1, QoS 1 granted
    sock.sendall(wire.publish("wire/a", json.dumps({"seq": 5}).encode(), qos=1, packet_id=9))
    got = read_until(lambda p: p[0] == wire.PUBLISH)
    pub = [p for p in got if p[0] == wire.PUBLISH][0]
    assert pub[1] == "wire/a" and json.loads(pub[2]) == {"seq": 5}
    assert len(reader.acks) == 4  # our PUBACK for what the broker delivered, ready to send
    sock.sendall(wire.PINGREQ_PACKET)
    read_until(lambda p: p[0] == wire.PINGRESP)
    sock.sendall(wire.DISCONNECT_PACKET)
    sock.close()


# -- property-based: the decoder never fails in any other way -------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

publishes = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=60),
        st.binary(max_size=3000),
        st.sampled_from([0, 1]),
        st.integers(1, 65535),
    ),
    max_size=12,
)


@given(publishes, st.lists(st.integers(1, 5000), max_size=30))
def test_any_publishes_cut_anywhere_come_back_exactly(messages, cuts):
    data = _stream(messages)
    reader = wire.Reader()
    out, pos = [], 0
    for n in [*cuts, len(data)]:
        out += reader.feed(data[pos : pos + n])
        pos += n
    assert [(p[1], bytes(p[2])) for p in out] == [(t, p) for t, p, _, _ in messages]
    assert [p[3] for p in out] == [pid if qos else 0 for _, _, qos, pid in messages]


@given(st.binary(max_size=400), st.integers(1, 64))
def test_any_bytes_are_packets_or_one_protocol_error(data, piece):
    reader = wire.Reader(max_packet=1 << 16)
    try:
        for pos in range(0, len(data), piece):
            for p in reader.feed(data[pos : pos + piece]):
                assert p[0] in range(16)
    except wire.ProtocolError as e:
        assert str(e) and "\n" not in str(e)
