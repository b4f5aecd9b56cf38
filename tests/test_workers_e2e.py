"""Several ingest workers on PostgreSQL (`lockerctl serve --workers 3`): three real lockers on the
MicroPython unix port replay a journal of pending events each through a real mosquitto, the
workers share the stream through an MQTT shared subscription, and one worker is killed (SIGKILL)
in the middle of it. Every event is stored exactly once, every journal acknowledged in full, and
`audit verify` finds the chain intact."""

import json
import os
import re
import signal
import time

import pytest
import sqlalchemy as sa
from harness import ROOT, lockerctl, wait_for

from bench import site
from bench.core import BUILD
from bench.journal import FILL

pytestmark = pytest.mark.slow

PENDING = 400  # events journaled by each locker while the network was down
LOCKERS = ("L1", "L2", "L3")


@pytest.fixture
def pg_db(postgres_url):
    url = os.environ.get("LOCKER_TEST_POSTGRES") or postgres_url
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # every test starts from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def stored(db: str) -> dict:
    engine = sa.create_engine(db.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT locker_id, seq FROM events")).all()
    finally:
        engine.dispose()
    out: dict = {}
    for locker, seq in rows:
        out.setdefault(locker, []).append(seq)
    return out


def test_three_workers_one_killed_mid_stream(tmp_path, broker, pg_db, make_locker, make_serve):
    lockerctl("roster", "import", ROOT / "docs/examples/roster.csv", db=pg_db)
    lockerctl("timetable", "set", ROOT / "docs/examples/timetable.toml", db=pg_db)
    devices = {}
    for lid in LOCKERS:
        device = json.loads(lockerctl("locker", "add", lid, "--bays", 4, db=pg_db).stdout)
        device["broker"].update(host=broker.host, port=broker.port)
        device["data_dir"] = str(tmp_path / f"data-{lid}")
        device["settings"] = {"ack_timeout_s": 2}  # what the killed worker took comes back soon
        device.setdefault("sim", {})["control_port"] = 0
        filled = site.run_micropython(
            FILL.format(
                build=str(BUILD), device=json.dumps(device), clock=site.BEFORE_SCHOOL, n=PENDING
            ),
            heapsize="192k",
        )
        assert filled["pending"] == PENDING + 1  # and its boot
        devices[lid] = device

    refused = lockerctl(
        "serve",
        "--workers",
        "3",
        "--broker",
        broker.address,
        db=site.db_url(tmp_path / "lite.db"),
        check=False,
    )
    assert refused.returncode == 1 and "needs PostgreSQL" in refused.stderr, refused.stderr

    serve = make_serve(pg_db, broker, extra=("--workers", "3", "-v"))
    pids = {}
    wait_for(
        lambda: len(pids.update(worker_pids(serve.process.output())) or pids) == 3,
        timeout=30,
        what="three workers connected",
    )
    lockers = [make_locker(lid, broker=broker, device=devices[lid]) for lid in LOCKERS]
    total = (PENDING + 1) * len(LOCKERS)
    wait_for(
        lambda: sum(map(len, stored(pg_db).values())) >= total // 4,
        timeout=60,
        interval=0.01,
        what="a quarter stored",
    )
    os.kill(pids["w2"], signal.SIGKILL)  # in the middle of the stream
    at_kill = sum(map(len, stored(pg_db).values()))
    assert at_kill < total
    for locker in lockers:
        wait_for(lambda lk=locker: lk.state()["pending"] == 0, timeout=120, what="all acked")
    log = serve.process.output()
    assert "the ingest process lockerctl-ingest-2 stopped (exit code -9)" in log, log[-3000:]
    time.sleep(0.5)
    got = stored(pg_db)
    for lid in LOCKERS:
        seqs = got.get(lid, [])
        # exactly once: every seq of the journal (its boot on this start included), none twice
        assert len(seqs) >= PENDING + 1, (lid, len(seqs))
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), lid
    verify = lockerctl("audit", "verify", "--no-broker", db=pg_db)
    assert "intact" in verify.stdout, verify.stdout


def worker_pids(log: str) -> dict:
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"as lockerctl-serve-school-(w\d) \(pid (\d+)\)", log)
    }
