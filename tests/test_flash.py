"""tools/flash.py against the MicroPython unix port's REPL on a pseudo-terminal.

socat gives the REPL a pty the way a USB serial adapter gives an ESP32's; mpremote connects with
`resume` (no soft reset) and copies the build; the REPL's working directory stands in for the
board's flash filesystem. Every process started here is stopped by its pid.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
FLASH = ROOT / "tools" / "flash.py"

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


@pytest.fixture
def board(tmp_path):
    """A unix-port REPL behind a pty: yields (pty path, its working directory)."""
    cwd = tmp_path / "board"
    cwd.mkdir()
    tty = tmp_path / "tty"
    proc = subprocess.Popen(
        [
            "socat",
            f"PTY,link={tty},raw,echo=0",
            f"EXEC:{MICROPYTHON} -i,pty,raw,echo=0,stderr,setsid,ctty",
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not tty.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("socat did not create the pseudo-terminal")
        time.sleep(0.05)
    time.sleep(0.3)  # the REPL's banner
    yield tty, cwd
    kids = _children(proc.pid)
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A fresh `make firmware` tree (with umqtt from build/firmware/lib when it is there)."""
    out = tmp_path_factory.mktemp("build") / "firmware"
    lib = ROOT / "build" / "firmware" / "lib"
    if lib.is_dir():
        shutil.copytree(lib, out / "lib", ignore=shutil.ignore_patterns("*.mpy"))
    subprocess.run(
        [PY, str(ROOT / "tools" / "build_firmware.py"), str(ROOT / "firmware"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def _device(tmp_path) -> Path:
    path = tmp_path / "L7.json"
    path.write_text(
        json.dumps(
            {
                "locker_id": "L7",
                "site": "school",
                "board": "esp32",
                "bays": 8,
                "broker": {"host": "10.0.0.2", "port": 1883, "user": "L7", "password": "x"},
                "secret": "11" * 32,
                "data_dir": "data",
                "wifi": {"ssid": "school", "password": "pw"},
            }
        )
    )
    return path


def _flash(*args, timeout=120):
    return subprocess.run([PY, str(FLASH), *args], capture_output=True, text=True, timeout=timeout)


def test_flash_copies_build_byte_identical_and_it_imports(board, build, tmp_path):
    tty, cwd = board
    device = _device(tmp_path)
    r = _flash("--port", str(tty), "--device", str(device), "--build", str(build))
    assert r.returncode == 0, r.stderr
    assert "L7" in r.stdout
    expected = {"main.py", "device.json", "pinmap.json"}
    for mpy in build.rglob("*.mpy"):
        expected.add(mpy.relative_to(build).as_posix())
    expected.discard("manifest.mpy")  # the freezing recipe stays on the PC
    got = {p.relative_to(cwd).as_posix() for p in cwd.rglob("*") if p.is_file()}
    assert got == expected
    for rel in expected - {"device.json", "pinmap.json"}:
        assert (cwd / rel).read_bytes() == (build / rel).read_bytes(), rel
    assert (cwd / "device.json").read_bytes() == device.read_bytes()
    assert (cwd / "pinmap.json").read_bytes() == (ROOT / "hardware" / "pinmap.json").read_bytes()
    for sub in ("locker", "hal", "drivers", "lib/umqtt"):
        if (build / sub).is_dir():
            assert (cwd / sub).is_dir(), sub

    # the copied build imports on the "board" itself (the same REPL, still running)
    mpremote = str(ROOT / ".venv" / "bin" / "mpremote")
    code = (
        "import sys\nsys.path.insert(0, 'lib')\n"
        "import locker.core, app, hal.esp32, drivers.mfrc522, drivers.mcp23017\n"
        "import drivers.ds3231, json\n"
        "print('OK', hal.esp32.EPOCH_OFFSET, json.load(open('device.json'))['locker_id'])"
    )
    if (build / "lib" / "umqtt").is_dir():
        code += "\nimport umqtt.simple"
    r = subprocess.run(
        [mpremote, "connect", str(tty), "resume", "exec", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 0 L7" in r.stdout  # unix port: epoch 1970, no offset


def test_flash_twice_overwrites_without_a_reset(board, build, tmp_path):
    tty, cwd = board
    device = _device(tmp_path)
    assert (
        _flash("--port", str(tty), "--device", str(device), "--build", str(build)).returncode == 0
    )
    (tmp_path / "L7.json").write_text(device.read_text().replace('"bays": 8', '"bays": 16'))
    # the REPL keeps running between the two: nothing depends on a soft reset
    r = _flash("--port", str(tty), "--device", str(device), "--build", str(build), "--frozen")
    assert r.returncode == 0, r.stderr
    assert json.loads((cwd / "device.json").read_text())["bays"] == 16
    assert (cwd / "locker" / "core.mpy").is_file()


def test_frozen_copies_only_main_pinmap_and_device(board, build, tmp_path):
    tty, cwd = board
    r = _flash(
        "--port", str(tty), "--device", str(_device(tmp_path)), "--build", str(build), "--frozen"
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["device.json", "main.py", "pinmap.json"]


def test_bad_inputs_give_one_line_errors(tmp_path, build):
    missing = _flash("--port", "/nonexistent", "--device", str(tmp_path / "no.json"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "no.json" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = _flash("--port", "/nonexistent", "--device", str(bad), "--build", str(build))
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    partial = tmp_path / "partial.json"
    partial.write_text('{"locker_id": "L1"}')
    r = _flash("--port", "/nonexistent", "--device", str(partial), "--build", str(build))
    assert r.returncode == 2 and "bays" in r.stderr
    r = _flash(
        "--port",
        "/nonexistent",
        "--device",
        str(_device(tmp_path)),
        "--build",
        str(tmp_path / "nobuild"),
    )
    assert r.returncode == 2 and "make firmware" in r.stderr
    r = _flash(
        "--port",
        str(tmp_path / "no-such-tty"),
        "--device",
        str(_device(tmp_path)),
        "--build",
        str(build),
        timeout=60,
    )
    assert r.returncode == 2 and "mpremote failed" in r.stderr


def test_tls_ca_certificate_goes_along(tmp_path, build):
    device = _device(tmp_path)
    d = json.loads(device.read_text())
    d["broker"].update(tls=True, ca="ca.crt")
    device.write_text(json.dumps(d))
    r = _flash("--port", "P", "--device", str(device), "--build", str(build), "--dry-run")
    assert r.returncode == 2 and "ca.crt" in r.stderr
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    r = _flash("--port", "P", "--device", str(device), "--build", str(build), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"{tmp_path / 'ca.crt'} :ca.crt" in r.stdout
    assert "resume" in r.stdout.split("exec")[0]
