"""`python -m bench [--quick] [--only NAME ...] [--runs N] [--out FILE]`: runs the benchmarks,
prints the table and writes it (with the machine) to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from . import endtoend, firmware, ingest, journal, scale, workers
from .core import ROOT, Context, machine, make_workdir, markdown, remove_workdir, table

BENCHMARKS = {m.NAME: m for m in (ingest, workers, endtoend, firmware, journal, scale)}
INTRO = """
What bounds each figure is measured in the same run, next to it: the broker's own fan-out
(`mosquitto_sub` receiving the stream `lockerctl serve` stores), SQLite's own insert rate (a bare
`executemany` of the same rows), the CPU each part spends per event and how busy the machine's
two cores are (ingest, and several ingest workers on PostgreSQL), the Excel writer alone beside
the whole export, the journal's partition size. Each figure is the median of the
runs with their spread (min – max). Firmware figures come from the MicroPython unix port on this
machine (64-bit, objects twice an ESP32's size, bytecode in the heap rather than frozen in flash):
the ESP32's times are several times longer and its heap figures smaller; the ratios hold.
The simulated lockers' flash charges a real chip's times as real delays (a Winbond W25Q32JV's
typical ones: 45 ms per 4 KiB sector erased, 0.4 ms per 256-byte page programmed; device.json
`sim.flash_timing`), so end-to-end and firmware figures include them.
The ingest broker queues without limit (a site's broker drops what is queued beyond 10,000
messages for a slow subscriber, and lockers resend it after their ack timeout; `mosquitto_pub`
does not), so that the time to store every event is what is measured.
Benchmarks are not tests: nothing here fails on a number (`tests/test_bench_smoke.py` only checks
that every benchmark runs, at the `--quick` sizes).
"""


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test's)")
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help="run only this benchmark (repeatable): " + ", ".join(BENCHMARKS),
    )
    p.add_argument("--runs", type=int, help="runs per figure (default: each benchmark's own)")
    p.add_argument(
        "--out",
        default=str(ROOT / "docs" / "benchmarks.md"),
        help="Markdown page to write ('-' for none; default docs/benchmarks.md)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = args.only or list(BENCHMARKS)
    if args.runs is not None and args.runs < 1:
        print("python -m bench: --runs must be at least 1", file=sys.stderr)
        return 2
    workdir = make_workdir()
    figures, failed = [], []
    started = time.monotonic()
    print(
        f"benchmarks: {', '.join(names)}{' (quick sizes)' if args.quick else ''};"
        f" scratch {workdir}",
        flush=True,
    )
    try:
        for name in names:
            mod = BENCHMARKS[name]
            sizes = dict(mod.SIZES["quick" if args.quick else "full"])
            runs = args.runs or sizes.pop("runs", 1)
            sizes.pop("runs", None)
            ctx = Context(
                sizes=sizes,
                runs=runs,
                workdir=workdir,
                quick=args.quick,
                log=lambda msg: print(msg, flush=True),
            )
            t0 = time.monotonic()
            print(f"-- {name} {sizes} x {runs} run(s)", flush=True)
            try:
                got = mod.run(ctx)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            figures += got
            print(f"   {name}: {len(got)} figures in {time.monotonic() - t0:.1f} s", flush=True)
    finally:
        if not args.keep:
            remove_workdir(workdir)
    elapsed = time.monotonic() - started
    print(table(figures))
    if args.out != "-" and figures:
        extra = " ".join(a for a in (sys.argv[1:] if argv is None else argv))
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(markdown(figures, machine(), INTRO, extra, elapsed))
        print(f"\nwritten to {args.out}")
    if failed:
        print(f"benchmarks that did not run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
