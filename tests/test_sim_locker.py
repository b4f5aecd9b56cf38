"""The simulated locker as a process: the real firmware on the MicroPython unix port, driven
through its control port exactly as docs/protocol.md says, from source and from the mpy-cross
build."""

import json
import socket

import pytest
from harness import ROOT, wait_for


@pytest.mark.parametrize("compiled", [False, True], ids=["source", "mpy"])
def test_boots_and_answers_state(make_locker, compiled):
    if compiled:
        assert (ROOT / "build/firmware/locker/core.mpy").exists(), "run `make firmware` first"
        assert not (ROOT / "build/firmware/locker/core.py").exists()
    locker = make_locker("L1", bays=6, compiled=compiled)
    state = locker.state()
    assert state["locker"] == "L1"
    assert state["clock_ok"] is False
    assert state["online"] is False
    assert state["config"] is None
    assert state["version"] == "0.2.0"  # the firmware's own version
    assert state["pending"] >= 1  # the boot event waits for the host
    assert state["bays"] == [
        {"bay": n, "locked": True, "door": "closed", "holder": None} for n in range(1, 7)
    ]


def test_clock_and_unknown_card(make_locker):
    locker = make_locker("L1")
    assert locker.clock(1795510800) == {"ok": True}
    assert locker.state()["clock_ok"] is True
    assert locker.tap("04A1B2C3") == {"result": "denied", "reason": "unknown_card"}
    assert locker.tap("04A1B2C3D4E5F6") == {"result": "denied", "reason": "unknown_card"}


def test_garbage_on_the_control_port_is_answered_with_an_error_line(make_locker):
    locker = make_locker("L1")
    bad = [
        "",
        "hello",
        "tap",
        "tap XYZ",
        "tap 04A1B2C3 extra",
        "tap 0",
        "tap GGGGGGGG",
        "door",
        "door 0 open",
        "door 99 open",
        "door x open",
        "door 1 sideways",
        "clock",
        "clock soon",
        "clock -5",
        "state now",
        "\x00\x01\x02",
        "tap " + "A" * 100,
    ]
    for line in bad:
        reply = locker.send(line)
        assert set(reply) == {"error"}, (line, reply)
        assert isinstance(reply["error"], str) and reply["error"]
    # not UTF-8, and a line longer than the port accepts, on a raw socket
    with socket.create_connection(("127.0.0.1", locker.port), timeout=10) as s:
        f = s.makefile("rwb")
        for raw in (b"\xff\xfe\xfd\n", b"x" * 5000 + b"\n"):
            f.write(raw)
            f.flush()
            assert "error" in json.loads(f.readline())
        f.write(b"state\n")
        f.flush()
        assert json.loads(f.readline())["locker"] == "L1"
    assert locker.state()["locker"] == "L1"  # still serving


def test_door_forced_on_a_locked_bay_is_journaled_and_survives_sigkill(make_locker):
    locker = make_locker("L1")
    pending = locker.state()["pending"]
    assert locker.door(2, "open") == {"ok": True}
    assert locker.state()["bays"][1]["door"] == "open"
    assert locker.state()["pending"] == pending + 1
    locker.restart()  # SIGKILL and start again
    state = locker.state()
    assert state["pending"] == pending + 2  # door_forced kept, and a new boot event
    assert all(b["locked"] for b in state["bays"])


def test_restart_opens_the_control_port_again_on_the_same_port(make_locker):
    locker = make_locker("L1")
    port = locker.port
    for _ in range(3):
        locker.restart()
        assert locker.port == port
        wait_for(lambda: locker.state()["locker"] == "L1", what="state after restart")


def test_bad_device_file_is_one_line(tmp_path):
    import subprocess

    from harness import MICROPYTHON

    device = tmp_path / "device.json"
    device.write_text('{"locker_id": "L1", "bays": "eight"}')
    proc = subprocess.run(
        [str(MICROPYTHON), str(ROOT / "firmware/main.py")],
        cwd=tmp_path,
        env={"LOCKER_DEVICE": str(device), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    out = (proc.stdout + proc.stderr).strip()
    assert "device.json" in out and "Traceback" not in out, out
    assert len(out.splitlines()) == 1, out
