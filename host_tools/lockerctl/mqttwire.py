"""MQTT 3.1.1 on the wire, for the ingest stream: packets built and parsed in bulk.

paho-mqtt reads a packet with three `recv` calls (its type, each byte of its length, its body) and
wakes `select` for every one; receiving a flood that way costs ~40 us of CPU per message. The
ingest connection instead reads what the kernel has (up to 256 KiB at a time), cuts every whole
packet out of it in one pass and answers all of their PUBACKs with one `send`: a few
microseconds per message, so that `lockerctl serve` keeps up with the broker on a busy machine.
Only what a subscriber that publishes acknowledgements needs is here (CONNECT, SUBSCRIBE,
PUBLISH at QoS 0 and 1, PUBACK, PINGREQ, DISCONNECT); paho still carries everything else.
"""

from __future__ import annotations

import struct

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_PACKET = 16 * 1024 * 1024  # far above any broker's message_size_limit for lockers

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class ProtocolError(ValueError):
    """The broker sent something that is not MQTT 3.1.1: the connection is dropped."""


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _length(len(body)) + body


def connect(
    client_id: str,
    keepalive: int,
    clean_session: bool,
    user: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if user:
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    head = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return packet(CONNECT, 0, head + payload)


def subscribe(packet_id: int, topics: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_str(t) + bytes([q]) for t, q in topics)
    return packet(SUBSCRIBE, 2, body)


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, retain=False) -> bytes:
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(PUBLISH, qos << 1 | (1 if retain else 0), body)


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


class Reader:
    """Cuts the packets out of a byte stream fed in pieces of any size.

    `feed(data)` returns the whole packets completed by `data`: PUBLISH as
    `(PUBLISH, topic, payload, packet_id)` (packet_id 0 for QoS 0), the others as
    `(kind, flags, body)`. `acks` collects the PUBACKs owed for the QoS 1 messages returned, for
    the caller to send in one piece (and clear)."""

    def __init__(self, max_packet: int = MAX_PACKET):
        self._buf = b""
        self.max_packet = max_packet
        self.acks = bytearray()

    def feed(self, data: bytes) -> list:
        buf = self._buf + data if self._buf else data
        n = len(buf)
        pos = 0
        out: list[tuple] = []
        acks = self.acks
        while n - pos >= 2:
            head = buf[pos]
            # remaining length: 1 to 4 bytes, 7 bits each
            length = buf[pos + 1]
            i = pos + 2
            if length & 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if i >= n:
                        self._buf = buf[pos:]
                        return out
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        raise ProtocolError("remaining length longer than 4 bytes")
                if length > self.max_packet:
                    raise ProtocolError(f"a packet of {length} bytes (limit {self.max_packet})")
            end = i + length
            if end > n:
                break
            kind = head >> 4
            if kind == PUBLISH:
                qos = head >> 1 & 3
                if qos > 1:
                    raise ProtocolError(f"PUBLISH at QoS {qos} (the subscriptions ask for 1)")
                t_end = i + 2 + (buf[i] << 8 | buf[i + 1]) if length >= 2 else end + 1
                if t_end + 2 * qos > end:
                    raise ProtocolError("PUBLISH topic or packet id runs past the packet")
                topic = buf[i + 2 : t_end].decode("utf-8", "replace")
                if qos:
                    pid = buf[t_end : t_end + 2]
                    acks += b"\x40\x02" + pid
                    out.append((PUBLISH, topic, buf[t_end + 2 : end], pid[0] << 8 | pid[1]))
                else:
                    out.append((PUBLISH, topic, buf[t_end:end], 0))
            else:
                out.append((kind, head & 0x0F, buf[i:end]))
            pos = end
        self._buf = buf[pos:] if pos < n else b""
        return out
