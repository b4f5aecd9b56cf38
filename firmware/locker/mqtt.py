# A small MQTT 3.1.1 client on MicroPython asyncio streams, in the spirit of umqtt.simple but
# never waiting on the network: every send is bounded by a timeout, QoS 1 publishes do not wait
# for PUBACK, and one call reads one packet. Incoming payloads are streamed to a sink in chunks
# of one preallocated buffer, so a payload never has to fit in RAM.
#
#   c = MQTTClient(client_id, host, port, user=None, password=None, keepalive=30, ssl=None)
#   c.set_last_will(topic, msg, retain=True, qos=1)
#   await c.connect(timeout=5)              # OSError (refused, timed out) or MQTTError (CONNACK)
#   await c.publish(topic, msg, retain=False, qos=0)
#   await c.subscribe(topic, qos=1)
#   await c.read_packet(sink_factory)       # one packet; returns its type (0x30 PUBLISH, ...)
#   await c.ping(); await c.disconnect(); c.close()
#
# Only one task may call read_packet; any number may send (sends are serialised by a lock).

import asyncio
import struct
import sys
from time import ticks_ms

from micropython import const

PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBACK = const(0x90)
PINGRESP = const(0xD0)
_CONNACK = const(0x20)
_ETIMEDOUT = const(110)
_ECONNRESET = const(104)


class MQTTError(Exception):
    """The broker refused (args[0]: CONNACK return code) or broke the protocol (a message)."""


class MQTTClient:
    CHUNK = 512  # bytes of the buffer incoming packets are read through
    MAX_TOPIC = 128  # a longer incoming topic is skipped (its payload discarded)
    TX = 512  # bytes of the buffer outgoing packets are assembled in (a longer payload: 2 writes)

    def __init__(
        self,
        client_id,
        host,
        port=0,
        user=None,
        password=None,
        keepalive=30,
        ssl=None,
        timeout=10,
        chunk=0,
        tx=0,
    ):
        self.client_id = _b(client_id)
        self.host = host
        self.port = port or (8883 if ssl else 1883)
        self.user = None if user is None else _b(user)
        self.password = _b(password or "")  # sent only with a user name
        self.keepalive = keepalive
        self.ssl = ssl
        self.timeout_ms = int(timeout * 1000)  # bound on every send (drain)
        self.will = None
        self._r = self._w = None
        self._pid = 0
        self._lock = asyncio.Lock()
        self._buf = bytearray(chunk or self.CHUNK)
        self._mv = memoryview(self._buf)
        self._tx = bytearray(tx or self.TX)  # outgoing packets are assembled here
        self._ack = bytearray(b"\x40\x02\0\0")
        self.last_rx = self.last_tx = ticks_ms()
        self.suback = None  # granted QoS of the last SUBACK (0x80: refused)

    def set_last_will(self, topic, msg, retain=True, qos=1):
        self.will = (_b(topic), _b(msg), retain, qos)

    @property
    def connected(self):
        return self._w is not None

    # -- connecting ------------------------------------------------------------------------------

    async def connect(self, timeout=5, clean_session=True):
        """Opens the connection and completes the CONNECT/CONNACK exchange within `timeout`
        seconds; raises OSError (refused, unreachable, timed out) or MQTTError (refused by the
        broker: args[0] is the CONNACK return code)."""
        self.close()
        try:
            return await asyncio.wait_for_ms(self._connect(clean_session), int(timeout * 1000))
        except asyncio.TimeoutError:
            self.close()
            raise OSError(_ETIMEDOUT) from None
        except ValueError as e:  # how MicroPython's ssl reports a failed handshake
            self.close()
            raise MQTTError("TLS: " + str(e).strip()) from None
        except BaseException:
            self.close()
            raise

    async def _connect(self, clean_session):
        r, w = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        self._r, self._w = r, w
        try:
            w.s.setsockopt(6, 1, 1)  # TCP_NODELAY: no small packet waits for a delayed ACK
        except (AttributeError, OSError):
            pass  # a TLS stream has no setsockopt; it works without, only slower
        size = 10 + 2 + len(self.client_id)
        flags = clean_session << 1
        if self.will:
            topic, msg, retain, qos = self.will
            size += 4 + len(topic) + len(msg)
            flags |= 0x04 | (qos & 3) << 3 | (1 if retain else 0) << 5
        if self.user is not None:
            size += 4 + len(self.user) + len(self.password)
            flags |= 0xC0
        pkt = bytearray(5 + size)  # once per connection: small, and rare
        n = _put_len(pkt, 0x10, size)
        struct.pack_into("!H4sBBH", pkt, n, 4, b"MQTT", 4, flags, self.keepalive)
        n = _put_str(pkt, n + 10, self.client_id)
        if self.will:
            n = _put_str(pkt, n, topic)
            n = _put_str(pkt, n, msg)
        if self.user is not None:
            n = _put_str(pkt, n, self.user)
            n = _put_str(pkt, n, self.password)
        await self._send(memoryview(pkt)[:n])
        await self._readn(4)
        buf = self._buf
        if buf[0] != _CONNACK or buf[1] != 2:
            raise MQTTError("expected CONNACK")
        if buf[3]:
            raise MQTTError(buf[3])
        return buf[2] & 1  # session present

    def close(self):
        """Drops the connection at once (no DISCONNECT: the broker publishes the last will).
        The task calling read_packet must be cancelled first."""
        w, self._r, self._w = self._w, None, None
        if w is not None:
            try:
                w.s.close()
            except OSError:
                pass

    async def disconnect(self):
        """A clean goodbye: the broker discards the last will."""
        try:
            await self._send(b"\xe0\0")
        finally:
            self.close()

    # -- sending -----------------------------------------------------------------------------

    async def _send(self, packet):
        async with self._lock:
            w = self._writer()
            w.write(packet)
            await self._drain(w)

    def _writer(self):
        w = self._w
        if w is None:
            raise OSError(_ECONNRESET)
        return w

    async def _drain(self, w):
        """Waits until the socket took what was written, at most `timeout`: a broker that does
        not read makes it raise OSError(ETIMEDOUT), and the link reconnects."""
        try:
            await asyncio.wait_for_ms(w.drain(), self.timeout_ms)
        except asyncio.TimeoutError:
            raise OSError(_ETIMEDOUT) from None
        self.last_tx = ticks_ms()

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def publish_parts(self, topic, parts, sep, first, last, retain=False, qos=0):
        """Sends one PUBLISH whose payload is first + parts joined by sep + last (bytes each),
        never held whole: the parts go through the packet buffer (`tx`), a buffer-full at a
        time; a payload that fits goes out with its header in one write (one TCP segment, with
        TCP_NODELAY). Otherwise as publish()."""
        topic = _b(topic)
        length = len(first) + len(last) + len(sep) * (len(parts) - 1)
        for p in parts:
            length += len(p)
        size = 2 + len(topic) + length + (2 if qos else 0)
        if size >= 268435456 or len(topic) > self.MAX_TOPIC:
            raise ValueError("mqtt: message or topic too large")
        async with self._lock:
            w = self._writer()
            tx = self._tx
            mv = memoryview(tx)
            n = _put_len(tx, PUBLISH | qos << 1 | (1 if retain else 0), size)
            n = _put_str(tx, n, topic)
            pid = 0
            if qos:
                pid = self._next_pid()
                tx[n] = pid >> 8
                tx[n + 1] = pid & 0xFF
                n += 2
            for p in parts:
                n = _out(w, tx, mv, _out(w, tx, mv, n, first), p)
                first = sep
            n = _out(w, tx, mv, n, last)
            if n:
                w.write(mv[:n])  # a socket that does not take it all: the stream copies the rest
            await self._drain(w)
        return pid

    async def publish(self, topic, msg, retain=False, qos=0):
        """Sends one PUBLISH (QoS 0 or 1); QoS 1 does not wait for PUBACK. Returns the packet
        id (0 for QoS 0). `topic` and `msg` are bytes (str is encoded)."""
        return await self.publish_parts(topic, (_b(msg),), b"", b"", b"", retain, qos)

    async def subscribe(self, topic, qos=1):
        """Sends SUBSCRIBE; the SUBACK is read by read_packet (its code lands in .suback)."""
        return await self._sub(0x82, topic, 1 if qos else 0)

    async def unsubscribe(self, topic):
        """Sends UNSUBSCRIBE (its UNSUBACK is read, and skipped, by read_packet)."""
        return await self._sub(0xA2, topic, -1)

    async def _sub(self, kind, topic, qos):
        topic = _b(topic)
        if len(topic) > self.MAX_TOPIC:
            raise ValueError("mqtt: topic too long")
        async with self._lock:
            w = self._writer()
            tx = self._tx
            pid = self._next_pid()
            extra = 1 if qos >= 0 else 0  # SUBSCRIBE: the requested QoS after the topic
            struct.pack_into("!BBH", tx, 0, kind, 4 + extra + len(topic), pid)
            n = _put_str(tx, 4, topic)
            if extra:
                tx[n] = qos
            w.write(memoryview(tx)[: n + extra])
            await self._drain(w)
        return pid

    async def ping(self):
        await self._send(b"\xc0\0")

    # -- receiving ---------------------------------------------------------------------------

    async def _readn(self, n):
        """Reads exactly n (<= CHUNK) bytes into the buffer."""
        r = self._r
        if r is None:
            raise OSError(_ECONNRESET)
        mv = self._mv
        got = 0
        while got < n:
            k = await r.readinto(mv[got:n])
            if not k:
                raise OSError(_ECONNRESET)  # the broker closed the connection
            got += k
        self.last_rx = ticks_ms()

    async def _read_len(self):
        n = 0
        shift = 0
        while True:
            await self._readn(1)
            b = self._buf[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")

    async def _skip(self, n):
        step = len(self._buf)
        while n > 0:
            k = n if n < step else step
            await self._readn(k)
            n -= k

    async def read_packet(self, sink_factory=None):
        """Reads one packet and returns its type (PUBLISH, PUBACK, SUBACK, PINGRESP, ...).

        For an incoming PUBLISH, `sink_factory(topic, length)` (topic: bytes; length: payload
        bytes) returns a sink or None. A sink gets `write(chunk)` for each chunk (a memoryview of
        the client's buffer, valid only during the call) and `close()` after the last one; if the
        connection fails mid-payload it gets `abort()` instead (when it has one). None discards
        the payload without allocating. A sink that raises from write() or close() gets the
        rest dropped (abort()); an exception with `refusal = True` (a bundle refused: the sink
        records why) is quiet, any other is printed. QoS 1 messages are acknowledged after
        close()."""
        await self._readn(1)
        kind = self._buf[0]
        n = await self._read_len()
        if kind & 0xF0 == PUBLISH:
            await self._incoming(kind, n, sink_factory)
            return PUBLISH
        kind &= 0xF0
        if kind == SUBACK and 3 <= n <= len(self._buf):
            await self._readn(n)
            self.suback = self._buf[2]
        else:
            await self._skip(n)
        return kind

    async def _incoming(self, kind, n, sink_factory):
        buf = self._buf
        await self._readn(2)
        tlen = buf[0] << 8 | buf[1]
        qos = kind >> 1 & 3
        n -= 2 + tlen + (2 if qos else 0)
        if n < 0:
            raise MQTTError("bad PUBLISH")
        topic = None
        if tlen <= self.MAX_TOPIC:
            await self._readn(tlen)
            topic = bytes(self._mv[:tlen])
        else:
            await self._skip(tlen)
        pid = 0
        if qos:
            await self._readn(2)
            pid = buf[0] << 8 | buf[1]
        sink = None
        if topic is not None and sink_factory is not None:
            try:
                sink = sink_factory(topic, n)
            except Exception as e:  # the handler's failure is not the connection's: discard
                sys.print_exception(e)
        step = len(buf)
        mv = self._mv
        try:
            while n > 0:
                k = n if n < step else step
                await self._readn(k)
                n -= k
                if sink is not None:
                    try:
                        sink.write(mv[:k])
                    except Exception as e:  # a failing sink: drop the rest, keep the stream
                        if not getattr(e, "refusal", False):  # a refusal is the sink's to record
                            sys.print_exception(e)
                        _abort(sink)
                        sink = None
        except BaseException:
            _abort(sink)
            raise
        if sink is not None:
            try:
                sink.close()
            except Exception as e:  # the handler's failure is not the connection's
                if not getattr(e, "refusal", False):
                    sys.print_exception(e)
        if qos == 1:
            async with self._lock:
                w = self._writer()
                struct.pack_into("!H", self._ack, 2, pid)
                w.write(self._ack)
                await self._drain(w)


def _abort(sink):
    if sink is not None and hasattr(sink, "abort"):
        try:
            sink.abort()
        except Exception as e:
            sys.print_exception(e)


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _out(w, tx, mv, n, piece):
    """Appends piece to the packet being assembled in tx (n bytes so far), writing tx out first
    when piece does not fit; a piece larger than tx goes out on its own. Returns the new n."""
    k = len(piece)
    if n + k > len(tx):
        if n:
            w.write(mv[:n])
            n = 0
        if k > len(tx):
            w.write(piece)
            return 0
    tx[n : n + k] = piece
    return n + k


def _put_len(buf, first, size):
    """Writes the fixed header (type byte + remaining length) at 0; returns its length."""
    buf[0] = first
    i = 1
    while size > 0x7F:
        buf[i] = (size & 0x7F) | 0x80
        size >>= 7
        i += 1
    buf[i] = size
    return i + 1


def _put_str(buf, n, s):
    struct.pack_into("!H", buf, n, len(s))
    buf[n + 2 : n + 2 + len(s)] = s
    return n + 2 + len(s)
