"""`make demo` as a newcomer runs it: everything comes up, a tap travels into the trail, and
Ctrl-C stops everything it started."""

import json
import os
import signal
import subprocess
import sys

import pytest
from harness import ROOT, free_port, lockerctl, wait_for

pytestmark = pytest.mark.slow


def _processes_mentioning(path) -> list[str]:
    """Command lines of running processes that name `path` (mosquitto's config is in it)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pid.isdigit() and str(path) in cmd:
            found.append(cmd)
    return found


def test_demo_comes_up_records_a_tap_and_stops_cleanly(tmp_path):
    demo_dir = tmp_path / "demo"
    broker_port, http_port = free_port(), free_port()
    env = dict(
        os.environ,
        CLASSLOCKER_DEMO_DIR=str(demo_dir),
        DEMO_BROKER_PORT=str(broker_port),
        DEMO_HTTP_PORT=str(http_port),
    )
    for key in ("LOCKER_DB", "LOCKER_BROKER", "LOCKER_SIM_DIR"):
        env.pop(key, None)
    log = open(tmp_path / "demo.out", "wb")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools/demo.py")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    out = tmp_path / "demo.out"
    try:
        wait_for(
            lambda: "demo is running" in out.read_text() or proc.poll() is not None,
            timeout=90,
            what="the demo to come up",
        )
        text = out.read_text()
        assert proc.poll() is None, text
        assert "dashboard   http://127.0.0.1:" in text and "lockerctl sim tap L1" in text
        assert f"http://127.0.0.1:{http_port}/" in text and f"127.0.0.1:{broker_port}" in text
        export_line = next(line for line in text.splitlines() if "export LOCKER_DB=" in line)
        for assignment in export_line.split()[1:]:
            key, _, value = assignment.partition("=")
            env[key] = value
        tap = lockerctl("sim", "tap", "L1", "04B20001", db="", env=env)
        assert json.loads(tap.stdout)["action"] == "deposit"
        device = json.loads((demo_dir / "L1.json").read_text())
        for secret in ("L1.json", "L2.json", "lockers.db"):  # issue 14: secrets owner-only
            assert (demo_dir / secret).stat().st_mode & 0o777 == 0o600, secret
        assert demo_dir.stat().st_mode & 0o777 == 0o700
        wait_for(
            lambda: "S0001" in lockerctl("export", "--format", "csv", db="", env=env).stdout,
            timeout=20,
            what="the deposit in the trail",
        )
        assert _processes_mentioning(demo_dir), "no process of the demo found"
        # A second demo in the same directory is refused; the running one keeps its data.
        second = subprocess.run(
            [sys.executable, str(ROOT / "tools/demo.py")],
            cwd=ROOT,
            env=dict(env, DEMO_BROKER_PORT="", DEMO_HTTP_PORT=""),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0, second.stdout + second.stderr
        assert "a demo is already running in" in second.stderr + second.stdout
        assert proc.poll() is None and (demo_dir / "lockers.db").exists()
        tap = lockerctl("sim", "state", "L1", db="", env=env)
        assert json.loads(tap.stdout)["locker"] == "L1"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=30)
        log.close()
    assert "nothing left running" in out.read_text()
    assert _processes_mentioning(demo_dir) == []
    assert device["sim"]["control_port"] > 0
