"""The firmware on the MicroPython unix port: decision time per tap with a 600-card roster (the
real Locker in-process on the simulated flash), heap high-water mark through a school day (the
sim's `outputs`), boot to ready, and `.py` against `.mpy` import time."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time

from . import site
from .core import BUILD, ROOT, Context, Figure, harness, percentile

NAME = "firmware"
SECTION = "Firmware (MicroPython unix port)"
SIZES = {
    "full": {"cards": 600, "taps": 600, "day_pupils": 600, "boots": 5, "runs": 3},
    "quick": {"cards": 20, "taps": 12, "day_pupils": 20, "boots": 1, "runs": 1},
}

# The real Locker on the sim board (flash image mounted at /flash), the bundle copied in as the
# link would store it, then taps in a loop: deposit, retrieve (after home time), an unknown card.
DECIDE = """
import sys, time, gc, json
sys.path.insert(0, {build!r})
from hal.sim.board import Board
from locker import settings as S
from locker.core import Locker
device = json.loads({device!r})
st = S.load(device)
board = Board(device, st)
src = open({bundle!r}, "rb")
dst = open("/flash/config.bin", "wb")
buf = bytearray(1024)
while True:
    n = src.readinto(buf)
    if not n:
        break
    dst.write(memoryview(buf)[:n])
src.close()
dst.close()
locker = Locker(board, device, st)
board.set_clock({clock})
kinds = {{"deposit": [], "retrieve": [], "denied": []}}
waited = []  # taps during which the flash erased (the tap waited for it)
region = board.journal_region
def erased():
    return board.flash.blocks_erased + (region.blocks_erased if region else 0)
def tap(uid):
    e0 = erased()
    t0 = time.ticks_us()
    r = locker.tap_text(uid)
    dt = time.ticks_diff(time.ticks_us(), t0)
    kinds[r.get("action") or "denied"].append(dt)
    if erased() != e0:
        waited.append(dt)
    if r["result"] == "granted":
        locker.door(r["bay"], 1)
        locker.door(r["bay"], 0)
    locker.tick()  # the main loop's tick between taps (a board ticks every second)
for i in range({taps} // 3):
    uid = "05{{:06X}}".format(i % {cards})
    tap(uid)
    tap(uid)
    tap("06{{:06X}}".format(i))
    locker.acknowledged(locker.journal.committed)
gc.collect()
print(json.dumps({{"kinds": kinds, "waited": waited, "mem_alloc": gc.mem_alloc(),
                  "erased": erased(), "region": board.journal_region is not None}}))
"""

IMPORT = """
import sys, time, gc, json
gc.collect()
before = gc.mem_alloc()
t0 = time.ticks_us()
sys.path.insert(0, {path!r})
import hal.sim.board, locker.core, locker.link, hal.sim.control, app
dt = time.ticks_diff(time.ticks_us(), t0)
gc.collect()
print(json.dumps({{"us": dt, "heap": gc.mem_alloc() - before}}))
"""


def decision(ctx: Context, cards: int, taps: int) -> dict:
    work = ctx.scratch("decide")
    secret = secrets.token_bytes(32)
    bundle = work / "config.bin"
    bundle.write_bytes(site.bundle_for(cards, secret))
    device = {
        "locker_id": "L1",
        "site": "school",
        "board": "sim",
        "bays": 24,
        "secret": secret.hex(),
        "data_dir": str(work / "data"),
    }
    # A board in service: its journal partition has been written round before, so the ring
    # must erase every sector ahead of its head (a new partition, erased, would need none).
    (work / "data").mkdir(exist_ok=True)
    (work / "data" / "journal.img").write_bytes(bytes(96 * 4096))
    script = DECIDE.format(
        build=str(BUILD),
        device=json.dumps(device),
        bundle=str(bundle),
        clock=site.AFTER_HOME,
        taps=max(3, taps),
        cards=cards,
    )
    return site.run_micropython(script, heapsize="256k")


def imports(path) -> dict:
    return site.run_micropython(IMPORT.format(path=str(path)), heapsize="2m")


def boot(ctx: Context, compiled: bool, fresh: bool, runs: int) -> list[float]:
    """Seconds from process start to the control port accepting a connection."""
    work = ctx.scratch("boot")
    out = []
    locker = harness.SimLocker(work, "B1", compiled=compiled)  # broker port: nothing there
    if not fresh:
        locker.start()  # the first boot formats the flash: not what a restart costs
        locker.kill()
    for k in range(runs):
        if fresh:
            locker = harness.SimLocker(work, f"B{k + 2}", compiled=compiled)
        env = dict(__import__("os").environ, LOCKER_DEVICE=str(locker.device_path))
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(a) for a in locker.argv()],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", locker.port), timeout=1):
                        out.append(time.perf_counter() - t0)
                        break
                except OSError as e:
                    if proc.poll() is not None or time.perf_counter() - t0 > 30:
                        raise RuntimeError("the sim locker did not open its control port") from e
                    time.sleep(0.001)
        finally:
            proc.kill()
            proc.wait()
    return out


def school_day(ctx: Context, pupils: int) -> dict:
    """A day at a 24-bay locker with the whole roster loaded: morning deposits (staff and
    pupils), break-time retrievals, an SLT override, home time, an uncollected phone; then the
    sim's heap high-water mark."""
    work = ctx.scratch("day")
    dbfile = work / "lockers.db"
    db = site.db_url(dbfile)
    broker = harness.Broker(work).start()
    serve = locker = None
    try:
        site.setup_site(work, db, n_pupils=pupils)
        device = site.add_locker(work, db, broker, "L1", bays=24)
        serve = harness.Serve(work, db, broker).start()
        # the mpy build, as the ESP32 runs it; 192k: see the note on the heap figures
        locker = harness.SimLocker(
            work, "L1", broker=broker, device=device, compiled=True, heapsize="192k"
        )
        locker.start()
        site.wait_until(lambda: locker.state()["config"] is not None, 60, 0.05, "config")
        locker.clock(site.BEFORE_SCHOOL)
        taps = 0

        def visit(uid):
            nonlocal taps
            taps += 1
            r = locker.tap(uid)
            if r.get("result") == "granted" and r.get("bay"):
                locker.door(r["bay"], "open")
                locker.door(r["bay"], "close")
            return r

        staff = site.STAFF[:4]
        morning = [site.pupil_uid(i) for i in range(min(pupils, 20))]
        for uid in staff + morning:
            visit(uid)
        visit("07ABCDEF")  # an unknown card
        locker.clock(site.MORNING_BREAK)
        for uid in staff:  # staff take their phones at break and put them back
            visit(uid)
            visit(uid)
        visit(site.SLT_FOB)  # SLT override for one pupil
        visit(morning[0])
        locker.clock(site.AFTER_HOME)
        for uid in morning[1:-2]:
            visit(uid)
        locker.clock(site.AFTER_HOME + 3600)  # an hour after home time: two phones uncollected
        time.sleep(2.5)
        for uid in staff + morning[-2:]:
            visit(uid)
        site.wait_until(lambda: locker.state()["pending"] == 0, 60, 0.05, "events stored")
        heap = locker.send("outputs")["heap"]
        events = site.EventCounter(dbfile)
        n_events = events.count("L1")
        events.close()
    finally:
        if locker is not None:
            locker.kill()
        if serve is not None:
            serve.stop()
        broker.kill()
    return {"heap": heap, "taps": taps, "events": n_events}


def run(ctx: Context) -> list[Figure]:
    cards, taps = ctx.sizes["cards"], ctx.sizes["taps"]
    figs = []
    dec = [decision(ctx, cards, taps) for _ in range(ctx.runs)]
    for kind in ("deposit", "retrieve", "denied"):
        us = [percentile(d["kinds"][kind], 50) / 1000 for d in dec]
        figs.append(
            Figure(
                SECTION,
                f"decision per tap, {kind}, p50",
                "ms",
                us,
                f"{cards}-card roster, journaled on the sim flash, mpy"
                if kind == "deposit"
                else "",
                2,
            )
        )
    every = [[x / 1000 for k in d["kinds"].values() for x in k] for d in dec]
    figs.append(
        Figure(
            SECTION,
            "tap to bay unlocked, all, p99",
            "ms",
            [percentile(e, 99) for e in every],
            f"{len(every[0])} taps a run, the locker's tick between taps; goal under 50",
            2,
        )
    )
    figs.append(
        Figure(
            SECTION,
            "tap to bay unlocked, all, worst",
            "ms",
            [max(e) for e in every],
            "goal under 100",
            2,
        )
    )
    figs.append(
        Figure(
            SECTION,
            "taps that waited for a flash erase",
            "taps",
            [len(d["waited"]) for d in dec],
            "goal 0: the journal's ring erases ahead, in the tick",
            0,
        )
    )
    figs.append(
        Figure(
            SECTION,
            "flash sectors erased meanwhile",
            "sectors",
            [d["erased"] for d in dec],
            "boot and ticks: the partition starts written, as a board's in service",
            0,
        )
    )

    days = [school_day(ctx, ctx.sizes["day_pupils"]) for _ in range(ctx.runs)]
    ctx.log(
        f"  school day: {days[0]['taps']} taps, {days[0]['events']} events, heap {days[0]['heap']}"
    )
    note = (
        f"{days[0]['taps']} taps, {days[0]['events']} events, "
        f"{ctx.sizes['day_pupils'] + 10}-card roster, 24 bays, mpy"
    )
    figs += [
        Figure(
            SECTION,
            "heap high-water mark through a school day",
            "KiB",
            [d["heap"]["max_used"] / 1024 for d in days],
            note,
            1,
        ),
        Figure(
            SECTION,
            "  of which loaded code (frozen in flash on an ESP32)",
            "KiB",
            [d["heap"]["code"] / 1024 for d in days],
            "",
            1,
        ),
        Figure(
            SECTION,
            "  of which the running locker",
            "KiB",
            [(d["heap"]["max_used"] - d["heap"]["code"]) / 1024 for d in days],
            "what an ESP32's heap must hold",
            1,
        ),
    ]

    boots = ctx.sizes["boots"]
    figs += [
        Figure(
            SECTION,
            "boot to ready (restart), .py",
            "ms",
            [t * 1000 for t in boot(ctx, False, False, boots)],
            "process start to control port open",
            0,
        ),
        Figure(
            SECTION,
            "boot to ready (restart), .mpy",
            "ms",
            [t * 1000 for t in boot(ctx, True, False, boots)],
            "",
            0,
        ),
        Figure(
            SECTION,
            "boot to ready (first boot, formats the flash), .mpy",
            "ms",
            [t * 1000 for t in boot(ctx, True, True, boots)],
            "",
            0,
        ),
    ]
    py = [imports(ROOT / "firmware") for _ in range(boots)]
    mpy = [imports(BUILD) for _ in range(boots)]
    figs += [
        Figure(
            SECTION,
            "import the firmware, .py (compiles)",
            "ms",
            [r["us"] / 1000 for r in py],
            "hal.sim.board/control, locker.core/link, app",
            1,
        ),
        Figure(SECTION, "import the firmware, .mpy", "ms", [r["us"] / 1000 for r in mpy], "", 1),
        Figure(SECTION, "heap after import, .py", "KiB", [r["heap"] / 1024 for r in py], "", 1),
        Figure(SECTION, "heap after import, .mpy", "KiB", [r["heap"] / 1024 for r in mpy], "", 1),
    ]
    return figs
