"""`lockerctl setup`: classlocker installed as services on a school's server (run as root): a
service account, the state directory with the store and the broker's configuration, and
systemd units for the broker, `lockerctl serve` and the nightly backup (docs/install.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from . import units
from .clibase import UserError, cli, parse_hostport


def _lockerctl_argv() -> list[str]:
    """How the services run this lockerctl: its script, or this Python with -m lockerctl."""
    script = Path(sys.argv[0])
    if script.name == "lockerctl" and script.exists():
        return [os.path.abspath(script)]
    return [sys.executable, "-m", "lockerctl"]


def _systemd_running() -> bool:
    """systemd is this machine's init (not so in most containers)."""
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def _interpreter(script: str) -> str | None:
    """The interpreter a script's #! line names (resolved), or None."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    return os.path.realpath(parts[0]) if parts else None


def _run(argv: list[str], what: str, cwd: str | None = None) -> str:
    """The command's output; UserError with its last line of errors when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["failed"]
        raise UserError(f"{what}: {lines[-1]}")
    return proc.stdout


def _write(path: Path, text: str | bytes, mode: int, owner: tuple[int, int] | None) -> Path:
    from .broker import _write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    uid, gid = owner if owner else (None, None)
    _write_atomic(path, data, mode, uid, gid)
    return path


def _dashboard_tls(tls_dir: Path, cert, key, site: str, names: list[str], owner) -> list[str]:
    """The dashboard's certificate in the state directory: the school's own (copied), or one
    issued by a site CA made here (kept on later runs). Returns notes for the user."""
    from . import broker

    crt_path, key_path = tls_dir / "dash.crt", tls_dir / "dash.key"
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    if cert:
        try:
            from .web.app import tls_context

            tls_context(str(cert), str(key))
            cert_pem, key_pem = Path(cert).read_bytes(), Path(key).read_bytes()
        except (ValueError, OSError) as e:
            raise UserError(f"--http-cert/--http-key: {e}") from None
        _write(crt_path, cert_pem, 0o600, owner)
        _write(key_path, key_pem, 0o600, owner)
        return [f"the dashboard uses the school's certificate {cert}"]
    if crt_path.exists() and key_path.exists():
        return [f"the dashboard keeps its certificate {crt_path}"]
    ca_key, ca_cert = broker.make_ca(site)
    srv_key, srv_cert = broker.make_server_cert(ca_key, ca_cert, names)
    _write(tls_dir / "ca.crt", ca_cert, 0o644, owner)
    _write(crt_path, srv_cert + ca_cert, 0o600, owner)
    _write(key_path, srv_key, 0o600, owner)
    return [
        f"made a certificate for the dashboard ({', '.join(names)}), issued by a CA of the "
        f"site: browsers warn until {tls_dir / 'ca.crt'} is trusted on staff computers"
    ]


@cli.command()
@click.option(
    "--dir",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="OUT",
    help="A dry run: write every file under OUT (OUT/etc/systemd/system/..., "
    "OUT/var/lib/classlocker/...) as the current user and change nothing else.",
)
@click.option("--user", default="classlocker", show_default=True, help="The service account.")
@click.option(
    "--state-dir",
    default="/var/lib/classlocker",
    show_default=True,
    help="The store, the broker's files and the certificates (0700, the account's home).",
)
@click.option(
    "--backup-dir",
    default="/var/backups/classlocker",
    show_default=True,
    help="Where the nightly backups go.",
)
@click.option("--site", default="school", show_default=True, help="Site name.")
@click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    help="The store [sqlite:///STATE_DIR/lockers.db]; postgresql://... for a PostgreSQL "
    "server (then install the wheel with psycopg: docs/install.md).",
)
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="The broker's listener for the lockers [0.0.0.0:8883 with TLS, else 127.0.0.1:1883].",
)
@click.option(
    "--tls/--no-tls",
    default=True,
    show_default=True,
    help="TLS between the lockers and the broker (a site CA is made).",
)
@click.option(
    "--address",
    default=None,
    metavar="DNS|IP",
    help="The name or address the lockers use for the broker [this machine's address].",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="DNS|IP",
    help="A name of this server (repeatable): in the broker's and dashboard's certificates.",
)
@click.option(
    "--http",
    default="0.0.0.0:8443",
    show_default=True,
    metavar="HOST:PORT",
    help="The dashboard's address (HTTPS).",
)
@click.option("--http-cert", default=None, metavar="FILE", help="The school's certificate (PEM).")
@click.option("--http-key", default=None, metavar="FILE", help="Its private key (PEM).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="The service's log format (the journal; json for a log collector).",
)
@click.option(
    "--keep",
    type=click.IntRange(1, 10000),
    default=14,
    show_default=True,
    help="Nightly backups kept.",
)
@click.option(
    "--backup-at",
    default="02:30",
    show_default=True,
    metavar="HH:MM",
    help="When the nightly backup runs (the server's local time).",
)
@click.option("--no-start", is_flag=True, help="Write and enable nothing yet: only the files.")
@click.option(
    "--yes",
    is_flag=True,
    help="Do not ask before changing the system (for scripts; asked at a terminal).",
)
def setup(**options):
    """Install classlocker as services on this server (run as root): a service account, the
    state directory (0700) with the store and the broker's configuration, and systemd units
    for the broker, `lockerctl serve` (restarted on failure) and a nightly backup; then starts
    them. Safe to run again (an upgrade, another option): the store and the keys are kept.
    docs/install.md walks through it."""
    o = _Setup(**options)
    _check(o)
    argv = _lockerctl_argv()
    _check_reachable(o, argv)
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if mosquitto is None:
        raise UserError("mosquitto is not installed (apt-get install mosquitto)")
    _confirm(o)
    owner = _service_account(o.user, o.state_dir) if o.real else None
    state = o.at(o.state_dir)
    for d in (state, o.at(o.backup_dir)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        if owner:
            os.chown(d, *owner)
    serve_args, notes = _serve_args(o, state, owner)
    inst = units.Install(
        user=o.user,
        state_dir=o.state_dir,
        backup_dir=o.backup_dir,
        lockerctl=argv,
        mosquitto=mosquitto,
        systemctl=shutil.which("systemctl") or "/usr/bin/systemctl",
        site=o.site,
        serve_args=serve_args,
        keep=o.keep,
        backup_at=o.backup_at,
        db_url=o.db_url,
    )
    _configure_broker(o, argv, state)
    written = _write_files(o, inst, state, owner)
    for note in notes:
        click.echo(note)
    for path in written:
        click.echo(f"wrote {path}")
    if not o.real:
        click.echo(
            f"dry run: nothing installed (check: systemd-analyze verify {o.at('/etc')}/...)"
        )
        return
    _start(o, inst)


@dataclass
class _Setup:
    """`setup`'s options."""

    out: Path | None  # a dry run: everything written under it
    user: str
    state_dir: str
    backup_dir: str
    site: str
    db_url: str | None
    listen: str | None
    tls: bool
    address: str | None
    names: tuple[str, ...]
    http: str
    http_cert: str | None
    http_key: str | None
    log_format: str
    keep: int
    backup_at: str
    no_start: bool
    yes: bool

    @property
    def real(self) -> bool:
        """Installing on this machine, not a dry run (--dir)."""
        return self.out is None

    def at(self, path: str) -> Path:
        """Where a file of the installation is written."""
        return self.out.resolve() / path.lstrip("/") if self.out else Path(path)


def _check(o: _Setup) -> None:
    """The options make sense, and a real installation runs as root."""
    from . import broker

    if o.real and os.geteuid() != 0:
        raise UserError("setup changes the system: run it as root, or use --dir OUT (a dry run)")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", o.backup_at):
        raise UserError(f"--backup-at {o.backup_at!r}: HH:MM")
    if bool(o.http_cert) != bool(o.http_key):
        raise UserError("--http-cert and --http-key go together")
    try:
        broker.check_name("--user", o.user)
        broker.check_name("--site", o.site)
        for name in [*o.names, *([o.address] if o.address else [])]:
            broker.check_name("--name/--address", name)
    except broker.BrokerError as e:
        raise UserError(str(e)) from None
    for what, value in (("--state-dir", o.state_dir), ("--backup-dir", o.backup_dir)):
        if not value.startswith("/") or value.rstrip("/") in ("", "/var", "/etc", "/usr"):
            raise UserError(f"{what} {value!r}: an absolute path of its own")
    parse_hostport(o.http, 8443)


def _check_reachable(o: _Setup, argv: list[str]) -> None:
    """The service account must be able to run this lockerctl (not from a home directory)."""
    private = [p for p in (argv[0], _interpreter(argv[0])) if p and re.match(r"/(root|home)/", p)]
    if o.real and private:
        raise UserError(
            f"lockerctl runs from {private[0]}, which the service account cannot reach: install "
            "it for every user (docs/install.md: PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin "
            "pipx install ...)"
        )


def _confirm(o: _Setup) -> None:
    """At a terminal, asks before changing the system (--yes: does not ask)."""
    if not o.real or o.yes:
        return
    question = (
        f"Install the classlocker services on this machine (account {o.user}, {o.state_dir}, "
        "units in /etc/systemd/system)?"
    )
    if not sys.stdin.isatty():
        raise UserError("setup changes the system: add --yes to run it without a terminal")
    if not click.confirm(question, default=True):
        raise UserError("nothing changed")


def _service_account(user: str, home: str) -> tuple[int, int]:
    """(uid, gid) of the service account, made (a system account) when missing."""
    import pwd

    try:
        account = pwd.getpwnam(user)
    except KeyError:
        _run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                home,
                "--no-create-home",
                "--shell",
                "/bin/bash",
                "--comment",
                "classlocker service",
                user,
            ],
            f"cannot create the account {user}",
        )
        click.echo(f"created the service account {user}")
        account = pwd.getpwnam(user)
    return account.pw_uid, account.pw_gid


def _serve_args(o: _Setup, state: Path, owner) -> tuple[list[str], list[str]]:
    """(`lockerctl serve`'s options, notes for the user): the dashboard on --http, over HTTPS
    with the school's certificate or one made here unless it listens on loopback only."""
    from . import broker
    from .sitesettings import primary_address

    serve_args = ["--log-format", o.log_format]
    if not o.http:
        return serve_args, []
    serve_args = ["--http", o.http, *serve_args]
    host, _ = parse_hostport(o.http, 8443)
    if not o.http_cert and broker.is_loopback(host):
        return serve_args, []
    server_names = [*o.names, o.address or primary_address()]
    dashboard_names = list(dict.fromkeys([*server_names, *broker.default_names([])]))
    notes = _dashboard_tls(state / "tls", o.http_cert, o.http_key, o.site, dashboard_names, owner)
    serve_args += [
        "--http-cert",
        f"{o.state_dir}/tls/dash.crt",
        "--http-key",
        f"{o.state_dir}/tls/dash.key",
    ]
    return serve_args, notes


def _configure_broker(o: _Setup, argv: list[str], state: Path) -> None:
    """`lockerctl broker config` into the state directory, run as the service account (it owns
    everything)."""
    config = [*argv, "broker", "config", str(state / "broker")]
    config += ["--db", o.db_url or f"sqlite:///{state / 'lockers.db'}", "--site", o.site]
    if o.listen:
        config += ["--listen", o.listen]
    if o.tls:
        config += ["--tls", *[f"--name={n}" for n in dict.fromkeys(o.names)]]
    if o.address:
        config += ["--address", o.address]
    if o.real:
        config = ["runuser", "-u", o.user, "--", *config]
    click.echo(_run(config, "lockerctl broker config", cwd=str(state)).rstrip())


def _write_files(o: _Setup, inst, state: Path, owner) -> list[Path]:
    """The environment file, the account's profile and the systemd units; then everything in
    the state directory given to the account."""
    written = [
        # root's, readable by the service account: it may hold a PostgreSQL password
        _write(o.at(inst.env_file), units.env_text(inst), 0o640, (0, owner[1]) if owner else None),
        _write(state / ".profile", units.profile_text(inst), 0o600, owner),
    ]
    for name, text in units.units(inst).items():
        written.append(_write(o.at(f"/etc/systemd/system/{name}"), text, 0o644, None))
    if owner:
        for root, dirs, files in os.walk(state):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), *owner)
    return written


def _start(o: _Setup, inst) -> None:
    """Enables and starts the units (in place of the distribution's mosquitto.service)."""
    if not _systemd_running():
        click.echo("systemd is not running on this machine: the units are written, not started")
        return
    _run([inst.systemctl, "daemon-reload"], "systemctl daemon-reload")
    if o.no_start:
        click.echo(f"not started: systemctl enable --now {' '.join(units.ENABLE)}")
        return
    distro = subprocess.run(
        [inst.systemctl, "is-active", "--quiet", "mosquitto.service"], capture_output=True
    )
    if distro.returncode == 0:
        _run([inst.systemctl, "disable", "--now", "mosquitto.service"], "systemctl disable")
        click.echo(
            "stopped and disabled the distribution's mosquitto.service: "
            f"{units.BROKER}.service replaces it"
        )
    _run([inst.systemctl, "enable", "--now", *units.ENABLE], "systemctl enable")
    click.echo(f"started: {', '.join(units.ENABLE)}")
    click.echo(
        f"next: sudo -iu {o.user}, then lockerctl roster import ..., lockerctl locker add ... "
        "(docs/install.md)"
    )
