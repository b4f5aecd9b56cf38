"""The systemd units `lockerctl setup` writes: the broker, the service, the nightly backup and a
watch that reloads the broker when `lockerctl broker config` rewrites its accounts.

Everything runs as one unprivileged account (default `classlocker`) whose home is the state
directory (default /var/lib/classlocker, 0700): the store, the broker's configuration and data,
the dashboard's certificate. The units can write nowhere else (ProtectSystem=strict).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

BROKER = "classlocker-broker"
SERVE = "classlocker-serve"
BACKUP = "classlocker-backup"
RELOAD = "classlocker-broker-reload"

# What every service gets: no way back to root, a read-only system, no home directories.
HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
UMask=0077
"""


@dataclass
class Install:
    """Where things are and how the services run."""

    user: str = "classlocker"
    state_dir: str = "/var/lib/classlocker"
    backup_dir: str = "/var/backups/classlocker"
    env_file: str = "/etc/classlocker/classlocker.env"
    lockerctl: list[str] = field(default_factory=lambda: ["/usr/local/bin/lockerctl"])
    mosquitto: str = "/usr/sbin/mosquitto"
    systemctl: str = "/usr/bin/systemctl"
    site: str = "school"
    serve_args: list[str] = field(default_factory=list)  # --http ... --http-cert ...
    keep: int = 14
    backup_at: str = "02:30"
    db_url: str | None = None  # default: SQLite in the state directory

    @property
    def db(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir}/lockers.db"

    @property
    def broker_dir(self) -> str:
        return f"{self.state_dir}/broker"

    def cmd(self, *args: str) -> str:
        return shlex.join([*self.lockerctl, *args])


def env_text(inst: Install) -> str:
    return (
        "# classlocker: what every lockerctl command of the services uses "
        "(written by `lockerctl setup`)\n"
        f"LOCKER_DB={inst.db}\n"
        f"LOCKER_SITE={inst.site}\n"
    )


def profile_text(inst: Install) -> str:
    """The service account's ~/.profile: `sudo -iu classlocker` gives a shell where `lockerctl`
    acts on the installed store."""
    return (
        "# written by `lockerctl setup`: `sudo -iu classlocker` runs lockerctl on the school's "
        "store\n"
        f"export LOCKER_DB={shlex.quote(inst.db)}\n"
        f"export LOCKER_SITE={shlex.quote(inst.site)}\n"
        'export PATH="/usr/local/bin:/usr/bin:/bin:$PATH"\n'
        "umask 077\n"
    )


def _service(description: str, after: str, body: str, wanted_by: str | None) -> str:
    out = [
        "# written by `lockerctl setup`; re-run it rather than editing this file\n",
        "[Unit]\n",
        f"Description={description}\n",
        after,
        "\n[Service]\n",
        body,
    ]
    if wanted_by:
        out.append(f"\n[Install]\nWantedBy={wanted_by}\n")
    return "".join(out)


def units(inst: Install) -> dict[str, str]:
    """{file name: text} of every unit."""
    account = f"User={inst.user}\nGroup={inst.user}\n"
    network = "After=network-online.target\nWants=network-online.target\n"
    broker = _service(
        f"classlocker MQTT broker (mosquitto) for site {inst.site}",
        network,
        "Type=simple\n"
        + account
        + f"ExecStart={inst.mosquitto} -c {inst.broker_dir}/mosquitto.conf\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "Restart=on-failure\n"
        "RestartSec=5\n" + HARDENING + "MemoryDenyWriteExecute=yes\n"
        f"ReadWritePaths={inst.broker_dir}/data\n",
        "multi-user.target",
    )
    serve = _service(
        f"classlocker service for site {inst.site}: ingest, lockers' configuration, dashboard",
        f"After=network-online.target {BROKER}.service\n"
        f"Wants=network-online.target {BROKER}.service\n",
        "Type=simple\n" + account + f"EnvironmentFile={inst.env_file}\n"
        f"WorkingDirectory={inst.state_dir}\n"
        f"ExecStart={inst.cmd('serve', *inst.serve_args)}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "TimeoutStopSec=30\n" + HARDENING + f"ReadWritePaths={inst.state_dir}\n",
        "multi-user.target",
    )
    backup = _service(
        f"classlocker backup of the audit store (site {inst.site}), newest {inst.keep} kept",
        "",
        "Type=oneshot\n" + account + f"EnvironmentFile={inst.env_file}\n"
        f"WorkingDirectory={inst.state_dir}\n"
        f"ExecStart={inst.cmd('backup', '--dir', inst.backup_dir, '--keep', str(inst.keep))}\n"
        + HARDENING
        + f"ReadWritePaths={inst.state_dir} {inst.backup_dir}\n",
        None,
    )
    timer = (
        "# written by `lockerctl setup`\n"
        "[Unit]\n"
        f"Description=classlocker nightly backup (site {inst.site})\n\n"
        "[Timer]\n"
        f"OnCalendar=*-*-* {inst.backup_at}:00\n"
        "Persistent=true\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    reload_path = (
        "# written by `lockerctl setup`\n"
        "[Unit]\n"
        "Description=Reload the classlocker broker when `lockerctl broker config` rewrites "
        "its accounts\n\n"
        "[Path]\n"
        f"PathChanged={inst.broker_dir}/passwd\n"
        f"PathChanged={inst.broker_dir}/acl\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    reload_service = _service(
        "Reload the classlocker broker (new or rekeyed lockers)",
        "",
        f"Type=oneshot\nExecStart={inst.systemctl} try-reload-or-restart {BROKER}.service\n",
        None,
    )
    return {
        f"{BROKER}.service": broker,
        f"{SERVE}.service": serve,
        f"{BACKUP}.service": backup,
        f"{BACKUP}.timer": timer,
        f"{RELOAD}.path": reload_path,
        f"{RELOAD}.service": reload_service,
    }


ENABLE = [f"{BROKER}.service", f"{SERVE}.service", f"{BACKUP}.timer", f"{RELOAD}.path"]
