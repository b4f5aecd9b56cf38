"""Fixtures for end-to-end tests: each starts real processes and stops them by pid."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

# Hypothesis profiles: `default` for `make test` (each property test names its small fixed budget:
# harness.budget); `long` for a deep run of the property and state-machine tests:
# `make test PYTEST_ARGS=--hypothesis-profile=long` (or HYPOTHESIS_PROFILE=long).
# `default` is derandomized: every run of `make test` tries the same examples, so a clean clone in
# CI runs what passed here; `long` explores at random.
settings.register_profile("default", deadline=None, derandomize=True)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

from harness import Broker, Serve, SimLocker, pg_bin  # noqa: E402


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.kill()


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'lockers.db'}"


@pytest.fixture
def make_locker(tmp_path):
    """make_locker(locker_id="L1", broker=None, **kw) -> a started SimLocker."""
    started = []

    def make(locker_id="L1", broker=None, start=True, **kw):
        locker = SimLocker(tmp_path, locker_id=locker_id, broker=broker, **kw)
        started.append(locker)
        return locker.start() if start else locker

    yield make
    for locker in started:
        locker.kill()


@pytest.fixture
def make_serve(tmp_path):
    started = []

    def make(db, broker, **kw):
        s = Serve(tmp_path, db, broker, **kw).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.kill()


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on a free loopback port, for the store's PostgreSQL path.
    initdb refuses to run as root, so as root the cluster belongs to the `postgres` user."""
    from harness import free_port

    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = Path(tempfile.mkdtemp(prefix="classlocker-pg-"))
    if as_root:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        [*run_as, pg_bin("initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            pg_bin("pg_ctl"),
            "-D",
            str(data / "db"),
            "-w",
            "-l",
            str(data / "log"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_bin("pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)
