"""Real parts for end-to-end tests: a mosquitto on a free loopback port, simulated lockers running
the real firmware on the MicroPython unix port, and `lockerctl serve`. Every process is started
here and stopped by its pid; nothing outlives the test that started it.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
MICROPYTHON = VENV_BIN / "micropython"
LOCKERCTL = VENV_BIN / "lockerctl"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# Every simulated locker's millisecond counter starts this close to its wrap at 2^30 (as an
# ESP32's does after 12.4 days), so every end-to-end test runs across the wrap.
TICKS_START = (1 << 30) - 3000


def cmdauth():
    """The firmware's own `locker/cmdauth.py` (it runs on CPython): what a locker does with a
    signed command. Its `CommandError.reason` says why one is refused."""
    import sys

    firmware = str(ROOT / "firmware")
    if firmware not in sys.path:
        sys.path.insert(0, firmware)
    import locker.cmdauth

    return locker.cmdauth


def verify_as_locker(payload: bytes, secret: bytes, locker_id: str, last_id: int, now) -> dict:
    """A signed command as the locker with this secret checks it (`cmdauth().CommandError`
    when it refuses it)."""
    from lockerctl import keys

    return cmdauth().verify(payload, keys.cmd_key(secret), locker_id, last_id, now)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process with its output in a log file; stopped by pid (its whole group)."""

    def __init__(self, argv, log: Path, env=None, cwd=ROOT):
        self.argv = [str(a) for a in argv]
        self.log_path = log
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stop(self):
        self.kill(signal.SIGTERM)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Broker:
    """mosquitto on loopback. `conf` may name a generated configuration (lockerctl broker config);
    otherwise an anonymous listener on a free port."""

    def __init__(self, workdir: Path, conf: Path | None = None, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        if conf is None:
            conf = workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                "persistence false\nmax_inflight_messages 0\n"
            )
        self.conf = conf
        self.process = Process([MOSQUITTO, "-c", conf], workdir / "mosquitto.log")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self):
        self.process.start()
        wait_port(self.port, proc=self.process.proc)
        return self

    def stop(self):
        self.process.stop()

    def kill(self):
        self.process.kill()


class SimLocker:
    """The real firmware on the MicroPython unix port with `board: sim`."""

    def __init__(
        self,
        workdir: Path,
        locker_id: str = "L1",
        broker: Broker | None = None,
        bays: int = 8,
        secret: str | None = None,
        device: dict | None = None,
        compiled: bool = False,
        heapsize: str | None = None,
        site: str = "school",
        flash_timing: str = "off",
    ):
        """`flash_timing`: the simulated flash's delays (device.json `sim.flash_timing`), off
        unless the test or benchmark asks for a chip's times ("typical", "worst")."""
        self.workdir = workdir
        self.locker_id = locker_id
        self.port = free_port()
        self.compiled = compiled
        self.heapsize = heapsize
        if device is None:
            device = {
                "locker_id": locker_id,
                "site": site,
                "board": "sim",
                "bays": bays,
                "broker": {
                    "host": "127.0.0.1",
                    "port": broker.port if broker else free_port(),
                    "user": locker_id,
                    "password": "pw",
                    "tls": False,
                },
                "secret": secret or secrets.token_hex(32),
            }
        device.setdefault("data_dir", str(workdir / f"data-{locker_id}"))
        device.setdefault("sim", {})["control_port"] = self.port
        device["sim"].setdefault("ticks_start", TICKS_START)
        device["sim"].setdefault("flash_timing", flash_timing)
        self.device = device
        self.device_path = workdir / f"device-{locker_id}.json"
        self.device_path.write_text(json.dumps(device))
        self.process: Process | None = None
        self._sock: socket.socket | None = None
        self._file = None

    def argv(self):
        argv = [MICROPYTHON]
        if self.heapsize:
            argv += ["-X", f"heapsize={self.heapsize}"]
        if self.compiled:
            argv += ["-c", "import sys; sys.path.insert(0,'build/firmware'); import main"]
        else:
            argv += [ROOT / "firmware" / "main.py"]
        return argv

    def start(self, timeout: float = 15.0):
        env = dict(os.environ, LOCKER_DEVICE=str(self.device_path))
        self.process = Process(self.argv(), self.workdir / f"locker-{self.locker_id}.log", env=env)
        self.process.start()
        wait_port(self.port, timeout=timeout, proc=self.process.proc)
        return self

    def _close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = self._file = None

    def kill(self):
        self._close()
        if self.process:
            self.process.kill()

    def stop(self):
        self._close()
        if self.process:
            self.process.stop()

    def restart(self):
        self.kill()
        return self.start()

    def send(self, line: str, timeout: float = 10.0) -> dict:
        """One control-port request; the JSON reply."""
        if self._sock is None:
            self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            self._file = self._sock.makefile("rwb")
        self._file.write(line.encode() + b"\n")
        self._file.flush()
        reply = self._file.readline()
        if not reply:
            self._close()
            raise ConnectionError(f"locker {self.locker_id} closed the control port")
        return json.loads(reply)

    def tap(self, uid: str) -> dict:
        return self.send(f"tap {uid}")

    def door(self, bay: int, state: str) -> dict:
        return self.send(f"door {bay} {state}")

    def clock(self, unix_seconds: int) -> dict:
        return self.send(f"clock {int(unix_seconds)}")

    def state(self) -> dict:
        return self.send("state")


def lockerctl(
    *args, db: str, input: str | None = None, env=None, check=True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Runs `lockerctl ARGS --db DB` and returns the completed process (text)."""
    argv = [str(LOCKERCTL), *[str(a) for a in args]]
    if db and "--db" not in args:
        argv += ["--db", db]
    proc = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or dict(os.environ),
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"lockerctl {' '.join(map(str, args))} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc


class Serve:
    """`lockerctl serve` against a broker, stopped by pid."""

    def __init__(
        self, workdir: Path, db: str, broker: Broker, http_port: int | None = None, extra=()
    ):
        argv = [LOCKERCTL, "serve", "--db", db, "--broker", broker.address, *extra]
        self.http_port = http_port
        if http_port:
            argv += ["--http", f"127.0.0.1:{http_port}"]
        self.process = Process(argv, workdir / "serve.log")

    def start(self, timeout: float = 20.0):
        """Returns once serve is connected and subscribed (and its dashboard listening)."""
        self.process.start()
        wait_for(
            lambda: "connected to" in self.process.output() or not self.process.alive(),
            timeout=timeout,
            what="lockerctl serve to connect",
        )
        if not self.process.alive():
            raise RuntimeError("lockerctl serve exited:\n" + self.process.output())
        if self.http_port:
            wait_port(self.http_port, proc=self.process.proc)
        return self

    def stop(self):
        self.process.stop()

    def kill(self):
        self.process.kill()


def pg_bin(name: str) -> str:
    """The path of PostgreSQL's program `name` (Debian keeps them out of PATH)."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} is missing: tools/install-system-deps installs it"
        )
    return found


def budget(examples: int, **kw):
    """Hypothesis settings for a property test: `examples` examples in `make test`; the loaded
    profile's own (larger) budget under `--hypothesis-profile=long` (tests/conftest.py)."""
    from hypothesis import HealthCheck, settings

    if settings.get_current_profile_name() == "default":
        kw.setdefault("max_examples", examples)
    kw.setdefault("deadline", None)
    kw.setdefault(
        "suppress_health_check", [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    )
    return settings(**kw)
