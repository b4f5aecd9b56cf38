"""What every benchmark shares: figures with their spread, the run context, the machine, the table
and the Markdown page."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the end-to-end harness: real broker, sim lockers, serve

import harness  # noqa: E402

MICROPYTHON = harness.MICROPYTHON
BUILD = ROOT / "build" / "firmware"


@dataclass
class Figure:
    """One measured quantity: every sample taken (one per run), shown as median and spread."""

    section: str
    name: str
    unit: str
    samples: list[float]
    note: str = ""
    digits: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def spread(self) -> str:
        if len(self.samples) < 2:
            return "(1 run)"
        lo, hi = min(self.samples), max(self.samples)
        return f"{fmt(lo, self.digits)} – {fmt(hi, self.digits)} ({len(self.samples)} runs)"

    def value(self) -> str:
        return fmt(self.median, self.digits)


def fmt(x: float, digits: int = 1) -> str:
    if isinstance(x, int) or (float(x).is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    return f"{x:,.{digits}f}"


@dataclass
class Context:
    """What a benchmark is given: its sizes, how many runs, a scratch directory it owns."""

    sizes: dict
    runs: int
    workdir: Path
    quick: bool
    log: callable = print
    _dirs: int = field(default=0)

    def scratch(self, name: str) -> Path:
        self._dirs += 1
        path = self.workdir / f"{self._dirs:02d}-{name}"
        path.mkdir(parents=True)
        return path


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="classlocker-bench-"))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


# -- the machine ----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "micropython": _version([str(MICROPYTHON), "-c", _MPY_VERSION]),
        "mosquitto": _version([harness.MOSQUITTO, "-h"], first_line=True),
        "sqlite": _sqlite_version(),
        "commit": _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


_MPY_VERSION = (
    "import sys; v = sys.implementation.version; print('MicroPython {}.{}.{} ({})'.format("
    "v[0], v[1], v[2], sys.version.split('MicroPython ')[-1]))"
)


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _version(argv, first_line=False) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


# -- output ---------------------------------------------------------------------------------------

HEADERS = ("figure", "median", "unit", "spread (min – max)", "note")


def rows(figures: list[Figure]) -> list[tuple[str, ...]]:
    return [(f.name, f.value(), f.unit, f.spread(), f.note) for f in figures]


def table(figures: list[Figure]) -> str:
    """The plain-text table printed at the end of a run, one block per section."""
    out = []
    for section in _sections(figures):
        out.append(f"\n== {section}")
        body = rows([f for f in figures if f.section == section])
        widths = [max(len(HEADERS[i]), *(len(r[i]) for r in body)) for i in range(4)]
        out.append("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=False)))
        for r in body:
            cells = [
                r[0].ljust(widths[0]),
                r[1].rjust(widths[1]),
                r[2].ljust(widths[2]),
                r[3].ljust(widths[3]),
                r[4],
            ]
            out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _sections(figures):
    seen = []
    for f in figures:
        if f.section not in seen:
            seen.append(f.section)
    return seen


def find(figures: list[Figure], name: str) -> Figure | None:
    for f in figures:
        if f.name.strip() == name:
            return f
    return None


def headlines(figures: list[Figure]) -> list[str]:
    """What the figures say against their bounds, in a sentence each (only for those measured)."""
    out = []
    g = {f.name.strip(): f for f in figures}
    ratio = g.get("serve / mosquitto_sub (rate ratio)")
    if ratio:
        verdict = "meets" if ratio.median >= 0.95 else "is below"
        out.append(
            f"Ingest: `lockerctl serve` stores {g['serve: ingest rate'].value()} events/s while"
            f" `mosquitto_sub` receives {g['mosquitto_sub: receive rate'].value()} events/s of"
            f" the same stream: a ratio of {ratio.value()}, which {verdict} the 0.95 goal."
            f" A bare `executemany` of the same rows takes"
            f" {g['bare executemany of the same rows'].value()} events/s, so SQLite is not what"
            " bounds serve"
            + (
                " (per-event work in serve and the trail is)."
                if g["serve / bare executemany (rate ratio)"].median < 0.5
                else "."
            )
        )
    cpu, busy = g.get("serve: CPU per event"), g.get("cores busy meanwhile")
    had, needs = (
        g.get("serve: share of a core it had"),
        g.get("serve: share of a core the broker's pace needs"),
    )
    if ratio and cpu and busy:
        out.append(
            f"What bounds it: serve spends {cpu.value()} µs of CPU per event (its ingest process"
            f" and the store: the parts below) while the broker, the publishers and"
            f" `mosquitto_sub` keep the machine's cores {busy.value()} % busy"
            + (
                f"; keeping the broker's pace takes {needs.value()} % of a core, and serve had"
                f" {had.value()} % (its CPU seconds over its seconds, the same runs)."
                if had and needs
                else "; serve keeps pace only where it has close to a core of its own for the"
                " whole stream."
            )
        )
    whole, sql = g.get("per event, in process: Ingestor.write"), g.get("of which SQLite")
    store, js, checks = (
        g.get("of which the store"),
        g.get("of which JSON"),
        g.get("of which checks and MAC"),
    )
    if whole and sql and store and js and checks:
        rest = whole.median - store.median - js.median - checks.median
        out.append(
            f"Where an event's CPU goes (in process, `Ingestor.write` {whole.value()} µs):"
            f" {sql.value()} µs inside SQLite (the event row and its trail entry with their"
            f" indexes, the batch's synchronous commit), {store.median - sql.median:.1f} µs the"
            f" store's Python (rows, the trail entry's canonical content and two SHA-256),"
            f" {js.value()} µs JSON, {checks.value()} µs the checks and the MAC, {rest:.1f} µs"
            " the rest (topics, grouping the batch); receiving from the broker adds the"
            " difference to serve's CPU per event."
        )
    many = next((f for f in figures if f.name.endswith("workers / 1 worker (rate ratio)")), None)
    if many:
        w = many.name.split()[0]
        verdict = "meets" if many.median >= 2.5 else "does not meet"
        one, lots = g["1 worker: ingest rate"], g[f"{w} workers: ingest rate"]
        busy1 = g.get("cores busy while 1 worker ingests")
        out.append(
            f"Several ingest workers on PostgreSQL: 1 worker stores {one.value()} events/s,"
            f" {w} workers {lots.value()} events/s, {many.value()} times as many, which"
            f" {verdict} the 2.5 goal"
            + (
                f"; with one worker the machine's 2 cores are already {busy1.value()} % busy"
                " (docs/scale.md: what bounds it)."
                if busy1
                else "."
            )
        )
    p50, p99 = g.get("tap to row in the store, p50"), g.get("tap to row in the store, p99")
    if p50 and p99:
        out.append(
            f"A tap is a row in the host's audit trail {p50.value()} ms later (p50),"
            f" {p99.value()} ms at p99."
        )
    run = g.get("of which the running locker")
    if run:
        out.append(
            f"Through a school day the running locker holds at most {run.value()} KiB of"
            " heap besides its code (frozen in flash on an ESP32, where objects are half"
            " this port's size)."
        )
    dec = g.get("decision per tap, deposit, p50")
    if dec:
        out.append(f"A deposit is decided and journaled in {dec.value()} ms (p50) on this port.")
    p99, worst = g.get("tap to bay unlocked, all, p99"), g.get("tap to bay unlocked, all, worst")
    waited = g.get("taps that waited for a flash erase")
    if p99 and worst:
        met = p99.median < 50 and worst.median < 100 and (not waited or waited.median == 0)
        out.append(
            f"On the modelled flash (typical times), a tap's bay is unlocked {p99.value()} ms"
            f" after the tap at p99 and {worst.value()} ms at worst"
            + (f", {waited.value()} taps of a run waiting for an erase" if waited else "")
            + f": the goal (p99 under 50 ms, worst under 100 ms, no erase on the way) is"
            f" {'met' if met else 'not met'}."
        )
    prog = g.get("bytes programmed per event, in service")
    erased = g.get("blocks erased per event, in service")
    if prog and erased:
        met = prog.median <= 64 and erased.median <= 0.02
        old = g.get("littlefs journal (no region): bytes programmed per event")
        old_e = g.get("littlefs journal (no region): blocks erased per event")
        out.append(
            f"The journal programs {prog.value()} bytes and erases {erased.value()} sectors an"
            f" event in service (goal 64 and 0.02: {'met' if met else 'not met'})"
            + (
                f"; the littlefs journal of a board without a journal partition"
                f" {old.value()} bytes and {old_e.value()} blocks."
                if old and old_e
                else "."
            )
        )
    full = next(
        (f for f in figures if f.name.startswith("events until the journal is full")), None
    )
    if full:
        out.append(
            f"With the network down the journal holds {full.value()} events before it refuses"
            f" taps (`journal_full`): at 100 events a school day, {full.median / 100:.0f} school"
            " days."
        )
    rep = g.get("replay after an outage: events per second")
    if rep:
        verdict = "meets" if rep.median >= 5000 else "does not meet"
        per = g.get("replay: events per message")
        msgs = g.get("replay: messages per second")
        out.append(
            f"After an outage the locker replays its journal at {rep.value()} events/s, which"
            f" {verdict} the 5,000 goal"
            + (
                f", {per.value()} events a message and {msgs.value()} messages/s (an ESP32's"
                f" rate is its own messages/s times the same {per.value()} events)."
                if per and msgs
                else "."
            )
        )
    verify = g.get("audit verify")
    csv = g.get("export to CSV")
    if verify and csv:
        size = csv.note.split(" events")[0]
        out.append(
            f"With {size} events in the store, a CSV export takes {csv.value()} s and"
            f" `audit verify` {verify.value()} s."
        )
        peaks = [f.median for f in figures if f.name.endswith("peak memory")]
        xlsx = g.get("export to Excel (xlsx)")
        xpeak = g.get("export to Excel, peak memory")
        per_row, alone = g.get("export to Excel, per row"), g.get("XlsxWriter alone, per row")
        ours = g.get("xlsxstream alone, per row")
        if xlsx and xpeak and per_row and peaks:
            million = per_row.median  # µs a row = seconds for a million rows
            met = million < 30 and xpeak.median <= 200
            out.append(
                f"An Excel export of the same (our streaming writer, `xlsxstream`) takes"
                f" {xlsx.value()} s within {xpeak.median:.0f} MiB, {per_row.value()} µs a row:"
                f" a million rows in {million:.0f} s at that pace; the goal, under 30 s within"
                f" 200 MiB for a million rows, is {'met' if met else 'not met'}. No export or"
                f" verify holds more than {max(peaks):.0f} MiB (they stream)."
            )
            if alone and ours:
                out.append(
                    f"Of the Excel export's {per_row.value()} µs a row, the writer takes"
                    f" {ours.value()} µs (the rest is reading the rows and formatting their"
                    f" time, as for CSV); XlsxWriter in constant-memory mode, which it replaced,"
                    f" takes {alone.value()} µs a row for the same cells (its per-cell work in"
                    f" Python), {alone.median:.0f} s a million rows before anything is read."
                )
    return out


def markdown(figures: list[Figure], info: dict, intro: str, args: str, elapsed: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`.venv/bin/python -m bench"
        + (f" {args}" if args else "")
        + "`); do not edit by hand: run it again.",
        "",
        intro.strip(),
        "",
        "## Headlines",
        "",
        *[f"- {h}" for h in headlines(figures)],
        "",
        "## Machine",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        f" (the run took {elapsed / 60:.1f} min)",
        f"- CPU: {info['cpu']}, {info['cores']} cores; memory {info['memory']}; {info['os']}",
        f"- Python {info['python']}, SQLite {info['sqlite']}; {info['micropython']};"
        f" {info['mosquitto']}",
        f"- classlocker commit {info['commit']}",
        f"- load average at the end of the run: {os.getloadavg()[0]:.2f}; the broker, the"
        " publishing lockers and serve share the cores, so the spread says how noisy a figure is",
        "",
    ]
    for section in _sections(figures):
        lines += [
            f"## {section}",
            "",
            "| " + " | ".join(HEADERS) + " |",
            "|" + "|".join(["---", "---:", "---", "---", "---"]) + "|",
        ]
        for r in rows([f for f in figures if f.section == section]):
            lines.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
        lines.append("")
    return "\n".join(lines)
