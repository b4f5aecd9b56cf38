"""A school for the benchmarks: roster, timetable, registered lockers, a running serve, and the
firmware's config bundle built with the host's own encoder."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from lockerctl import keys

from .core import MICROPYTHON, ROOT, harness

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
TIMETABLE = ROOT / "docs" / "examples" / "timetable.toml"
# Tuesday 2026-11-24 (in term; GMT, so local time is UTC)
BEFORE_SCHOOL = 1795508400  # 08:20
BENCH_JID = "be0cbe0cbe0cbe0c"  # the journal id of the lockers the benchmarks play
MORNING_BREAK = 1795516500  # 10:35, between two contact periods
AFTER_HOME = 1795533600  # 15:20, after home_time 15:15
STAFF = [f"04B2{n:04X}" for n in range(8)]
SLT_FOB = "04C30001"


def pupil_uid(i: int) -> str:
    return f"05{i:06X}"


def roster_rows(n_pupils: int) -> list[tuple]:
    """(person_id, name, role, year, walk_home, card_uid): 8 staff, one SLT member (fob and staff
    card), n pupils."""
    rows = [(f"S{i:03d}", f"Staff {i}", "staff", "", "", uid) for i, uid in enumerate(STAFF)]
    rows.append(("H001", "Head Teacher", "slt", "", "", SLT_FOB))
    rows.append(("H001", "Head Teacher", "staff", "", "", "04C30002"))
    for i in range(n_pupils):
        rows.append(
            (
                f"P{i:04d}",
                f"Pupil {i}",
                "pupil",
                str(1 + i % 6),
                "yes" if i % 3 else "no",
                pupil_uid(i),
            )
        )
    return rows


def write_roster(path: Path, n_pupils: int) -> Path:
    lines = ["person_id,name,role,year,walk_home,card_uid"]
    lines += [",".join(r) for r in roster_rows(n_pupils)]
    path.write_text("\n".join(lines) + "\n")
    return path


def lockerctl(*args, db: str) -> str:
    return harness.lockerctl(*args, db=db).stdout


def setup_site(workdir: Path, db: str, n_pupils: int = 0) -> None:
    lockerctl("roster", "import", write_roster(workdir / "roster.csv", n_pupils), db=db)
    lockerctl("timetable", "set", TIMETABLE, db=db)


def add_locker(workdir: Path, db: str, broker, locker_id: str, bays: int = 8) -> dict:
    """`lockerctl locker add`; the device.json pointed at `broker` with a data dir in workdir."""
    device = json.loads(
        lockerctl(
            "locker",
            "add",
            locker_id,
            "--bays",
            bays,
            "--broker",
            broker.address if broker else "127.0.0.1:1883",
            db=db,
        )
    )
    if broker is not None:
        device["broker"].update(host=broker.host, port=broker.port)
    device["data_dir"] = str(workdir / f"data-{locker_id}")
    return device


def serve_subscribed(broker, dbfile: Path, db: str, workdir: Path) -> None:
    """Returns once `serve` stores events: registers locker W00 and publishes its event 1 until
    it is in the store (until serve has subscribed it goes nowhere; a repeat is a duplicate)."""

    secret = bytes.fromhex(add_locker(workdir, db, None, "W00")["secret"])
    counter = EventCounter(dbfile)
    ev = {
        "seq": 1,
        "ts": BEFORE_SCHOOL,
        "type": "boot",
        "bay": None,
        "person": None,
        "by": None,
        "reason": None,
        "jid": BENCH_JID,
    }
    ev["mac"] = keys.event_mac(secret, ev)  # as a locker MACs it (docs/protocol.md)
    payload = json.dumps(ev)
    try:
        warm_up(broker, counter, payload)
    finally:
        counter.close()


def warm_up(broker, counter, payload: str, period: float = 0.1) -> None:
    """Publishes locker W00's `payload` until `counter` sees it stored: until serve has
    subscribed it goes nowhere, and a repeat is a duplicate, counted and not stored."""
    deadline = time.monotonic() + 30
    while counter.count("W00") < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("serve did not store the warm-up event within 30 s")
        subprocess.run(
            [MOSQUITTO_PUB, "-p", str(broker.port), "-q", "1", "-t",
             "lockers/school/W00/event", "-m", payload],
            check=True,
        )  # fmt: skip
        time.sleep(period)


def db_url(path: Path) -> str:
    return f"sqlite:///{path}"


class EventCounter:
    """Reads the store's event count straight from SQLite (WAL: readers never block serve)."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    def highest_id(self) -> int:
        """The highest event row id: a lookup at the end of the rowid b-tree, where count(*)
        walks a whole index. Polled every few ms while serve works, count(*) over tens of
        thousands of rows would take CPU from the service being measured. Events are only ever
        inserted (duplicates are not), so once it reaches N, count() says whether all N are in."""
        return self.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

    def count(self, locker: str | None = None) -> int:
        if locker is None:
            return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return self.conn.execute(
            "SELECT count(*) FROM events WHERE locker_id = ?", (locker,)
        ).fetchone()[0]

    def close(self):
        self.conn.close()


def bundle_for(n_pupils: int, secret: bytes, locker_id: str = "L1", now: int = BEFORE_SCHOOL):
    """The signed config bundle a locker with this roster and the example timetable receives."""
    from lockerctl.bundle import build_bundle
    from lockerctl.timetable import compile_timetable, parse_timetable

    tt = compile_timetable(parse_timetable(TIMETABLE.read_text(), str(TIMETABLE)), now)
    cards = [
        (uid, pid, role, int(year or 0), walk == "yes", False)
        for pid, _name, role, year, walk, uid in roster_rows(n_pupils)
    ]
    return build_bundle(secret, locker_id, "school", 1, now, tt, cards, [])


def run_micropython(script: str, heapsize: str = "512k", timeout: float = 600) -> dict:
    """Runs a MicroPython script (source text) and returns the JSON object on its last line."""
    argv = [str(MICROPYTHON), "-X", f"heapsize={heapsize}", "-c", script]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"micropython script failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return json.loads(lines[-1])


def wait_until(predicate, timeout: float, interval: float = 0.005, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
