# The network link: one asyncio task that keeps the locker connected to its broker, forever.
# It uploads the journal's events in seq order, applies the host's acks, publishes status and
# state, and hands incoming config and commands to the locker. Nothing in the locker waits on
# it: a broker that is down, slow or silent only makes events wait in the journal.
#
#   link = Link(locker, device, settings)
#   asyncio.create_task(link.run())
#
# What it uses of the locker (locker.core.Locker, one interface, nothing optional): journal (jid,
# last_seq, acked, unacked(after)), keys (the event and ack MAC keys), state_buffer(),
# state_json(buf), state_rev, online, config_receiver(length), command(payload),
# command_rejected(reason), acknowledged(seq), and on_commit (a callback slot: the link hangs its
# wake-up there, called when events are durable). docs/link.md has the whole story.

import asyncio
import json
import sys
from binascii import hexlify
from time import ticks_diff, ticks_ms

from micropython import const

from locker.mac import equal, hmac_sha256
from locker.mqtt import MQTTClient, MQTTError

_ETIMEDOUT = const(110)
_MSG_EVENTS = const(256)  # events in one message at most (the host takes batches up to 256)
_ACK_MAX = const(160)  # an ack payload longer than this is not an ack (one is about 85 bytes)
_STABLE_MS = const(10000)  # a connection that lasted this long resets the backoff
_POLL_MS = const(500)  # the link looks for work at least this often

try:
    from random import getrandbits
except ImportError:  # pragma: no cover - every MicroPython port we run on has it
    from os import urandom

    def getrandbits(n):
        return int.from_bytes(urandom(2), "big") >> (16 - n)


class Link:
    def __init__(self, locker, device, settings):
        from locker.events import to_json as payload

        journal = locker.journal
        event_key = locker.keys[0]

        def to_json(ev):  # the payload with the journal's id and the event's MAC
            return payload(ev, journal.jid, event_key)

        self.to_json = to_json
        self.locker = locker
        broker = device["broker"]
        root = "lockers/{}/{}/".format(device.get("site", "school"), device["locker_id"])
        self.t_event = (root + "event").encode()
        self.t_ack = (root + "ack").encode()
        self.t_status = (root + "status").encode()
        self.t_state = (root + "state").encode()
        self.t_config = (root + "config").encode()
        self.t_cmd = (root + "cmd").encode()
        self.t_fw = (root + "firmware").encode()  # firmware offers (locker/update.py)
        self.t_chunks = "firmware/{}/".format(device.get("site", "school")).encode()
        # settings.load's: every key is there, each default named once (locker/settings.py)
        self.keepalive = int(settings["keepalive_s"])
        self.ack_timeout_ms = int(settings["ack_timeout_s"] * 1000)
        self.connect_timeout = settings["connect_timeout_s"]
        self.backoff_min_ms = int(settings["backoff_min_s"] * 1000)
        self.backoff_max_ms = int(settings["backoff_max_s"] * 1000)
        self.window = int(settings["event_window"])
        self.batch_bytes = int(settings["event_batch_bytes"])  # one event message at most
        self.event_qos = int(settings["event_qos"])
        self.max_cmd = int(settings["max_cmd_bytes"])
        tls = broker.get("tls", False)
        self.client = MQTTClient(
            device["locker_id"],
            broker.get("host", "127.0.0.1"),
            int(broker.get("port") or (8883 if tls else 1883)),
            user=broker.get("user"),
            password=broker.get("password"),
            keepalive=self.keepalive,
            ssl=_tls_context(broker) if tls else None,
            timeout=settings["write_timeout_s"],
        )
        self.client.set_last_will(self.t_status, b"offline", retain=True, qos=1)

        self.sent_hi = 0  # the highest seq sent on this connection or an earlier one
        self.cursor = 0  # the highest seq sent on this connection
        self.progress_ms = 0  # when the ack last moved (or the window was last empty)
        self.acked_seen = 0
        self.state_rev_sent = None
        self.failures = 0  # connection attempts failed in a row (backoff exponent)
        # Counters, for tests and the state of the link at a glance.
        self.connects = 0
        self.resends = 0
        self.acks_ignored = 0
        self.last_error = None

        self._wake = asyncio.Event()
        self._dead = None  # the reader's exception once the connection failed
        self._reader_task = None
        self._ack = _Collector(bytearray(_ACK_MAX), self._on_ack)
        self._cmd = _Collector(bytearray(self.max_cmd), self._on_cmd)
        # the state's JSON, rewritten on each change; allocated now, while the heap has room in
        # one piece (Locker.state_json grows it if ever needed)
        self._state_buf = locker.state_buffer()
        locker.on_commit = self._wake.set  # woken when events are durable

    # -- the task ------------------------------------------------------------------------------

    async def run(self):
        """Connects, serves the connection until it fails, backs off, and again; forever."""
        while True:
            started = None
            try:
                await self.client.connect(self.connect_timeout)
                started = ticks_ms()
                self.connects += 1
                self.last_error = None
                await self._session()
            except (OSError, MQTTError) as e:
                self._lost(e)
            except Exception as e:  # a bug must not end the link for good; log and reconnect
                sys.print_exception(e)
                self._lost(e)
            finally:
                self._drop()
            if started is not None and ticks_diff(ticks_ms(), started) >= _STABLE_MS:
                self.failures = 0
            await asyncio.sleep_ms(self._backoff_ms())
            self.failures += 1

    def _lost(self, e):
        self.last_error = e
        print(
            "link: {} ({})".format(
                "disconnected" if self.client.connected else "no broker", _why(e)
            )
        )

    def _backoff_ms(self):
        """Between half and all of min * 2**failures, capped: reconnecting lockers spread out."""
        d = self.backoff_min_ms << min(self.failures, 16)
        if d > self.backoff_max_ms:
            d = self.backoff_max_ms
        half = d // 2
        return half + (half * getrandbits(16) >> 16)

    def _drop(self):
        t, self._reader_task = self._reader_task, None
        if t is not None:
            t.cancel()  # before closing the socket: a task waiting on a closed socket hangs
        self.client.close()
        locker = self.locker
        if locker.online:
            locker.online = False
            locker.state_rev += 1

    async def _session(self):
        c = self.client
        locker = self.locker
        self._dead = None
        await c.subscribe(self.t_ack, 1)
        await c.subscribe(self.t_config, 1)
        await c.subscribe(self.t_cmd, 1)
        await c.subscribe(self.t_fw, 1)
        self._reader_task = asyncio.create_task(self._reader())
        locker.online = True
        locker.state_rev += 1
        await c.publish(self.t_status, b"online", True, 1)
        print("link: connected to {}:{}".format(c.host, c.port))
        self.state_rev_sent = None
        self.cursor = self.acked_seen = locker.journal.acked  # resend what was in flight
        self.progress_ms = ticks_ms()
        half_ka = self.keepalive * 500
        dead_ka = self.keepalive * 1500
        last_ping = ticks_ms()
        while True:
            self._wake.clear()
            if self._dead is not None:
                raise self._dead
            now = ticks_ms()
            if self.keepalive:
                if ticks_diff(now, c.last_rx) > dead_ka:
                    raise OSError(_ETIMEDOUT)  # the broker went silent
                if ticks_diff(now, last_ping) >= half_ka and (
                    ticks_diff(now, c.last_tx) >= half_ka or ticks_diff(now, c.last_rx) >= half_ka
                ):
                    last_ping = now
                    await c.ping()
                    self.state_rev_sent = None  # the state again: its `time` (the clock's offset)
            rev = locker.state_rev
            if rev != self.state_rev_sent:
                # built without a dict of dicts, into the link's own buffer, kept for the next
                payload = locker.state_json(self._state_buf)
                await c.publish(self.t_state, payload, True, 1)
                payload = None
                self.state_rev_sent = rev
            await self._upload()
            upd = locker.updater
            if upd is not None:  # a firmware download: the next chunk, at the locker's pace
                upd.wake = self._wake.set
                await upd.pump(c, self.connects)
            if self._dead is None:
                try:
                    await asyncio.wait_for_ms(self._wake.wait(), _POLL_MS)
                except asyncio.TimeoutError:  # MicroPython has no builtin one
                    pass

    # -- events up -------------------------------------------------------------------------------

    async def _upload(self):
        """Sends the next events in seq order, at most `window` beyond the last ack; when the
        ack has not moved for ack_timeout, sends again from the last ack. Whatever is waiting
        goes out at once: one event alone as a JSON object, several as a JSON array (a batch) of
        at most `event_batch_bytes` and 256 events; no event waits for a batch to fill."""
        journal = self.locker.journal
        cap = self.batch_bytes
        while True:
            acked = journal.acked
            now = ticks_ms()
            if acked != self.acked_seen:
                self.acked_seen = acked
                self.progress_ms = now
            if self.cursor < acked:
                self.cursor = acked
            if self.cursor > acked and ticks_diff(now, self.progress_ms) > self.ack_timeout_ms:
                self.cursor = acked
                self.progress_ms = now
                self.resends += 1
            room = acked + self.window - self.cursor
            if room <= 0 or self.cursor >= journal.last_seq:
                return
            if self.cursor == acked:
                self.progress_ms = now  # the window was empty: the ack clock starts now
            if room > _MSG_EVENTS:
                room = _MSG_EVENTS
            # Read and encode events, then publish them, one message: the journal's iterator is
            # closed before any await, so no file stays open while the locker appends or
            # compacts. The message is never held whole (MQTTClient.publish_parts writes it
            # through its packet buffer): only each event's JSON, small pieces of the heap.
            parts = []
            size = 1  # "[" ... "]", a "," between two
            last = self.cursor
            it = journal.unacked(last)
            try:
                for ev in it:
                    p = _b(self.to_json(ev))
                    size += len(p) + 1
                    if parts and size > cap:
                        break  # the next message starts with it
                    parts.append(p)  # the first always goes, alone if it is that large
                    last = ev.seq
                    if len(parts) >= room:
                        break
            finally:
                if hasattr(it, "close"):
                    it.close()  # MicroPython does not close an abandoned generator (or its file)
            p = None
            if not parts:
                return
            one = len(parts) == 1  # one event: the object, as a live tap's event goes
            await self.client.publish_parts(
                self.t_event,
                parts,
                b",",
                b"" if one else b"[",
                b"" if one else b"]",
                False,
                self.event_qos,
            )
            parts = None
            self.cursor = last
            if last > self.sent_hi:
                self.sent_hi = last

    # -- messages down ----------------------------------------------------------------------------

    async def _reader(self):
        try:
            while True:
                await self.client.read_packet(self._sink_for)
        except Exception as e:  # noqa: B036 - any failure ends this connection, not the link
            self._dead = e
            self._wake.set()

    def _sink_for(self, topic, length):
        if topic == self.t_ack:
            return self._ack.start() if length <= _ACK_MAX else None
        if topic == self.t_config:
            if length == 0:
                return None  # a cleared retained config: nothing to apply
            return self.locker.config_receiver(length)  # None when too large: discarded unread
        if topic == self.t_cmd:
            if length > self.max_cmd:
                self.locker.command_rejected("too_large")
                return None
            return self._cmd.start()
        if topic == self.t_fw:
            return self.locker.offer_sink(length)
        if topic.startswith(self.t_chunks):
            upd = self.locker.updater
            return upd.chunk_sink(topic, length) if upd is not None else None
        return None

    def _on_ack(self, payload):
        try:
            ack = json.loads(payload)
            seq = ack["seq"]
            jid = ack.get("jid")
            mac = ack.get("mac")
        except (ValueError, KeyError, TypeError, AttributeError):
            print("link: malformed ack ignored")
            return
        if not isinstance(seq, int) or seq < 1:
            return
        # Anyone with the broker password can publish on `ack`; only the host holds the key. The
        # MAC: HMAC-SHA256(ack key, "<seq>|<jid>"), first 16 bytes, hex (docs/protocol.md, ack).
        mine = self.locker.journal.jid
        want = hexlify(hmac_sha256(self.locker.keys[1], (str(seq) + "|" + mine).encode())[:16])
        if jid != mine or not isinstance(mac, str) or not equal(mac.lower().encode(), want):
            self.acks_ignored += 1
            print("link: ack {} not for this journal or without a good MAC, ignored".format(seq))
            return
        if seq > self.sent_hi:
            self.acks_ignored += 1  # an ack for something never sent: not the host we trust
            print("link: ack {} beyond {} sent, ignored".format(seq, self.sent_hi))
            return
        self.locker.acknowledged(seq)
        self._wake.set()

    def _on_cmd(self, payload):
        self.locker.command(payload)


class _Collector:
    """A sink that gathers a small payload into a preallocated buffer, then calls back with the
    bytes (or, for one that overflowed, drops it)."""

    def __init__(self, buf, done):
        self.buf = buf
        self.done = done
        self.n = 0

    def start(self):
        self.n = 0
        return self

    def write(self, chunk):
        n = self.n
        end = n + len(chunk)
        if end <= len(self.buf):
            self.buf[n:end] = chunk
        self.n = end

    def close(self):
        if self.n <= len(self.buf):
            # a view, not a copy (two copies of a 1 KB command did not fit a fragmented heap):
            # valid until the next message, so `done` must not keep it
            self.done(memoryview(self.buf)[: self.n])


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _why(e):
    if isinstance(e, OSError) and e.args and e.args[0] == _ETIMEDOUT:
        return "timed out"
    return "{}: {}".format(type(e).__name__, e)


def _tls_context(broker):
    from locker.tls import context  # only TLS sites load it

    return context(broker)
