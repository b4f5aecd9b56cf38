"""Ingest: lockers publishing at full speed to a real mosquitto, `lockerctl serve` storing every
event, against `mosquitto_sub` receiving the same stream in the same run (what the broker and the
network give) and against a bare `executemany` of the same rows (what SQLite gives)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from lockerctl import keys

from . import site
from .core import Context, Figure, harness

NAME = "ingest"
SECTION = "Ingest (lockers publishing at full speed)"
SIZES = {
    "full": {"lockers": 20, "events": 2500, "runs": 3},
    "quick": {"lockers": 2, "events": 40, "runs": 1},
}
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
TYPES = ("deposit", "retrieve", "deposit", "retrieve", "denied", "policy_flag")


def locker_ids(n: int) -> list[str]:
    return [f"L{i:02d}" for i in range(1, n + 1)]


def event(seq: int, i: int, secret: bytes) -> dict:
    """Event `seq` of a locker, shaped as the firmware publishes it (docs/protocol.md: with its
    journal id and its MAC under the locker's key)."""
    kind = TYPES[seq % len(TYPES)]
    ev = {
        "seq": seq,
        "ts": site.BEFORE_SCHOOL + seq,
        "type": kind,
        "bay": None if kind == "denied" else 1 + seq % 8,
        "person": f"P{(i * 7 + seq) % 600:04d}",
        "by": None,
        "reason": "unknown_card" if kind == "denied" else "pupil",
        "jid": site.BENCH_JID,
    }
    ev["mac"] = keys.event_mac(secret, ev)
    return ev


def payloads(workdir: Path, lockers: list[str], n: int, secrets: dict) -> dict[str, Path]:
    """One file per locker: its n events, one JSON line each (mosquitto_pub -l)."""
    files = {}
    for i, lid in enumerate(lockers):
        path = workdir / f"events-{lid}.jsonl"
        lines = (json.dumps(event(s, i, secrets[lid])) + "\n" for s in range(1, n + 1))
        path.write_text("".join(lines))
        files[lid] = path
    return files


def template_db(workdir: Path, lockers: list[str]) -> tuple[Path, dict]:
    """A store with the school's roster and timetable and every locker registered (and W00, the
    locker whose one event warms serve up), checkpointed so that copying the file copies it all;
    and {locker: its secret}."""
    path = workdir / "template.db"
    db = site.db_url(path)
    site.setup_site(workdir, db, n_pupils=600)
    secrets = {}
    for lid in [*lockers, "W00"]:
        secrets[lid] = bytes.fromhex(site.add_locker(workdir, db, None, lid)["secret"])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path, secrets


def one_run(
    ctx: Context, template: Path, files: dict[str, Path], n: int, warm_secret: bytes
) -> dict:
    work = ctx.scratch("ingest")
    dbfile = work / "lockers.db"
    shutil.copy(template, dbfile)
    return stream_run(
        work, site.db_url(dbfile), lambda: site.EventCounter(dbfile), files, n, warm_secret
    )


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every core since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) spent so far by process `root` and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [child for child, up in parent.items() if up == pid]
    return total


def stream_run(
    work: Path,
    db: str,
    make_counter,
    files: dict[str, Path],
    n: int,
    warm_secret: bytes,
    serve_args: tuple = (),
    workers: int = 1,
    db_pid: int | None = None,
) -> dict:
    """Every locker's file published at full speed (one `mosquitto_pub -q 1` each) while serve
    (with `serve_args`) stores them and `mosquitto_sub` receives the same stream: seconds from
    the first publish to the last row stored, to the last message received, to the publishers'
    end; how busy the machine's cores were meanwhile (0..1); the CPU seconds serve (with its
    ingest processes) and, given `db_pid`, the database server spent on it."""
    total = n * len(files)
    broker = bench_broker(work)
    serve = sub = None
    pubs = []
    counter = None
    try:
        serve = harness.Serve(work, db, broker, extra=serve_args).start()
        if workers > 1:
            site.wait_until(
                lambda: serve.process.output().count("connected to") >= workers,
                30,
                0.05,
                "every ingest worker subscribed",
            )
        counter = make_counter()
        warm = json.dumps(event(1, 0, warm_secret))
        site.warm_up(broker, counter, warm, period=0.2)
        subprocess.run(
            [MOSQUITTO_PUB, "-p", str(broker.port), "-r", "-t", "bench/ready", "-m", "ready"],
            check=True,
        )
        out = work / "sub.out"
        with open(out, "wb") as f:
            sub = subprocess.Popen(
                [
                    MOSQUITTO_SUB,
                    "-p",
                    str(broker.port),
                    "-q",
                    "1",
                    "-t",
                    "bench/ready",
                    "-t",
                    "lockers/school/+/event",
                    "-C",
                    str(total + 1),
                ],
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        site.wait_until(lambda: out.stat().st_size > 0, 10, 0.005, "mosquitto_sub subscribed")

        serve_pid = serve.process.pid
        spent0 = tree_cpu(serve_pid), tree_cpu(db_pid) if db_pid else 0.0
        t0 = time.monotonic()
        cpu0 = cpu_ticks()
        for lid, path in files.items():
            with open(path, "rb") as stdin:
                pubs.append(
                    subprocess.Popen(
                        [
                            MOSQUITTO_PUB,
                            "-p",
                            str(broker.port),
                            "-i",
                            lid,
                            "-q",
                            "1",
                            "-l",
                            "-t",
                            f"lockers/school/{lid}/event",
                        ],
                        stdin=stdin,
                    )
                )
        t_pub = t_sub = t_serve = None
        last, moved = 0, t0
        while t_serve is None or t_sub is None or t_pub is None:
            now = time.monotonic()
            stored = counter.highest_id()
            if stored != last:
                last, moved = stored, now
            elif now - moved > 30:
                raise TimeoutError(
                    f"ingest: serve stored nothing more for 30 s ({stored - 1} of"
                    f" {total}; mosquitto_sub {'done' if t_sub else 'not done'})"
                )
            if t_pub is None and all(p.poll() is not None for p in pubs):
                t_pub = now - t0
            if t_sub is None and sub.poll() is not None:
                t_sub = now - t0
            if t_serve is None and stored >= total + 1 and counter.count() >= total + 1:
                t_serve = now - t0
                cpu1 = cpu_ticks()
                spent1 = tree_cpu(serve_pid), tree_cpu(db_pid) if db_pid else 0.0
            time.sleep(0.002)
        stored = counter.count() - 1
    finally:
        for p in pubs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if sub is not None and sub.poll() is None:
            sub.kill()
            sub.wait()
        if counter is not None:
            counter.close()
        if serve is not None:
            serve.stop()
        broker.kill()
    busy = (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1])
    return {
        "serve": t_serve,
        "sub": t_sub,
        "pub": t_pub,
        "stored": stored,
        "cpu": busy,
        "serve_cpu": spent1[0] - spent0[0],
        "db_cpu": spent1[1] - spent0[1],
    }


def bench_broker(work: Path) -> harness.Broker:
    """An anonymous mosquitto on a free port, as tests/harness.py makes, except that it queues
    without limit: a site's broker (lockerctl broker config) drops what is queued beyond 10,000
    messages for a slow subscriber and the lockers send it again after their ack timeout, which
    mosquitto_pub does not do; here every message must arrive so that the time to store them
    all is measured."""
    port = harness.free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 0\nmax_queued_messages 0\n"
    )
    return harness.Broker(work, conf=conf, port=port).start()


def executemany(ctx: Context, files: dict[str, Path]) -> float:
    """The same rows into a fresh store of the same schema and settings (WAL, synchronous=FULL),
    one executemany in one transaction: the most SQLite can take."""
    from lockerctl.store import Store

    work = ctx.scratch("executemany")
    path = work / "lockers.db"
    Store.open(site.db_url(path)).close()
    rows = []
    received = int(time.time())
    for lid, f in files.items():
        for line in f.read_text().splitlines():
            e = json.loads(line)
            rows.append(
                (
                    "school",
                    lid,
                    e["seq"],
                    e["ts"],
                    e["type"],
                    e["bay"],
                    e["person"],
                    e["by"],
                    e["reason"],
                    received,
                    e["ts"],
                    e["jid"],
                    e["mac"],
                )
            )
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO events (site, locker_id, seq, ts, type, bay, person, by, reason,"
        " received_at, sort_ts, jid, mac, hash_v) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,2)",
        rows,
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def parts(ctx: Context, files: dict[str, Path], secrets: dict) -> dict[str, float]:
    """µs per event of each part of serve's per-event work, in process, on the benchmark's own
    messages, by the functions `Ingestor.write` runs: JSON (`payloads._load`), the checks of what
    a firmware can send with the MAC (`payloads._check_usual`), the store (a fresh SQLite store,
    batches of 2,000 as a flood commits them) and, within it, SQLite's own calls (the store run
    again under cProfile, the time inside the `sqlite3` module's methods), and the whole
    `Ingestor.write`; the garbage collector set as in serve's ingest process
    (`ingest.settle_gc`), then set back."""
    import gc

    from lockerctl.ingest import settle_gc

    threshold = gc.get_threshold()
    settle_gc()
    try:
        return _parts(ctx, files, secrets)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _parts(ctx: Context, files: dict[str, Path], secrets: dict) -> dict[str, float]:
    import cProfile
    import pstats

    from lockerctl import keys
    from lockerctl.ingest import Ingestor
    from lockerctl.payloads import _check_usual, _load
    from lockerctl.store import Store

    msgs = []
    for lid, path in files.items():
        for line in path.read_bytes().splitlines():
            msgs.append((f"lockers/school/{lid}/event", line))
    msgs.sort(key=lambda m: json.loads(m[1])["seq"])  # interleaved, as they arrive
    n = len(msgs)
    out = {}
    t0 = time.perf_counter()
    objs = [(topic.split("/")[2], _load(p)) for topic, p in msgs]
    out["JSON"] = time.perf_counter() - t0
    event_keys = {lid: keys.event_key(secret) for lid, secret in secrets.items()}
    t0 = time.perf_counter()
    events = [(lid, _check_usual(o, event_keys[lid], 8)) for lid, o in objs]
    out["checks"] = time.perf_counter() - t0
    assert all(ev is not None for _, ev in events)
    work = ctx.scratch("ingest-parts")
    store = Store.open(site.db_url(work / "a.db"))
    t0 = time.perf_counter()
    for i in range(0, n, 2000):
        store.ingest_journals("school", events[i : i + 2000])
    out["store"] = time.perf_counter() - t0
    store.close()
    store = Store.open(site.db_url(work / "c.db"))
    profile = cProfile.Profile()
    profile.enable()
    for i in range(0, n, 2000):
        store.ingest_journals("school", events[i : i + 2000])
    profile.disable()
    store.close()
    stats = pstats.Stats(profile).stats
    out["SQLite"] = sum(v[2] for k, v in stats.items() if "sqlite3." in k[2])
    store = Store.open(site.db_url(work / "b.db"))
    for lid in files:
        store.add_locker("school", lid, 8, secrets[lid], "pw")
    ingestor = Ingestor(store, "school", lambda locker, ack: None)
    t0 = time.perf_counter()
    for i in range(0, n, 2000):
        ingestor.write(msgs[i : i + 2000])
    out["all"] = time.perf_counter() - t0
    store.close()
    return {k: v / n * 1e6 for k, v in out.items()}


def run(ctx: Context) -> list[Figure]:
    lockers = locker_ids(ctx.sizes["lockers"])
    n = ctx.sizes["events"]
    total = n * len(lockers)
    setup = ctx.scratch("ingest-setup")
    template, secrets = template_db(setup, lockers)
    files = payloads(setup, lockers, n, secrets)
    results = []
    for k in range(ctx.runs):
        r = one_run(ctx, template, files, n, secrets["W00"])
        ctx.log(
            f"  ingest run {k + 1}: serve {r['serve']:.2f} s, mosquitto_sub {r['sub']:.2f} s,"
            f" publishers {r['pub']:.2f} s, stored {r['stored']}, serve CPU {r['serve_cpu']:.1f} s"
        )
        results.append(r)
    bare = [executemany(ctx, files) for _ in range(ctx.runs)]
    split = [parts(ctx, files, secrets) for _ in range(ctx.runs)]
    what = f"{len(lockers)} lockers x {n:,} events = {total:,}"
    serve_t = [r["serve"] for r in results]
    sub_t = [r["sub"] for r in results]
    return [
        Figure(SECTION, "serve: all events stored", "s", serve_t, what, 2),
        Figure(
            SECTION,
            "serve: ingest rate",
            "events/s",
            [total / t for t in serve_t],
            "publish start to the last row in the store",
            0,
        ),
        Figure(
            SECTION, "mosquitto_sub: all events received", "s", sub_t, "same stream, same run", 2
        ),
        Figure(
            SECTION, "mosquitto_sub: receive rate", "events/s", [total / t for t in sub_t], "", 0
        ),
        Figure(
            SECTION,
            "serve / mosquitto_sub (rate ratio)",
            "x",
            [r["sub"] / r["serve"] for r in results],
            "goal 0.95 or better",
            2,
        ),
        Figure(
            SECTION,
            "serve: CPU per event",
            "µs",
            [r["serve_cpu"] / total * 1e6 for r in results],
            "user + system of serve and its ingest process, publish start to the last row",
            0,
        ),
        Figure(
            SECTION,
            "cores busy meanwhile",
            "%",
            [100 * r["cpu"] for r in results],
            f"both cores: broker, {len(lockers)} publishers, mosquitto_sub, serve",
            0,
        ),
        Figure(
            SECTION,
            "serve: share of a core it had",
            "%",
            [100 * r["serve_cpu"] / r["serve"] for r in results],
            "its CPU seconds over its seconds, publish start to the last row",
            0,
        ),
        Figure(
            SECTION,
            "serve: share of a core the broker's pace needs",
            "%",
            [100 * r["serve_cpu"] / r["sub"] for r in results],
            "its CPU per event times mosquitto_sub's rate, same run",
            0,
        ),
        Figure(
            SECTION,
            "per event, in process: Ingestor.write",
            "µs",
            [x["all"] for x in split],
            "the same messages, batches of 2,000: parse, check, MAC, store",
            1,
        ),
        Figure(
            SECTION,
            "  of which JSON",
            "µs",
            [x["JSON"] for x in split],
            "json's C scanner (payloads._load)",
            1,
        ),
        Figure(
            SECTION,
            "  of which checks and MAC",
            "µs",
            [x["checks"] for x in split],
            "what a firmware can send; HMAC-SHA256, the key's blocks kept (payloads._check_usual)",
            1,
        ),
        Figure(
            SECTION,
            "  of which the store",
            "µs",
            [x["store"] for x in split],
            "Store.ingest_journals: rows, trail contents and hashes, SQL, commit",
            1,
        ),
        Figure(
            SECTION,
            "    of which SQLite",
            "µs",
            [x["SQLite"] for x in split],
            "inside the sqlite3 module: the event and trail rows, their indexes, the commit",
            1,
        ),
        Figure(
            SECTION,
            "publishers done (mosquitto_pub -q 1)",
            "s",
            [r["pub"] for r in results],
            f"{len(lockers)} clients, one per locker",
            2,
        ),
        Figure(
            SECTION,
            "bare executemany of the same rows",
            "events/s",
            [total / t for t in bare],
            "one transaction, WAL, synchronous=FULL",
            0,
        ),
        Figure(
            SECTION,
            "serve / bare executemany (rate ratio)",
            "x",
            [statistics_ratio(b, r["serve"]) for b, r in zip(bare, results, strict=False)],
            "the store's own limit is 1.0",
            3,
        ),
    ]


def statistics_ratio(bare: float, serve: float) -> float:
    return bare / serve
