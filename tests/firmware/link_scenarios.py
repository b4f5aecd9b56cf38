# The link under test, run by tests/test_link.py as a MicroPython process (not a test module):
#
#   micropython tests/firmware/link_scenarios.py '<spec as JSON>'
#
# A stand-in locker with exactly the interface of locker.core.Locker that the link uses (journal,
# keys, state_buffer, state_json, state_rev, online, on_commit, acknowledged, config_receiver,
# command, command_rejected; locker/link.py lists it) over an in-memory journal or the real one,
# so that the link alone is measured in a small heap; the real locker.link and
# locker.mqtt, and a counter task standing for the locker's own work (it must never stall while
# the broker is down or silent). Everything observable is printed as `@@<what> <JSON>` lines.
#
# spec: {"host", "port", "locker_id", "site", "events": N journaled at start,
#        "append_every_ms": M, "append_max": K (more events later), "settings": {...},
#        "max_config_bytes": B, "journal_dir": D (the real journal instead of the in-memory one),
#        "secret": hex (the locker's secret: events' and acks' MACs; default 00 01 .. 1f),
#        "jid": the in-memory journal's id (default 0123456789abcdef)}

import asyncio
import binascii
import gc
import json
import sys
from time import ticks_diff, ticks_ms

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/../../firmware")

from locker.link import Link  # noqa: E402
from locker.mac import message_keys  # noqa: E402

SECRET = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


def say(what, obj):
    print("@@{} {}".format(what, json.dumps(obj)))


class Event:
    def __init__(self, seq, ts, type, bay=None, person=None, by=None, reason=None):
        self.seq = seq
        self.ts = ts
        self.type = type
        self.bay = bay
        self.person = person
        self.by = by
        self.reason = reason


class MemJournal:
    """The journal's interface (last_seq, acked, pending, append/commit, ack, unacked)."""

    def __init__(self, jid):
        self.events = []
        self.last_seq = 0
        self.acked = 0
        self.jid = jid

    @property
    def pending(self):
        return self.last_seq - self.acked

    def append(self, type, ts, bay=None, person=None, by=None, reason=None):
        self.last_seq += 1
        ev = Event(self.last_seq, ts, type, bay, person, by, reason)
        self.events.append(ev)
        return ev

    def commit(self):
        pass  # in memory: appended is committed

    def ack(self, seq):
        if seq > self.last_seq or seq <= self.acked:
            return
        self.acked = seq
        self.events = [ev for ev in self.events if ev.seq > seq]

    def unacked(self, after):
        for ev in self.events:
            if ev.seq > after and ev.seq > self.acked:
                yield ev


class ConfigSink:
    def __init__(self, length):
        self.length = length
        self.received = 0
        self.chunks = 0
        self.biggest = 0
        self.crc = 0

    def write(self, chunk):
        self.received += len(chunk)
        self.chunks += 1
        if len(chunk) > self.biggest:
            self.biggest = len(chunk)
        self.crc = binascii.crc32(chunk, self.crc)

    def close(self):
        gc.collect()
        say(
            "config",
            {
                "length": self.length,
                "received": self.received,
                "chunks": self.chunks,
                "biggest_chunk": self.biggest,
                "crc": self.crc,
                "mem_free": gc.mem_free(),
            },
        )

    def abort(self):
        say("config_aborted", self.received)


class StandIn:
    def __init__(self, spec):
        self.locker_id = spec.get("locker_id", "L1")
        self.journal = MemJournal(spec.get("jid", "0123456789abcdef"))
        secret = binascii.unhexlify(spec.get("secret", SECRET))
        self.keys = message_keys(secret)
        self.online = False
        self.state_rev = 0
        self.on_commit = None  # the link's wake-up, once it exists
        self.max_config = spec.get("max_config_bytes", 131072)
        self.updater = None  # no firmware download in these scenarios (tests/test_e2e_ota.py)

    def offer_sink(self, length):
        say("offer_ignored", length)
        return None

    def record(self, type, bay=None, person=None):
        self.journal.append(type, 1795549393, bay, person)
        self.journal.commit()
        self.state_rev += 1
        if self.on_commit is not None:
            self.on_commit()

    def acknowledged(self, seq):
        before = self.journal.acked
        self.journal.ack(seq)
        if self.journal.acked != before:
            self.state_rev += 1
            say("ack", seq)

    def state_buffer(self):
        return bytearray(256)

    def state_json(self, buf):
        buf[:] = json.dumps(self.state()).encode()
        return buf

    def state(self):
        return {
            "locker": self.locker_id,
            "clock_ok": True,
            "online": self.online,
            "pending": self.journal.pending,
            "config": None,
            "bays": [],
        }

    def config_receiver(self, length):
        if length > self.max_config:
            gc.collect()
            say("config_discarded", {"length": length, "mem_free": gc.mem_free()})
            return None
        return ConfigSink(length)

    def command(self, payload):
        say(
            "cmd",
            {
                "length": len(payload),
                "crc": binascii.crc32(payload),
                "text": bytes(payload[:40]).decode(),
            },
        )

    def command_rejected(self, reason):
        say("cmd_rejected", reason)


class RealJournalStandIn(StandIn):
    """The same, over the real journal (locker/journal.py) in a directory: what survives a
    restart is what the journal kept."""

    def __init__(self, spec):
        super().__init__(spec)
        from locker.segments import Journal

        self.journal = Journal(spec["journal_dir"], lambda: b"", segment_bytes=4096)
        self.journal.open()


async def counter(period_ms=10):
    """The locker's own work: counts every period and reports the longest gap it saw."""
    count = 0
    worst = 0
    last = ticks_ms()
    reported = last
    while True:
        await asyncio.sleep_ms(period_ms)
        now = ticks_ms()
        gap = ticks_diff(now, last)
        if gap > worst:
            worst = gap
        last = now
        count += 1
        if ticks_diff(now, reported) >= 250:
            reported = now
            say("tick", {"count": count, "worst_gap_ms": worst})


async def appender(locker, every_ms, most, when_online=False):
    while when_online and not locker.online:
        await asyncio.sleep_ms(10)
    for _ in range(most):
        await asyncio.sleep_ms(every_ms)
        locker.record("deposit", bay=1, person="P0001")


async def watch(link):
    """Reports the link's counters when they change."""
    seen = None
    online = None
    while True:
        if link.locker.online != online:
            online = link.locker.online
            say("online", online)
        now = (link.connects, link.resends, link.acks_ignored, link.sent_hi)
        if now != seen:
            seen = now
            say(
                "link",
                {"connects": now[0], "resends": now[1], "acks_ignored": now[2], "sent_hi": now[3]},
            )
        await asyncio.sleep_ms(100)


async def main(spec):
    if spec.get("journal_dir"):
        locker = RealJournalStandIn(spec)
    else:
        locker = StandIn(spec)
    for i in range(spec.get("events", 0)):
        locker.record("deposit", bay=1 + i % 8, person="P{:04d}".format(i))
    device = {
        "locker_id": locker.locker_id,
        "site": spec.get("site", "school"),
        "broker": {
            "host": spec.get("host", "127.0.0.1"),
            "port": spec["port"],
            "user": spec.get("user"),
            "password": spec.get("password"),
            "tls": spec.get("tls", False),
            "ca": spec.get("ca"),
        },
    }
    from locker import settings as S
    from locker import unload

    required = {"locker_id": locker.locker_id, "bays": 1, "secret": SECRET}
    settings = S.load(dict(required, settings=spec.get("settings", {})))
    unload("locker.settings")  # as the app does
    link = Link(locker, device, settings)
    asyncio.create_task(counter())
    asyncio.create_task(watch(link))
    if spec.get("append_max"):
        every = spec.get("append_every_ms", 200)
        online = spec.get("append_when_online", False)
        asyncio.create_task(appender(locker, every, spec["append_max"], online))
    gc.collect()
    say("ready", {"mem_free": gc.mem_free()})
    await link.run()


asyncio.run(main(json.loads(sys.argv[1])))
