"""The journal on the simulated flash (firmware/hal/simflash.py counts every program and erase):
wear per event, events until a 512 KB partition is full, and the replay rate after an outage (a
locker with 10,000 pending events connects to the broker and serve)."""

from __future__ import annotations

import json
import time

from . import site
from .core import BUILD, Context, Figure, harness
from .ingest import cpu_ticks, tree_cpu

NAME = "journal"
SECTION = "Journal (simulated flash, 4 KiB blocks)"
SIZES = {
    "full": {
        "blocks": 128,
        "capacity": None,
        "segment": 16384,
        "steady": 5000,
        "warm": 15000,
        "outage": 10000,
        "runs": 3,
    },
    # a small journal budget (two 4 KiB segments) so that filling it takes a second
    "quick": {
        "blocks": 128,
        "capacity": 8192,
        "segment": 4096,
        "steady": 100,
        "warm": 200,
        "outage": 100,
        "runs": 1,
    },
}

# Events as the locker journals them: each committed on its own (one tap, one commit). `acks`:
# the host acknowledges every 32 events (the link's window), so sectors and segments are dropped
# as in service; without acks the journal fills until JournalFull. Layout "ring" (the board's
# journal region, locker/ring.py) gets the locker's idle moment after every commit, as the
# tick gives it (it erases ahead there); `inline` counts the commits during which the flash
# erased anything, i.e. the taps that would have waited for an erase. Layout "segments" is the
# littlefs journal of a board without a region.
WEAR = """
import sys, time, json
sys.path.insert(0, {build!r})
from hal.sim import flash as simflash
from locker.journal import JournalFull
if {layout!r} == "ring":
    from locker.ring import Ring
    dev = simflash.FileBlockDevice({img!r}, 4096, {blocks})
    j = Ring({img!r} + ".d", lambda: b"[]", dev, {capacity}, {segment})
else:
    from locker.segments import Journal
    dev = simflash.mount({img!r}, "/flash", block_count={blocks})
    j = Journal("/flash/journal", lambda: b"[]", {capacity}, {segment})
j.open()
n = 0
# In service the flash has been round the ring before: `warm` events first (acked, idle after
# each, as below), uncounted, so that sectors ahead are no longer erased from new.
for i in range({warm}):
    j.append("deposit", 1795508400 + i, 1 + i % 24, "P{{:04d}}".format(i % 600), None, "pupil")
    j.commit()
    if i % 32 == 31:
        j.ack(j.committed)
    j.idle()
p0, e0 = dev.bytes_programmed, dev.blocks_erased
inline = 0
t0 = time.ticks_ms()
limit = {limit}
while limit == 0 or n < limit:
    try:
        j.append("deposit", 1795508400 + n, 1 + n % 24, "P{{:04d}}".format(n % 600), None, "pupil")
    except JournalFull:
        break
    before = dev.blocks_erased
    j.commit()
    if dev.blocks_erased != before:
        inline += 1
    n += 1
    if {acks} and n % 32 == 0:
        before = dev.blocks_erased
        j.ack(j.committed)
        if dev.blocks_erased != before:
            inline += 1
    j.idle()
ms = time.ticks_diff(time.ticks_ms(), t0)
print(json.dumps({{"events": n, "programmed": dev.bytes_programmed - p0, "inline": inline,
                  "erased": dev.blocks_erased - e0, "ms": ms, "capacity": j.capacity}}))
"""

# An outage: the locker's own flash image filled with `n` pending events by the real Locker on
# the sim board (what a day of taps with the network down leaves behind), quickly, in-process.
FILL = """
import sys, json
sys.path.insert(0, {build!r})
from hal.sim.board import Board
from locker import settings as S
from locker.core import Locker
device = json.loads({device!r})
st = S.load(device)
board = Board(device, st)
locker = Locker(board, device, st)
board.set_clock({clock})
for i in range({n}):
    locker.tap_text("06{{:06X}}".format(i))
print(json.dumps({{"pending": locker.journal.pending}}))
"""


def wear(ctx: Context, blocks: int, limit: int, acks: bool, layout: str = "ring") -> dict:
    work = ctx.scratch("wear")
    (work / "flash.img.d").mkdir(exist_ok=True)
    capacity = ctx.sizes["capacity"] if not limit else None
    segment = ctx.sizes["segment"] if not limit else 16384
    script = WEAR.format(
        build=str(BUILD),
        layout=layout,
        img=str(work / "flash.img"),
        blocks=blocks,
        limit=limit,
        acks=acks,
        warm=ctx.sizes["warm"] if acks else 0,
        capacity=capacity,
        segment=segment,
    )
    return site.run_micropython(script, heapsize="192k")


def replay(ctx: Context, n: int) -> dict:
    work = ctx.scratch("replay")
    dbfile = work / "lockers.db"
    db = site.db_url(dbfile)
    broker = harness.Broker(work).start()
    serve = locker = None
    try:
        site.setup_site(work, db, n_pupils=0)
        device = site.add_locker(work, db, None, "L1", bays=8)
        device["broker"].update(host=broker.host, port=broker.port)
        # filled without the chip's times (what is measured is the replay, which has them)
        quick = {**device, "sim": {**device.get("sim", {}), "flash_timing": "off"}}
        filled = site.run_micropython(
            FILL.format(
                build=str(BUILD),
                device=json.dumps(quick),
                clock=site.BEFORE_SCHOOL,
                n=n,
            ),
            heapsize="192k",
        )
        pending = filled["pending"]
        serve = harness.Serve(work, db, broker).start()
        site.serve_subscribed(broker, dbfile, db, work)
        watch = EventWatch(broker, "lockers/+/L1/event")
        locker = harness.SimLocker(
            work, "L1", broker=broker, device=device, compiled=True, flash_timing="typical"
        )
        serve_cpu0 = tree_cpu(serve.process.proc.pid)
        busy0, total0 = cpu_ticks()
        t0 = time.monotonic()
        locker.start()
        first = locker.state()["pending"]
        site.wait_until(lambda: locker.state()["pending"] == 0, 600, 0.05, "replay")
        elapsed = time.monotonic() - t0
        busy1, total1 = cpu_ticks()
        locker_cpu = tree_cpu(locker.process.proc.pid)
        flash = locker.send("outputs").get("flash", {})
        serve_cpu = tree_cpu(serve.process.proc.pid) - serve_cpu0
        watch.close()
        counter = site.EventCounter(dbfile)
        stored = counter.count("L1")
        counter.close()
    finally:
        if locker is not None:
            locker.kill()
        if serve is not None:
            serve.stop()
        broker.kill()
    sending = watch.last - watch.first if watch.messages > 1 else elapsed
    return {
        "pending": max(pending, first),
        "seconds": elapsed,
        "stored": stored,
        "messages": watch.messages,
        "events": watch.events,
        "to_first": watch.first - t0,
        "sending": sending,
        "locker_cpu": locker_cpu,
        "serve_cpu": serve_cpu,
        "flash_ms": flash.get("busy_ms", 0),
        "busy": (busy1 - busy0) / max(total1 - total0, 1),
    }


class EventWatch:
    """Counts the messages and events a locker publishes on `event` (a paho subscriber beside
    serve): events per message, and when the first and the last went by."""

    def __init__(self, broker, topic: str):
        import threading

        import paho.mqtt.client as mqtt

        self.messages = self.events = 0
        self.first = self.last = 0.0
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=0)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the event watcher did not subscribe")

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        if not self.messages:
            self.first = now
        self.last = now
        self.messages += 1
        payload = bytes(msg.payload)
        # an array's members, each an object: its "seq" keys counted without parsing the JSON
        self.events += payload.count(b'"seq"') if payload[:1] == b"[" else 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run(ctx: Context) -> list[Figure]:
    blocks = ctx.sizes["blocks"]
    kib = blocks * 4
    full = [wear(ctx, blocks, 0, False) for _ in range(ctx.runs)]
    steady = [wear(ctx, blocks, ctx.sizes["steady"], True) for _ in range(ctx.runs)]
    lfs = [wear(ctx, blocks, ctx.sizes["steady"], True, "segments") for _ in range(ctx.runs)]
    f0, s0 = full[0], steady[0]
    ctx.log(f"  journal until full: {f0}; steady: {s0}; littlefs steady: {lfs[0]}")
    figs = [
        Figure(
            SECTION,
            f"events until the journal is full ({kib} KiB partition)",
            "events",
            [r["events"] for r in full],
            f"no acks; journal budget {f0['capacity'] // 1024} KiB of the partition",
            0,
        ),
        Figure(
            SECTION,
            "bytes programmed per event, filling",
            "B",
            [r["programmed"] / r["events"] for r in full],
            "one commit per event, from a new (erased) partition",
            1,
        ),
        Figure(
            SECTION,
            "blocks erased per event, filling",
            "blocks",
            [r["erased"] / r["events"] for r in full],
            "",
            4,
        ),
        Figure(
            SECTION,
            "bytes programmed per event, in service",
            "B",
            [r["programmed"] / r["events"] for r in steady],
            f"{s0['events']:,} events after {ctx.sizes['warm']:,} (the ring wrapped), acked"
            " every 32, idle after each; goal 64 or fewer",
            1,
        ),
        Figure(
            SECTION,
            "blocks erased per event, in service",
            "blocks",
            [r["erased"] / r["events"] for r in steady],
            "goal 0.02 or fewer",
            4,
        ),
        Figure(
            SECTION,
            "commits and acks that erased, in service",
            "",
            [r["inline"] for r in steady],
            "goal 0: every erase done ahead, in idle",
            0,
        ),
        Figure(
            SECTION,
            "littlefs journal (no region): bytes programmed per event",
            "B",
            [r["programmed"] / r["events"] for r in lfs],
            "the layout of a board without a journal partition, same workload",
            1,
        ),
        Figure(
            SECTION,
            "littlefs journal (no region): blocks erased per event",
            "blocks",
            [r["erased"] / r["events"] for r in lfs],
            "",
            4,
        ),
        Figure(
            SECTION,
            "littlefs journal (no region): commits and acks that erased",
            "",
            [r["inline"] for r in lfs],
            "",
            0,
        ),
        Figure(
            SECTION,
            "events journaled per second (unix port)",
            "events/s",
            [r["events"] / max(r["ms"], 1) * 1000 for r in steady],
            "append + commit, each to the image file",
            0,
        ),
    ]
    rep = [replay(ctx, ctx.sizes["outage"]) for _ in range(ctx.runs)]
    ctx.log(f"  replay: {rep}")
    figs += [
        Figure(
            SECTION,
            "replay after an outage: events per second",
            "events/s",
            [r["pending"] / r["seconds"] for r in rep],
            f"{rep[0]['pending']:,} pending; locker start to pending 0, through serve;"
            " goal 5,000 or more",
            0,
        ),
        Figure(
            SECTION,
            "replay after an outage: time to empty the journal",
            "s",
            [r["seconds"] for r in rep],
            "",
            1,
        ),
        Figure(
            SECTION,
            "replay: events per message",
            "events",
            [r["events"] / max(r["messages"], 1) for r in rep],
            "JSON arrays of at most event_batch_bytes (4096) each",
            1,
        ),
        Figure(
            SECTION,
            "replay: messages per second",
            "messages/s",
            [r["messages"] / r["sending"] for r in rep],
            "first event message to last, seen by a subscriber beside serve",
            0,
        ),
        Figure(
            SECTION,
            "replay: the locker's CPU per event",
            "µs",
            [r["locker_cpu"] / r["pending"] * 1e6 for r in rep],
            "user + system of the MicroPython process, boot included: reading, JSON, MAC, send",
            0,
        ),
        Figure(
            SECTION,
            "replay: the locker's flash busy per event",
            "µs",
            [r["flash_ms"] / r["pending"] * 1000 for r in rep],
            "the chip's modelled times (typical), boot included: the acks' journal records",
            0,
        ),
        Figure(
            SECTION,
            "replay: serve's CPU per event",
            "µs",
            [r["serve_cpu"] / r["pending"] * 1e6 for r in rep],
            "serve and its ingest process, meanwhile",
            0,
        ),
        Figure(
            SECTION,
            "replay: locker start to its first event on the wire",
            "ms",
            [r["to_first"] * 1000 for r in rep],
            "boot, journal recovery, connect",
            0,
        ),
        Figure(
            SECTION,
            "replay: cores busy meanwhile",
            "%",
            [r["busy"] * 100 for r in rep],
            "both cores of the machine, whatever runs on them (other work included)",
            0,
        ),
    ]
    return figs
