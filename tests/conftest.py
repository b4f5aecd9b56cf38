"""Fixtures for end-to-end tests: each starts real processes and stops them by pid."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Broker, Serve, SimLocker  # noqa: E402


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
