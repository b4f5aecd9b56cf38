"""The install a school's technician does: `make dist` builds a wheel, installed into a fresh
virtual environment (and with pipx), `lockerctl` on the PATH; the README's "Setting up a school"
steps, read from the README and run with the installed command in an empty directory (a real
mosquitto with the generated TLS configuration, a simulated bank running the real firmware in
place of the ESP32 that `make flash` would write); and `lockerctl setup`'s systemd units, checked
by `systemd-analyze verify`."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from harness import MICROPYTHON, MOSQUITTO, ROOT, Process, free_port, wait_for, wait_port

pytestmark = pytest.mark.slow


def _clean_env(extra_path: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKER_", "VIRTUAL_ENV"))}
    path = [p for p in env.get("PATH", "").split(":") if ".venv" not in p]
    env["PATH"] = ":".join(([str(extra_path)] if extra_path else []) + path)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        ["make", "-s", "dist", f"DIST={out}"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (found,) = out.glob("lockerctl-*.whl")
    names = zipfile.ZipFile(found).namelist()
    # the package data the dashboard needs travels in the wheel
    assert "lockerctl/web/static/app.css" in names and "lockerctl/web/static/app.js" in names
    # and the store's schema history (Alembic reads these files, it does not import them)
    for name in (
        "env.py",
        "script.py.mako",
        "versions/0001_initial.py",
        "versions/0016_mail_seen.py",
    ):
        assert f"lockerctl/migrations/{name}" in names, name
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtual environment with only the wheel (and its dependencies) installed."""
    d = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run(["python3", "-m", "venv", str(d)], check=True)
    r = subprocess.run(
        [d / "bin/python", "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert r.returncode == 0, r.stderr
    return d / "bin"


def test_the_installed_command_has_every_command(venv, tmp_path):
    r = subprocess.run(
        ["lockerctl", "--help"], capture_output=True, text=True, env=_clean_env(venv), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    for command in ("serve", "broker", "locker", "setup", "backup", "restore", "sim"):
        assert re.search(rf"^\s+{command}\b", r.stdout, re.M), (command, r.stdout)
    assert shutil.which("lockerctl", path=_clean_env(venv)["PATH"]) == str(venv / "lockerctl")


def test_the_installed_command_makes_a_store_with_every_revision(venv, tmp_path):
    db = f"sqlite:///{tmp_path / 'lockers.db'}"
    r = subprocess.run(
        ["lockerctl", "audit", "verify", "--no-broker", "--db", db],
        capture_output=True,
        text=True,
        env=_clean_env(venv),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(tmp_path / "lockers.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("0016_mail_seen",)
        ]
    conn.close()


@pytest.mark.skipif(shutil.which("pipx") is None, reason="pipx is not installed (Debian: pipx)")
def test_pipx_installs_the_wheel(wheel, tmp_path):
    env = _clean_env()
    env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"))
    r = subprocess.run(
        ["pipx", "install", str(wheel)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [tmp_path / "bin" / "lockerctl", "--help"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0 and "backup" in r.stdout, r.stderr


def _readme_steps() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Setting up a school", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = []
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line)  # the comments
        if line.strip():
            lines.append(line.strip())
    return lines


def test_readme_setting_up_a_school_with_the_installed_command(venv, tmp_path):
    school = tmp_path / "school"
    school.mkdir()
    env = _clean_env(venv)
    tls_port, plain_port, http_port = free_port(), free_port(), free_port()
    procs: list[Process] = []

    def run(line: str, input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["bash", "-c", line], input=input, capture_output=True, text=True, env=env, cwd=school
        )
        assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
        return r

    def start(name, argv, proc_env=None) -> Process:
        p = Process(argv, tmp_path / f"{name}.log", env=proc_env or env, cwd=school).start()
        procs.append(p)
        return p

    # The dashboard's certificate: the school's own (here, one issued by a CA made for the test).
    from lockerctl.broker import make_ca, make_server_cert

    ca_key, ca_cert = make_ca("school")
    key, cert = make_server_cert(ca_key, ca_cert, ["localhost", "127.0.0.1"])
    (school / "dash.crt").write_bytes(cert)
    (school / "dash.key").write_bytes(key)
    broker_dir = str(tmp_path / "broker")
    steps = _readme_steps()
    assert len(steps) >= 9 and all(
        s.startswith(("lockerctl", "mosquitto", "make", "cp")) for s in steps
    )
    try:
        for line in steps:
            line = line.replace("/etc/classlocker/broker", broker_dir)
            if line.startswith("lockerctl broker config") and "--listen" in line:
                line = re.sub(r"--listen \S+", f"--listen 127.0.0.1:{tls_port}", line)
                line = re.sub(r"--address \S+", "--address 127.0.0.1", line)
                line += f" --local-port {plain_port}"  # this machine's 1883 may be taken
                run(line)
            elif line.startswith("lockerctl roster import"):
                run(line.replace("roster.csv", str(ROOT / "docs/examples/roster.csv")))
            elif line.startswith("lockerctl timetable set"):
                run(line.replace("timetable.toml", str(ROOT / "docs/examples/timetable.toml")))
            elif line.startswith("lockerctl locker add"):
                line = line.replace("--board esp32", "--board sim")
                line = re.sub(r"--wifi-ssid \S+ --wifi-password \S+ ", "", line)
                run(line)
            elif line.startswith("mosquitto -c"):
                conf = shlex.split(line)[2]
                start("mosquitto", [MOSQUITTO, "-c", conf])
                wait_port(plain_port, proc=procs[-1].proc)
                wait_port(tls_port, proc=procs[-1].proc)
            elif line.startswith("lockerctl user add"):
                run(line, input="a long office password 1\n")
            elif line.startswith("lockerctl serve"):
                argv = shlex.split(line.replace("0.0.0.0:8443", f"127.0.0.1:{http_port}"))
                serve = start("serve", [venv / "lockerctl", *argv[1:]])
                wait_for(
                    lambda s=serve: "connected to" in s.output() or not s.alive(),
                    timeout=30,
                    what="serve to connect to the remembered broker",
                )
                assert serve.alive(), serve.output()
                assert f"127.0.0.1:{plain_port}" in serve.output(), serve.output()
            elif line.startswith("make flash"):
                # No ESP32 here: the same firmware on the unix port with the printed device.json.
                device_path = school / re.search(r"DEVICE=(\S+)", line).group(1)
                locker_env = dict(env, LOCKER_DEVICE=str(device_path))
                start("L1", [MICROPYTHON, ROOT / "firmware/main.py"], locker_env)
            else:
                run(line)

        device_path = school / "L1.json"
        assert stat.S_IMODE(device_path.stat().st_mode) == 0o600
        device = json.loads(device_path.read_text())
        assert device["broker"]["host"] == "127.0.0.1" and device["broker"]["port"] == tls_port
        assert device["broker"]["tls"] is True and device["broker"]["ca"] == "ca.crt"
        assert device["data_dir"] == str(school / "lockers" / "L1")

        def sim(*args) -> dict:
            r = run(shlex.join(["lockerctl", "sim", *args]))
            return json.loads(r.stdout)

        wait_port(device["sim"]["control_port"], timeout=30, proc=procs[-1].proc)
        # The bank is online: it took its configuration from serve over TLS.
        wait_for(
            lambda: (s := sim("state", "L1"))["online"] and s["config"] is not None,
            timeout=60,
            what="the bank online with its configuration",
        )
        sim("clock", "L1", str(int(time.time())))
        reply = sim("tap", "L1", "04B20001")  # Ms Evans, staff
        assert reply["result"] == "granted" and reply["action"] == "deposit", reply
        sim("door", "L1", str(reply["bay"]), "open")
        sim("door", "L1", str(reply["bay"]), "close")
        wait_for(lambda: sim("state", "L1")["pending"] == 0, timeout=30, what="acknowledged")
        export = run("lockerctl export --format csv").stdout
        assert ",deposit,S0001,Ms Evans,staff," in export, export
        assert "intact" in run("lockerctl audit verify").stdout
        # `open` goes to the remembered broker too, and the bank answers.
        opened = run(f"lockerctl open L1 {reply['bay']} --by O0001 --reason drill --wait 20")
        assert f"bay {reply['bay']} opened" in opened.stdout, opened.stdout
        for p in procs:
            assert p.alive(), p.output()
    finally:
        for p in reversed(procs):
            p.stop()
    for p in procs:
        assert "Traceback" not in p.output(), p.output()


def test_setup_writes_units_that_systemd_accepts(venv, tmp_path):
    out = tmp_path / "root"
    r = subprocess.run(
        [
            venv / "lockerctl",
            "setup",
            "--dir",
            out,
            "--name",
            "lockers.school.example",
            "--keep",
            "7",
        ],
        capture_output=True,
        text=True,
        env=_clean_env(venv),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    state = out / "var/lib/classlocker"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for secret in ("lockers.db", "broker/passwd", "broker/server.key", "tls/dash.key"):
        assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600, secret
    units = out / "etc/systemd/system"
    serve = (units / "classlocker-serve.service").read_text()
    assert "User=classlocker" in serve and "Restart=on-failure" in serve
    assert "ProtectSystem=strict" in serve and "ReadWritePaths=/var/lib/classlocker" in serve
    assert f"ExecStart={venv / 'lockerctl'} serve --http 0.0.0.0:8443" in serve
    assert "--http-cert /var/lib/classlocker/tls/dash.crt" in serve
    broker = (units / "classlocker-broker.service").read_text()
    assert "-c /var/lib/classlocker/broker/mosquitto.conf" in broker
    backup = (units / "classlocker-backup.service").read_text()
    assert "backup --dir /var/backups/classlocker --keep 7" in backup
    assert "OnCalendar=*-*-* 02:30:00" in (units / "classlocker-backup.timer").read_text()
    env_file = (out / "etc/classlocker/classlocker.env").read_text()
    assert "LOCKER_DB=sqlite:////var/lib/classlocker/lockers.db" in env_file
    # The broker's address is remembered in the new store for every later command.
    device = subprocess.run(
        [
            venv / "lockerctl",
            "locker",
            "add",
            "L1",
            "--board",
            "esp32",
            "-o",
            tmp_path / "L1.json",
        ],
        capture_output=True,
        text=True,
        env=dict(_clean_env(venv), LOCKER_DB=f"sqlite:///{state / 'lockers.db'}"),
        cwd=tmp_path,
    )
    assert device.returncode == 0, device.stderr
    broker_conf = json.loads((tmp_path / "L1.json").read_text())["broker"]
    assert broker_conf["port"] == 8883 and broker_conf["tls"] is True
    assert broker_conf["host"] == "lockers.school.example"

    # Run again with the school's own certificate: it is used, the store and its lockers kept.
    from lockerctl.broker import make_ca, make_server_cert

    ca_key, ca_cert = make_ca("school")
    key, cert = make_server_cert(ca_key, ca_cert, ["lockers.school.example"])
    (tmp_path / "school.crt").write_bytes(cert)
    (tmp_path / "school.key").write_bytes(key)
    again = subprocess.run(
        [venv / "lockerctl", "setup", "--dir", out, "--name", "lockers.school.example"]
        + ["--http-cert", tmp_path / "school.crt", "--http-key", tmp_path / "school.key"],
        capture_output=True,
        text=True,
        env=_clean_env(venv),
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert (state / "tls/dash.crt").read_bytes() == cert
    assert "1 locker account(s)" in again.stdout  # L1, added above, is still there

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the units were not verified")
    files = sorted(str(p) for p in units.iterdir())
    assert len(files) == 6
    r = subprocess.run([analyze, "verify", *files], capture_output=True, text=True)
    problems = [line for line in r.stderr.splitlines() if "classlocker" in line]
    assert r.returncode == 0 and not problems, r.stderr
