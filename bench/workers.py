"""Several ingest workers on PostgreSQL: the ingest benchmark's stream (lockers publishing at full
speed through a real mosquitto) stored by `lockerctl serve --workers 1` and then `--workers 3`
into a throwaway PostgreSQL cluster, each run from a fresh copy of one template database, with
`mosquitto_sub` receiving the same stream in the same run (the broker's pace) and how busy the
machine's cores were while it ran (what bounds the workers on a small machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import ingest, site
from .core import Context, Figure, harness

NAME = "workers"
SECTION = "Several ingest workers (PostgreSQL)"
SIZES = {
    "full": {"lockers": 20, "events": 2500, "runs": 3, "workers": 3},
    "quick": {"lockers": 3, "events": 40, "runs": 1, "workers": 3},
}


@contextmanager
def cluster():
    """A PostgreSQL server on a free loopback port (as tests/conftest.py starts one; as root
    the cluster belongs to the `postgres` user): yields its base URL without a database and the
    server's process id."""
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = Path(tempfile.mkdtemp(prefix="classlocker-pg-"))  # the postgres user reaches it
    if as_root:
        shutil.chown(data, "postgres", "postgres")
    port = harness.free_port()
    pg = harness.pg_bin
    subprocess.run(
        [*run_as, pg("initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as, pg("pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"),
            "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        pid = int((data / "db" / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://postgres@127.0.0.1:{port}", pid
    finally:
        subprocess.run(
            [*run_as, pg("pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def admin(base: str, sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://") + "/postgres",
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


class PgCounter:
    """`site.EventCounter` on PostgreSQL."""

    def __init__(self, url: str):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def highest_id(self) -> int:
        return self.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

    def count(self, locker: str | None = None) -> int:
        if locker is None:
            return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return self.conn.execute(
            "SELECT count(*) FROM events WHERE locker_id = %s", (locker,)
        ).fetchone()[0]

    def close(self):
        self.conn.close()


def run(ctx: Context) -> list[Figure]:
    lockers = ingest.locker_ids(ctx.sizes["lockers"])
    n = ctx.sizes["events"]
    many = ctx.sizes["workers"]
    total = n * len(lockers)
    setup = ctx.scratch("workers-setup")
    results: dict[int, list[dict]] = {1: [], many: []}
    with cluster() as (base, postmaster):
        admin(base, "CREATE DATABASE template_site")
        template = f"{base}/template_site"
        site.setup_site(setup, template, n_pupils=600)
        secrets = {}
        for lid in [*lockers, "W00"]:
            secrets[lid] = bytes.fromhex(site.add_locker(setup, template, None, lid)["secret"])
        files = ingest.payloads(setup, lockers, n, secrets)
        k = 0
        for r in range(ctx.runs):
            for w in (1, many):
                k += 1
                admin(base, f"CREATE DATABASE run_{k} TEMPLATE template_site")
                url = f"{base}/run_{k}"
                res = ingest.stream_run(
                    ctx.scratch(f"workers-{w}"),
                    url,
                    lambda url=url: PgCounter(url),
                    files,
                    n,
                    secrets["W00"],
                    serve_args=("--workers", str(w)),
                    workers=w,
                    db_pid=postmaster,
                )
                ctx.log(
                    f"  run {r + 1}, {w} worker(s): serve {res['serve']:.2f} s, mosquitto_sub"
                    f" {res['sub']:.2f} s, cores busy {res['cpu']:.0%}, stored {res['stored']};"
                    f" CPU: serve {res['serve_cpu']:.1f} s, PostgreSQL {res['db_cpu']:.1f} s"
                )
                results[w].append(res)
    one, three = results[1], results[many]
    what = f"{len(lockers)} lockers x {n:,} events = {total:,}"
    return [
        Figure(
            SECTION,
            "1 worker: ingest rate",
            "events/s",
            [total / x["serve"] for x in one],
            f"{what}; serve --workers 1",
            0,
        ),
        Figure(
            SECTION,
            f"{many} workers: ingest rate",
            "events/s",
            [total / x["serve"] for x in three],
            f"serve --workers {many}",
            0,
        ),
        Figure(
            SECTION,
            f"{many} workers / 1 worker (rate ratio)",
            "x",
            [b["serve"] and a["serve"] / b["serve"] for a, b in zip(one, three, strict=True)],
            "goal 2.5 or better",
            2,
        ),
        Figure(
            SECTION,
            "mosquitto_sub: receive rate, same runs",
            "events/s",
            [total / x["sub"] for x in one + three],
            "the broker's pace: no ingest can beat it",
            0,
        ),
        Figure(
            SECTION,
            f"{many} workers / mosquitto_sub (rate ratio)",
            "x",
            [x["sub"] / x["serve"] for x in three],
            "",
            2,
        ),
        Figure(
            SECTION,
            "CPU per event: serve, 1 worker",
            "µs",
            [x["serve_cpu"] / total * 1e6 for x in one],
            "user + system, the ingest process included",
            0,
        ),
        Figure(
            SECTION,
            f"CPU per event: serve, {many} workers",
            "µs",
            [x["serve_cpu"] / total * 1e6 for x in three],
            "all the workers together",
            0,
        ),
        Figure(
            SECTION,
            "CPU per event: PostgreSQL, 1 worker",
            "µs",
            [x["db_cpu"] / total * 1e6 for x in one],
            "the server and its backends",
            0,
        ),
        Figure(
            SECTION,
            f"CPU per event: PostgreSQL, {many} workers",
            "µs",
            [x["db_cpu"] / total * 1e6 for x in three],
            "",
            0,
        ),
        Figure(
            SECTION,
            "cores busy while 1 worker ingests",
            "%",
            [100 * x["cpu"] for x in one],
            "both cores of the machine: broker, publishers, serve, PostgreSQL",
            0,
        ),
        Figure(
            SECTION,
            f"cores busy while {many} workers ingest",
            "%",
            [100 * x["cpu"] for x in three],
            "",
            0,
        ),
    ]
