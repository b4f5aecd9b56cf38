"""`make demo`: the whole system on one machine.

A broker on loopback (configured by `lockerctl broker config`: no anonymous access, an ACL per
locker), `lockerctl serve` with its SQLite store and dashboard, two simulated locker banks running
the real firmware on the MicroPython unix port, a sample roster and timetable. Prints what to do
next; Ctrl-C stops everything it started (each process by its pid).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
DEMO = Path(os.environ.get("CLASSLOCKER_DEMO_DIR") or ROOT / "var" / "demo")
EXAMPLES = ROOT / "docs" / "examples"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
LOCKERS = [("L1", 8), ("L2", 12)]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pick_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chosen_port(variable: str, default: int, what: str) -> int:
    """$VARIABLE if set (it must be free), else `default`, or a free port said out loud."""
    value = os.environ.get(variable)
    if value:
        try:
            port = int(value)
        except ValueError:
            raise SystemExit(f"demo: {variable}={value!r} is not a port number") from None
        if not 0 < port < 65536:
            raise SystemExit(f"demo: {variable}={value!r} is not a port number")
        if not port_free(port):
            raise SystemExit(f"demo: {variable}={port}: the port is in use (choose another)")
        return port
    port = pick_port(default)
    if port != default:
        print(
            f"demo: port {default} is in use; the {what} is on {port} instead "
            f"(set {variable} to choose)",
            flush=True,
        )
    return port


def lock_demo_dir() -> int:
    """Refuses to start over a demo running in the same directory (its data would be deleted
    under it): DEMO/demo.lock is held (flock) by the running demo, with its pid in it."""
    import fcntl

    lock = DEMO / "demo.lock"
    if lock.exists():
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise SystemExit(
                f"demo: a demo is already running in {DEMO} (pid {pid}); stop it first "
                "(Ctrl-C in its terminal), or set CLASSLOCKER_DEMO_DIR for a second one"
            ) from None
        finally:
            os.close(fd)
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir(parents=True)
    os.chmod(DEMO, 0o700)  # it holds the lockers' secrets and the store
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd  # held open (and locked) until this process exits


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited (see {DEMO}/*.log)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: {what} did not start listening on port {port}")


class Demo:
    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.env = dict(os.environ)

    def lockerctl(self, *args, input=None) -> str:
        proc = subprocess.run(
            [str(BIN / "lockerctl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
        )
        if proc.returncode:
            raise SystemExit(f"demo: lockerctl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def start(self, name: str, argv, env=None) -> subprocess.Popen:
        log = open(DEMO / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or self.env,
            cwd=ROOT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def run(self) -> None:
        self.lock_fd = lock_demo_dir()
        broker_port = chosen_port("DEMO_BROKER_PORT", 1883, "broker")
        http_port = chosen_port("DEMO_HTTP_PORT", 8080, "dashboard")
        db = f"sqlite:///{DEMO / 'lockers.db'}"
        self.env.update(LOCKER_DB=db, LOCKER_BROKER=f"127.0.0.1:{broker_port}")
        self.env.pop("LOCKER_SIM_DIR", None)

        for locker_id, bays in LOCKERS:
            # `locker add` picks control ports nothing else uses and records them, so
            # `lockerctl sim` finds them in the database.
            path = DEMO / f"{locker_id}.json"
            self.lockerctl(
                "locker", "add", locker_id, "--bays", str(bays),
                "--data-dir", str(DEMO / locker_id), "-o", str(path),
            )  # fmt: skip
        self.lockerctl("roster", "import", str(EXAMPLES / "roster.csv"))
        self.lockerctl("timetable", "set", str(EXAMPLES / "timetable.toml"))
        admin_password = "demo-admin"
        try:
            self.lockerctl(
                "user",
                "add",
                "admin",
                "--role",
                "admin",
                "--person",
                "H0001",
                "--password-stdin",
                input=admin_password + "\n",
            )
        except SystemExit:
            admin_password = None  # the dashboard's accounts are not there in this build
        self.lockerctl(
            "broker", "config", str(DEMO / "broker"), "--listen", f"127.0.0.1:{broker_port}"
        )

        broker = self.start("mosquitto", [MOSQUITTO, "-c", DEMO / "broker" / "mosquitto.conf"])
        wait_port(broker_port, broker, "mosquitto")
        serve = self.start(
            "serve", [BIN / "lockerctl", "serve", "--http", f"127.0.0.1:{http_port}"]
        )
        wait_port(http_port, serve, "lockerctl serve")
        for locker_id, _ in LOCKERS:
            device_path = DEMO / f"{locker_id}.json"
            device = json.loads(device_path.read_text())
            env = dict(self.env, LOCKER_DEVICE=str(device_path))
            proc = self.start(locker_id, [BIN / "micropython", ROOT / "firmware" / "main.py"], env)
            wait_port(device["sim"]["control_port"], proc, f"locker {locker_id}")
            # the sim's clock is unknown at boot, as an ESP32's is before NTP: set it now
            self.lockerctl("sim", "clock", locker_id, str(int(time.time())))

        print(
            f"""
classlocker demo is running (logs and data in {DEMO}/)

  dashboard   http://127.0.0.1:{http_port}/   {
                "user admin, password " + admin_password if admin_password else ""
            }
  broker      127.0.0.1:{broker_port} (mosquitto, accounts and ACL from lockerctl broker config)
  lockers     {", ".join(f"{lid} ({bays} bays)" for lid, bays in LOCKERS)}

In another terminal:
  export LOCKER_DB={db}
  # (the broker's address and each locker's control port are recorded in that database)
  .venv/bin/lockerctl sim tap L1 04B20001        # Ms Evans (staff) deposits her phone
  .venv/bin/lockerctl sim door L1 1 open         # she opens bay 1, puts the phone in...
  .venv/bin/lockerctl sim door L1 1 close        # ...and closes it: the bay locks
  .venv/bin/lockerctl sim tap L1 04A10002        # Ben (Year 6, not walk-home): policy_flag
  .venv/bin/lockerctl sim state L1
  .venv/bin/lockerctl open L1 all --by O0001 --reason "fire drill"
  .venv/bin/lockerctl export --format csv
  .venv/bin/lockerctl audit verify

Cards are in docs/examples/roster.csv. Press Ctrl-C to stop everything.
""",
            flush=True,
        )
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise SystemExit(f"demo: {name} stopped unexpectedly (see {DEMO}/{name}.log)")
            time.sleep(1)


def main() -> None:
    demo = Demo()
    # Ctrl-C (even when started from a script that ignores SIGINT) and SIGTERM both stop the demo.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        demo.run()
    except KeyboardInterrupt:
        print("\nstopping the demo...")
    finally:
        demo.stop_all()
    print("demo stopped; nothing left running.")


if __name__ == "__main__":
    sys.exit(main())
