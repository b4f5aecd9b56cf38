"""The store's one schema history (lockerctl/migrations, Alembic): its revisions in numeric order,
applied in that order to a new store on SQLite and PostgreSQL whatever command opens it first,
once even when several processes open it at once, and refused with a one-line error when the
database was made by a version that knows other revisions."""

import ast
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import ROOT, lockerctl
from lockerctl import migrations
from lockerctl.store import Store, StoreError

VERSIONS = Path(migrations.__file__).parent / "versions"
EVERY = [
    "0001_initial",
    "0002_dashboard",
    "0003_redactions",
    "0004_locker_clocks",
    "0005_journal_ids",
    "0007_config_changes",
    "0008_settings",
    "0010_exceptions",
    "0011_alerts_mail",
    "0012_firmware_offers",
    "0014_api_tokens",
    "0015_consent_approvers",
    "0016_mail_seen",
]


def _empty_pg(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def test_the_history_is_one_chain_in_numeric_order():
    assert migrations.revisions() == EVERY
    assert migrations.HEAD == EVERY[-1] == migrations.script().get_current_head()
    files = sorted(p for p in VERSIONS.glob("*.py") if p.name != "__init__.py")
    assert [p.stem for p in files] == EVERY  # one file per revision, named after it
    before = None
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        values = {
            node.target.id: ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        }
        assert values["revision"] == path.stem and values["down_revision"] == before
        assert len(path.stem) <= 32  # what alembic_version.version_num holds
        # self-contained: nothing of lockerctl, whose code changes later
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and not (node.module or "").startswith("lockerctl")
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("lockerctl") for a in node.names)
        before = path.stem


def _check_fresh(url: str) -> None:
    lockerctl("audit", "verify", "--no-broker", db=url)  # store modules only
    lockerctl("user", "add", "office1", "--role", "office", "--password-stdin", db=url,
              input="office-pass-1\n")  # fmt: skip
    st = Store.open(url, migrate=False)
    try:
        assert st.applied_migrations() == EVERY
        assert st.migrate() == []
        with st.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            assert rows == [(EVERY[-1],)]
            assert not sa.inspect(conn).has_table("migrations")  # the old history's table
    finally:
        st.close()


def test_a_new_sqlite_store_gets_every_revision_whatever_command_runs_first(tmp_path):
    _check_fresh(f"sqlite:///{tmp_path / 'lockers.db'}")


def test_a_new_postgresql_store_gets_every_revision_whatever_command_runs_first(postgres_url):
    _empty_pg(postgres_url)
    _check_fresh(postgres_url)


def test_a_new_store_reports_the_revisions_it_applied_in_order(tmp_path):
    st = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}", migrate=False)
    try:
        assert st.applied_migrations() == []
        assert st.migrate() == EVERY
        assert st.migrate() == []
    finally:
        st.close()


def _open_together(url: str, n: int = 4) -> list:
    """`migrate()` of `n` stores opened on `url` at once: what each applied (or its error)."""
    stores = [Store.open(url, migrate=False) for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = stores[i].migrate()
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in stores:
        s.close()
    return results


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_stores_opened_at_once_apply_each_revision_once(backend, tmp_path, request):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'lockers.db'}"
        Store.open(url, migrate=False).close()  # the file exists, owner-only
    else:
        url = request.getfixturevalue("postgres_url")
        _empty_pg(url)
    results = _open_together(url)
    assert sorted(results, key=len) == [[], [], [], EVERY], results
    st = Store.open(url)
    try:
        assert st.applied_migrations() == EVERY
        assert st.verify_trail()[0] == 0  # one trail head row, not four
    finally:
        st.close()


def test_a_store_of_a_newer_version_is_refused_in_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'lockers.db'}"
    Store.open(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    engine.dispose()
    with pytest.raises(StoreError, match="0099_from_the_future, which this lockerctl does not"):
        Store.open(url)
    r = lockerctl("audit", "verify", "--no-broker", db=url, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "does not know" in r.stderr and "Traceback" not in r.stderr


def test_an_old_store_with_a_migration_of_another_version_is_refused(tmp_path):
    """A store of the named-migrations era that records a name this history does not have
    (a development branch's) is left as it is."""
    path = tmp_path / "lockers.db"
    url = f"sqlite:///{path}"
    Store.open(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(sa.text("CREATE TABLE migrations (name VARCHAR(100) PRIMARY KEY)"))
        for name in [*EVERY, "0013_branch_only"]:
            conn.execute(sa.text("INSERT INTO migrations VALUES (:n)"), {"n": name})
    engine.dispose()
    r = lockerctl("audit", "verify", "--no-broker", db=url, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "0013_branch_only" in r.stderr and "nothing changed" in r.stderr
    assert not sa.inspect(sa.create_engine(url)).has_table("alembic_version")


def test_alembic_writes_a_new_revision_after_the_head(tmp_path):
    """`alembic revision` (docs/architecture.md) finds the history from host_tools/pyproject.toml
    alone; `alembic upgrade` is refused in one line (stores migrate when opened)."""
    alembic = Path(sys.executable).parent / "alembic"  # installed with lockerctl
    cwd = Path(ROOT) / "host_tools"
    heads = subprocess.run([alembic, "heads"], cwd=cwd, capture_output=True, text=True)
    assert heads.returncode == 0 and heads.stdout.split() == [EVERY[-1], "(head)"], heads.stderr
    up = subprocess.run([alembic, "upgrade", "head"], cwd=cwd, capture_output=True, text=True)
    assert up.returncode != 0 and "migrates when it is opened" in up.stderr
    assert "Traceback" not in up.stderr
