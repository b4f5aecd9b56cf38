"""The host at a trust's scale: a store of a million events (filled through `Store.ingest` in big
batches), exported to CSV and Excel (our own streaming writer, `lockerctl.xlsxstream`; goal: a
million rows in under 30 s within 200 MiB; XlsxWriter's constant-memory mode, measured beside it,
is what it replaced), and `audit verify` over all of it. Each command runs as a subprocess
of a small wrapper that reads the command's peak memory (max RSS) with
getrusage(RUSAGE_CHILDREN), so no other child of the benchmark is counted."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from . import site
from .core import ROOT, Context, Figure, harness

NAME = "scale"
SECTION = "Host at scale"
SIZES = {
    "full": {"events": 1_000_000, "lockers": 20, "batch": 20_000, "runs": 3, "xlsx_runs": 2},
    "quick": {"events": 2_000, "lockers": 4, "batch": 500, "runs": 1, "xlsx_runs": 1},
}

WRAPPER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
s = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": p.returncode, "s": s, "maxrss_kib": rss,
                  "err": p.stderr.decode(errors="replace")[-500:]}))
"""


def measured(argv) -> dict:
    """Runs argv under the wrapper: seconds and peak RSS (KiB); RuntimeError if it failed."""
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["rc"] != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:3]))} failed ({r['rc']}): {r['err']}")
    return r


def fill(db: str, events: int, lockers: int, batch: int) -> float:
    """Stores `events` events through Store.ingest, `batch` at a time; returns seconds."""
    from lockerctl.store import Store

    ids = [f"L{i:02d}" for i in range(1, lockers + 1)]
    per_locker = events // lockers
    kinds = ("deposit", "retrieve", "deposit", "retrieve", "denied", "override")
    store = Store.open(db)
    t0 = time.perf_counter()
    step = max(1, batch // lockers)
    try:
        for start in range(1, per_locker + 1, step):
            items = []
            for li, lid in enumerate(ids):
                for seq in range(start, min(start + step, per_locker + 1)):
                    kind = kinds[seq % len(kinds)]
                    # a school year of days, 8:00 to 16:00: spread over ~190 days
                    ts = site.BEFORE_SCHOOL - 200 * 86400 + (seq * 37 + li * 11) % (190 * 86400)
                    items.append(
                        (
                            lid,
                            {
                                "seq": seq,
                                "ts": ts,
                                "type": kind,
                                "bay": None if kind == "denied" else 1 + seq % 24,
                                "person": f"P{(seq * 7 + li) % 600:04d}",
                                "by": "H001" if kind == "override" else None,
                                "reason": "unknown_card" if kind == "denied" else None,
                            },
                        )
                    )
            store.ingest("school", items)
    finally:
        store.close()
    return time.perf_counter() - t0


# What the export used with XlsxWriter (before `xlsxstream`): measured beside ours.
XLSXWRITER_OPTIONS = {
    "constant_memory": True,
    "strings_to_formulas": False,
    "strings_to_numbers": False,
    "strings_to_urls": False,
}


def xlsxwriter_alone(rows: int, path) -> float:
    """Microseconds per row for XlsxWriter alone (constant memory, the export's options) writing
    a typical row of the export's 13 cells (11 text, 2 numbers) `rows` times: what bounds the
    Excel export, measured beside it."""
    import xlsxwriter
    from lockerctl.export import HEADER

    cells = ["2026-11-24T08:20:00+00:00", "L01", 7, "deposit", "P0042", "Pupil 42", "pupil"]
    cells += ["", "", 42, "locker", "be0cbe0cbe0cbe0c", ""]
    assert len(cells) == len(HEADER)
    t0 = time.perf_counter()
    with open(path, "wb") as out:
        wb = xlsxwriter.Workbook(out, XLSXWRITER_OPTIONS)
        ws = wb.add_worksheet("events")
        for r in range(1, rows + 1):
            for c, v in enumerate(cells):
                if isinstance(v, str):
                    ws.write_string(r, c, v)
                else:
                    ws.write_number(r, c, v)
        wb.close()
    return (time.perf_counter() - t0) / rows * 1e6


def xlsxstream_alone(rows: int, path) -> float:
    """Microseconds per row for `xlsxstream` alone writing the same 13 cells `rows` times."""
    from lockerctl import xlsxstream

    cells = ["2026-11-24T08:20:00+00:00", "L01", 7, "deposit", "P0042", "Pupil 42", "pupil"]
    cells += ["", "", 42, "locker", "be0cbe0cbe0cbe0c", ""]
    t0 = time.perf_counter()
    with open(path, "wb") as out:
        wb = xlsxstream.Workbook(out)
        wb.add_sheet("events")
        for _ in range(rows):
            wb.row(cells)
        wb.close()
    return (time.perf_counter() - t0) / rows * 1e6


def size_text(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def run(ctx: Context) -> list[Figure]:
    n, lockers = ctx.sizes["events"], ctx.sizes["lockers"]
    work = ctx.scratch("scale")
    dbfile = work / "lockers.db"
    db = site.db_url(dbfile)
    site.setup_site(work, db, n_pupils=600)
    seconds = fill(db, n, lockers, ctx.sizes["batch"])
    stored = n // lockers * lockers
    ctx.log(f"  filled {stored:,} events in {seconds:.1f} s")
    lc = harness.LOCKERCTL
    csv_runs, xlsx_runs, verify_runs = [], [], []
    for _ in range(ctx.runs):
        out = work / "trail.csv"
        csv_runs.append(measured([lc, "export", "--format", "csv", "-o", out, "--db", db]))
        csv_size = out.stat().st_size
        out.unlink()
        verify_runs.append(measured([lc, "audit", "verify", "--db", db]))
    alone, ours = [], []
    bound_rows = min(stored, 100_000)
    for _ in range(min(ctx.runs, ctx.sizes["xlsx_runs"])):
        out = work / "trail.xlsx"
        xlsx_runs.append(measured([lc, "export", "--format", "xlsx", "-o", out, "--db", db]))
        xlsx_size = out.stat().st_size
        out.unlink()
        alone.append(xlsxwriter_alone(bound_rows, out))
        out.unlink()
        ours.append(xlsxstream_alone(bound_rows, out))
        out.unlink()
    what = f"{stored:,} events"

    def mib(runs):
        return [r["maxrss_kib"] / 1024 for r in runs]

    return [
        Figure(
            SECTION,
            "fill the store through Store.ingest",
            "events/s",
            [stored / seconds],
            f"{what} in batches of {ctx.sizes['batch']:,}, trail chained",
            0,
        ),
        Figure(
            SECTION,
            "export to CSV",
            "s",
            [r["s"] for r in csv_runs],
            f"{what}, {size_text(csv_size)} file",
            1,
        ),
        Figure(SECTION, "export to CSV, peak memory", "MiB", mib(csv_runs), "max RSS", 0),
        Figure(
            SECTION,
            "export to Excel (xlsx)",
            "s",
            [r["s"] for r in xlsx_runs],
            f"{what}, {size_text(xlsx_size)} file; goal under 30 s for 1,000,000",
            1,
        ),
        Figure(
            SECTION,
            "export to Excel, per row",
            "µs",
            [r["s"] / stored * 1e6 for r in xlsx_runs],
            "the whole export: read, format, write",
            1,
        ),
        Figure(
            SECTION,
            "xlsxstream alone, per row",
            "µs",
            ours,
            f"the writer's share: the same 13 cells written {bound_rows:,} times, nothing read",
            1,
        ),
        Figure(
            SECTION,
            "XlsxWriter alone, per row",
            "µs",
            alone,
            "what it replaced (constant-memory mode), the same rows",
            1,
        ),
        Figure(
            SECTION,
            "export to Excel, peak memory",
            "MiB",
            mib(xlsx_runs),
            "max RSS; goal within 200 MiB",
            0,
        ),
        Figure(
            SECTION, "audit verify", "s", [r["s"] for r in verify_runs], f"{what} in the chain", 1
        ),
        Figure(SECTION, "audit verify, peak memory", "MiB", mib(verify_runs), "max RSS", 0),
    ]
