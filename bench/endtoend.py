"""End to end: a card tapped at a simulated locker (the real firmware on the unix port) to its row
in the host's audit store, through a real mosquitto and `lockerctl serve`."""

from __future__ import annotations

import time

from . import site
from .core import Context, Figure, harness, percentile

NAME = "endtoend"
SECTION = "End to end: tap to row in the trail"
SIZES = {
    "full": {"taps": 200, "runs": 3},
    "quick": {"taps": 6, "runs": 1},
}


def one_run(ctx: Context, taps: int) -> dict:
    work = ctx.scratch("endtoend")
    dbfile = work / "lockers.db"
    db = site.db_url(dbfile)
    broker = harness.Broker(work).start()
    serve = locker = counter = None
    try:
        site.setup_site(work, db, n_pupils=0)
        device = site.add_locker(work, db, broker, "L1", bays=8)
        serve = harness.Serve(work, db, broker).start()
        locker = harness.SimLocker(
            work, "L1", broker=broker, device=device, compiled=True, flash_timing="typical"
        )
        locker.start()
        site.wait_until(lambda: locker.state()["config"] is not None, 30, 0.05, "config")
        locker.clock(site.BEFORE_SCHOOL)  # staff may deposit and retrieve before 08:45
        site.wait_until(lambda: locker.state()["pending"] == 0, 30, 0.05, "boot event stored")
        counter = site.EventCounter(dbfile)
        to_row, round_trip = [], []
        for i in range(taps):
            card = site.STAFF[(i // 2) % len(site.STAFF)]
            base = counter.count("L1")
            t0 = time.perf_counter()
            reply = locker.tap(card)
            t1 = time.perf_counter()
            if reply.get("result") != "granted":
                raise RuntimeError(f"tap {i} of {card} not granted: {reply}")
            while counter.count("L1") <= base:
                if time.perf_counter() - t0 > 30:
                    raise TimeoutError(f"tap {i}: no row in the trail after 30 s")
                time.sleep(0.0005)
            to_row.append(time.perf_counter() - t0)
            round_trip.append(t1 - t0)
            locker.door(reply["bay"], "open")
            locker.door(reply["bay"], "close")
        heap = locker.send("outputs")["heap"]
    finally:
        if counter is not None:
            counter.close()
        if locker is not None:
            locker.kill()
        if serve is not None:
            serve.stop()
        broker.kill()
    return {"to_row": to_row, "round_trip": round_trip, "heap": heap}


def run(ctx: Context) -> list[Figure]:
    taps = ctx.sizes["taps"]
    results = []
    for k in range(ctx.runs):
        r = one_run(ctx, taps)
        ctx.log(
            f"  endtoend run {k + 1}: p50 {percentile(r['to_row'], 50) * 1000:.1f} ms,"
            f" p99 {percentile(r['to_row'], 99) * 1000:.1f} ms"
        )
        results.append(r)
    ms = [[x * 1000 for x in r["to_row"]] for r in results]
    rt = [[x * 1000 for x in r["round_trip"]] for r in results]
    what = f"{taps} granted taps a run (deposit, retrieve), mpy build"
    return [
        Figure(
            SECTION, "tap to row in the store, p50", "ms", [percentile(s, 50) for s in ms], what, 1
        ),
        Figure(
            SECTION, "tap to row in the store, p99", "ms", [percentile(s, 99) for s in ms], "", 1
        ),
        Figure(SECTION, "tap to row in the store, max", "ms", [max(s) for s in ms], "", 1),
        Figure(
            SECTION,
            "control-port tap round trip, p50",
            "ms",
            [percentile(s, 50) for s in rt],
            "the decision, journaled, seen from outside",
            2,
        ),
        Figure(
            SECTION,
            "control-port tap round trip, p99",
            "ms",
            [percentile(s, 99) for s in rt],
            "",
            2,
        ),
    ]
