"""The same system on PostgreSQL (a trust of many schools): a real locker's events ingested by
`lockerctl serve --db postgresql://...`, acknowledged, exported and verified."""

import json

import pytest
import sqlalchemy as sa
from harness import ROOT, lockerctl, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_db(postgres_url):
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # every test starts from an empty schema
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


def test_school_on_postgresql(tmp_path, broker, pg_db, make_locker, make_serve):
    lockerctl("roster", "import", ROOT / "docs/examples/roster.csv", db=pg_db)
    lockerctl("timetable", "set", ROOT / "docs/examples/timetable.toml", db=pg_db)
    device = json.loads(lockerctl("locker", "add", "L1", "--bays", 4, db=pg_db).stdout)
    device["broker"].update(host=broker.host, port=broker.port)
    device["data_dir"] = str(tmp_path / "data-L1")
    make_serve(pg_db, broker)
    locker = make_locker("L1", broker=broker, device=device)
    wait_for(lambda: locker.state()["config"] is not None, timeout=20, what="config")
    locker.clock(1795510800)
    reply = locker.tap("04B20001")
    assert reply["action"] == "deposit"
    wait_for(lambda: locker.state()["pending"] == 0, timeout=20, what="ack")
    rows = lockerctl("export", "--format", "csv", "--locker", "L1", db=pg_db).stdout.splitlines()
    assert rows[0].startswith("time,locker,bay,event,person_id,name,role,by,reason,seq")
    assert any(",deposit,S0001,Ms Evans,staff," in r for r in rows), rows
    assert "intact" in lockerctl("audit", "verify", db=pg_db).stdout
    # Retention on PostgreSQL: everything redacted, the chain and what stays still verify, and
    # an edit of what stays is still found.
    redacted = lockerctl("retention", "apply", "--keep-days", "0", db=pg_db).stdout
    assert "redacted" in redacted and "redacted 0 " not in redacted, redacted
    assert "intact" in lockerctl("audit", "verify", db=pg_db).stdout
    engine = sa.create_engine(pg_db)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET bay = 4 WHERE seq = 2"))
    engine.dispose()
    r = lockerctl("audit", "verify", db=pg_db, check=False)
    assert r.returncode != 0 and "edited after its redaction" in r.stderr, r.stderr
