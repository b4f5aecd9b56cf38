"""Every file that holds a secret is owner-only (0600), whatever the umask and whether or not
it existed before (issue 14): the store, `locker add -o`, `locker rekey -o`, `sar -o`, the
broker's password file, ACL and keys, and the demo's device files. Files that hold no secret
(an export) keep the umask's mode."""

from __future__ import annotations

import json
import os
import stat
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from lockerctl.cli import _load_commands
from lockerctl.clibase import cli

_load_commands()


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def run(*args, db):
    r = CliRunner().invoke(cli, [*map(str, args), "--db", db])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'lockers.db'}"


def test_cli_secret_files_are_owner_only_whatever_the_umask(tmp_path, db):
    with umask(0):  # the most open umask: any mode but 0600 would show
        stale = tmp_path / "L1.json"
        stale.write_text("old")
        os.chmod(stale, 0o666)  # an older, world-readable file of the same name
        run("locker", "add", "L1", "-o", stale, db=db)
        assert json.loads(stale.read_text())["secret"]
        run("locker", "rekey", "L1", "-o", tmp_path / "L1-new.json", db=db)
        run("sar", "P1", "-o", tmp_path / "sar.json", db=db)
        run("broker", "config", tmp_path / "broker", "--listen", "127.0.0.1:18830", db=db)
        run("export", "--format", "csv", "-o", tmp_path / "trail.csv", db=db)
    assert mode(tmp_path / "lockers.db") == 0o600
    for secret in ("L1.json", "L1-new.json", "sar.json"):
        assert mode(tmp_path / secret) == 0o600, secret
    broker = tmp_path / "broker"
    assert mode(broker) & 0o007 == 0  # the broker's own account may share it, nobody else
    for name in ("passwd", "acl"):
        assert mode(broker / name) == 0o600, name
    assert mode(tmp_path / "trail.csv") == 0o644  # no secret: the umask decides


def test_broker_tls_keys_are_owner_only(tmp_path, db):
    with umask(0):
        run("locker", "add", "L1", db=db)
        run("broker", "config", tmp_path / "b", "--tls", "--listen", "127.0.0.1:18831", db=db)
    keys = sorted(p.name for p in (tmp_path / "b").iterdir() if p.suffix == ".key")
    assert keys == ["ca.key", "server.key"]
    for name in keys:
        assert mode(tmp_path / "b" / name) == 0o600, name
