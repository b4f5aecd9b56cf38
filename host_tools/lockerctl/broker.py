"""A locked-down mosquitto for one site: password file, ACL, configuration and TLS material.

What `lockerctl broker config DIR` writes (docs/security.md explains why each part is there):

- `passwd`: one line per account in mosquitto 2.0's own format,
  `user:$7$<iterations>$<salt>$<hash>` with PBKDF2-HMAC-SHA512 (64-byte hash, 12-byte salt,
  base64), exactly what `mosquitto_passwd` writes. Accounts: every locker of the site (user =
  locker id) and the host's own account.
- `acl`: a locker publishes only `event`, `status` and `state` under its own topic root and reads
  only its own `ack`, `config`, `cmd` and `firmware` (its firmware offer) and the site's
  firmware chunks (`firmware/<site>/#`, which it cannot publish); the host account reads every
  locker's `event`, `status` and `state` and writes `ack`, `config`, `cmd`, `firmware` and the
  chunks. Anything not granted is denied: mosquitto
  drops such a publish silently and never delivers such a message to a subscriber.
- `mosquitto.conf`: no anonymous access, a payload size limit, persistence in `DIR/data/`, the
  listener(s); with TLS a site CA (`ca.crt`, its key `ca.key` readable by root only) and a server
  certificate (`server.crt`, `server.key`).

Everything is built in memory first and then each file is replaced atomically, so a failure
leaves the previous configuration in place. The module is pure apart from `write_files` and
`file_owner`, which deal with the file system's owners and modes.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import pwd
import re
import secrets
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .brokertls import CA_DAYS as CA_DAYS
from .brokertls import RENEW_BEFORE_DAYS as RENEW_BEFORE_DAYS
from .brokertls import SERVER_DAYS as SERVER_DAYS
from .brokertls import BrokerError as BrokerError
from .brokertls import make_ca as make_ca
from .brokertls import make_server_cert as make_server_cert
from .brokertls import tls_material as tls_material

# mosquitto_passwd's defaults for `$7$` hashes (mosquitto 2.0, src/password_mosq.c).
PW_ITERATIONS = 101
PW_SALT_BYTES = 12
PW_HASH_BYTES = 64

DEFAULT_MESSAGE_LIMIT = 256 * 1024
CARD_RECORD_BYTES = 48  # docs/protocol.md, `config`
HEADER_ALLOWANCE = 64 * 1024  # timetable offsets and grants in the bundle's JSON header

BROKER_USER = "mosquitto"  # the account mosquitto switches to when started as root
HOST_USER_PREFIX = "lockerctl-"

LOCKER_TOPICS_OUT = ("event", "status", "state")  # a locker publishes these
LOCKER_TOPICS_IN = ("ack", "config", "cmd", "firmware")  # a locker reads these

# Names that end up in topics, the password file and the ACL: no MQTT wildcards, no separators.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise BrokerError(
            f"{what} {value!r} cannot be used on the broker: letters, digits, "
            "'.', '_' and '-' only (1-64)"
        )
    return value


# --- password file -------------------------------------------------------------------------


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = PW_ITERATIONS
) -> str:
    """mosquitto's `$7$` hash of `password`, as `mosquitto_passwd` writes it."""
    if salt is None:
        salt = secrets.token_bytes(PW_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, PW_HASH_BYTES)
    return "$7${}${}${}".format(
        iterations, base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    )


def check_password(password: str, hashed: str) -> bool:
    """True when `hashed` (a `$7$` hash) is the hash of `password`."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
    return secrets.compare_digest(got, want)


def password_file(accounts: list[tuple[str, str]]) -> str:
    """The password file's text for (user, password) pairs."""
    lines = []
    seen = set()
    for user, password in accounts:
        check_name("broker user", user)
        if user in seen:
            raise BrokerError(f"broker user {user!r} appears twice")
        if not password:
            raise BrokerError(f"broker user {user!r} has no password")
        seen.add(user)
        lines.append(f"{user}:{hash_password(password)}\n")
    return "".join(lines)


# --- ACL ---------------------------------------------------------------------------------


def topic_root(site: str, locker_id: str) -> str:
    return f"lockers/{site}/{locker_id}/"


def acl_text(site: str, locker_ids: list[str], host_user: str) -> str:
    """The ACL: the host account's rights, then each locker's (its own topic root only)."""
    check_name("site", site)
    check_name("broker user", host_user)
    out = [
        f"# classlocker site {site}: generated by `lockerctl broker config`; re-run it.\n",
        "# Anything not granted here is denied (a denied publish is dropped silently).\n\n",
        f"# the host service (lockerctl serve, open)\nuser {host_user}\n",
    ]
    for name in LOCKER_TOPICS_OUT:
        out.append(f"topic read lockers/{site}/+/{name}\n")
    for name in LOCKER_TOPICS_IN:
        out.append(f"topic write lockers/{site}/+/{name}\n")
    # firmware chunks (docs/protocol.md, `firmware`): the host writes them, every locker reads
    out.append(f"topic write firmware/{site}/#\n")
    for locker_id in locker_ids:
        check_name("locker id", locker_id)
        if locker_id == host_user:
            raise BrokerError(f"locker id {locker_id!r} is the host's broker account name")
        root = topic_root(site, locker_id)
        out.append(f"\nuser {locker_id}\n")
        for name in LOCKER_TOPICS_OUT:
            out.append(f"topic write {root}{name}\n")
        for name in LOCKER_TOPICS_IN:
            out.append(f"topic read {root}{name}\n")
        out.append(f"topic read firmware/{site}/#\n")
    return "".join(out)


# --- configuration -----------------------------------------------------------------------


@dataclass
class Listener:
    host: str
    port: int
    tls: bool = False


@dataclass
class Plan:
    """Everything `broker config` will write, decided before anything is written."""

    dir: Path
    site: str
    listeners: list[Listener]
    message_limit: int
    run_as: str | None  # mosquitto's `user` option, when it must be set (None: its default)
    files: dict[str, bytes] = field(default_factory=dict)
    secret_files: set[str] = field(default_factory=set)  # only the broker account may read
    root_only: set[str] = field(default_factory=set)  # not even the broker account (CA key)


def default_listen(tls: bool) -> Listener:
    """Plain MQTT only on loopback by default; with TLS the listener the lockers reach."""
    return Listener("0.0.0.0", 8883, True) if tls else Listener("127.0.0.1", 1883, False)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def conf_text(plan: Plan) -> str:
    d = plan.dir
    lines = [
        f"# classlocker site {plan.site}: generated by `lockerctl broker config`; do not edit, "
        "re-run it.\n",
        f"# Run: mosquitto -c {d / 'mosquitto.conf'}   Reload after a change: kill -HUP <pid>\n\n",
        "per_listener_settings false\n",
        "allow_anonymous false\n",
        f"password_file {d / 'passwd'}\n",
        f"acl_file {d / 'acl'}\n",
        "# a config bundle is the biggest payload; anything larger is dropped\n",
        f"message_size_limit {plan.message_limit}\n",
        "max_inflight_messages 0\n",
        "max_queued_messages 10000\n",
        "# small messages (a tap's event, an ack) go out at once, not held back by Nagle's\n"
        "# algorithm until the client's delayed ACK of the previous one (up to 40 ms)\n",
        "set_tcp_nodelay true\n",
        "persistence true\n",
        f"persistence_location {d / 'data'}/\n",
        "autosave_interval 60\n",
    ]
    if plan.run_as:
        lines.append(f"user {plan.run_as}\n")
    for listener in plan.listeners:
        lines.append(f"\nlistener {listener.port} {listener.host}\n")
        if listener.tls:
            lines += [
                f"cafile {d / 'ca.crt'}\n",
                f"certfile {d / 'server.crt'}\n",
                f"keyfile {d / 'server.key'}\n",
                "tls_version tlsv1.2\n",
                "require_certificate false\n",
            ]
    return "".join(lines)


def estimate_bundle_bytes(cards: int) -> int:
    """A generous estimate of the biggest config bundle for `cards` card records."""
    return 20 + HEADER_ALLOWANCE + cards * CARD_RECORD_BYTES + 32


def choose_message_limit(cards: int, requested: int | None) -> int:
    need = estimate_bundle_bytes(cards)
    if requested is None:
        return max(DEFAULT_MESSAGE_LIMIT, 2 * need)
    if requested < need:
        raise BrokerError(
            f"--message-limit {requested} is smaller than the site's config bundle "
            f"(about {need} bytes for {cards} cards)"
        )
    return requested


# --- TLS material ------------------------------------------------------------------------


def default_names(listeners: list[Listener]) -> list[str]:
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    fqdn = socket.getfqdn()
    if fqdn:
        names.append(fqdn)
    for listener in listeners:
        if listener.host not in ("", "0.0.0.0", "::"):
            names.append(listener.host)
    out = []
    for name in names:
        if name and name not in out:
            out.append(name)
    return out


@dataclass
class Owner:
    """Who the broker's files belong to. `uid`/`gid` None: the current user, owner-only modes."""

    uid: int | None
    gid: int | None
    run_as: str | None  # what to put in mosquitto.conf's `user` (None: leave mosquitto's default)
    warning: str | None = None


def _can_enter(path: Path, uid: int, gids: set[int]) -> bool:
    st = path.stat()
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def file_owner(dir: Path) -> Owner:
    """How to own DIR's files so that mosquitto can read them however it is started.

    Started as root, mosquitto switches to the `mosquitto` account before it reads the password
    file, the ACL and the keys: those files then belong to that account (mode 0600). Where that
    account does not exist, or cannot reach DIR (a parent directory closed to it), mosquitto is
    told to stay root (`user root`) and a warning says so. Not root: everything is owner-only.
    """
    if os.geteuid() != 0:
        return Owner(None, None, None)
    try:
        account = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return Owner(
            None,
            None,
            "root",
            warning=f"there is no {BROKER_USER!r} account: the "
            "broker will run as root (create the account, then re-run)",
        )
    gids = set(os.getgrouplist(account.pw_name, account.pw_gid))
    parent = dir.resolve().parent
    for ancestor in [parent, *parent.parents]:
        if not _can_enter(ancestor, account.pw_uid, gids):
            return Owner(
                None,
                None,
                "root",
                warning=f"{ancestor} is closed to the "
                f"{BROKER_USER!r} account: the broker will run as root (choose a DIR "
                "it can reach, e.g. /etc/mosquitto/classlocker, then re-run)",
            )
    return Owner(account.pw_uid, account.pw_gid, None)


def _write_atomic(path: Path, data: bytes, mode: int, uid: int | None, gid: int | None) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            if uid is not None and gid is not None:
                os.fchown(f.fileno(), uid, gid)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def prepare_dir(dir: Path, owner: Owner) -> None:
    """DIR (root-owned, group of the broker account, 0750; or owner-only) and DIR/data."""
    dir.mkdir(parents=True, exist_ok=True)
    data = dir / "data"
    data.mkdir(exist_ok=True)
    if owner.uid is not None and owner.gid is not None:
        os.chown(dir, 0, owner.gid)
        os.chmod(dir, 0o750)
        os.chown(data, owner.uid, owner.gid)
        os.chmod(data, 0o700)
    else:
        os.chmod(dir, 0o700)
        os.chmod(data, 0o700)


def write_files(plan: Plan, owner: Owner) -> list[Path]:
    """Writes the plan's files (each replaced atomically); returns their paths."""
    prepare_dir(plan.dir, owner)
    written = []
    for name, data in plan.files.items():
        path = plan.dir / name
        if owner.uid is None:
            _write_atomic(path, data, 0o600, None, None)
        elif name in plan.root_only:
            _write_atomic(path, data, 0o600, 0, 0)
        elif name in plan.secret_files:
            _write_atomic(path, data, 0o600, owner.uid, owner.gid)
        else:  # mosquitto.conf and ca.crt: root's, readable by the broker (SIGHUP re-reads)
            _write_atomic(path, data, 0o640, 0, owner.gid)
        written.append(path)
    return written


def build_plan(
    dir: Path,
    site: str,
    lockers: list[tuple[str, str]],
    host_user: str,
    host_password: str,
    listeners: list[Listener],
    message_limit: int,
    owner: Owner,
    tls_files: dict[str, bytes] | None = None,
) -> Plan:
    """The whole configuration in memory. `lockers`: (locker id, broker password) pairs."""
    check_name("site", site)
    dir = dir.resolve()
    plan = Plan(
        dir=dir, site=site, listeners=listeners, message_limit=message_limit, run_as=owner.run_as
    )
    ids = [locker_id for locker_id, _ in lockers]
    accounts = [(host_user, host_password), *lockers]
    plan.files["passwd"] = password_file(accounts).encode()
    plan.files["acl"] = acl_text(site, ids, host_user).encode()
    plan.secret_files |= {"passwd", "acl"}
    if tls_files:
        plan.files.update(tls_files)
        plan.secret_files.add("server.key")
        plan.root_only.add("ca.key")
    ports = {}
    for listener in listeners:
        if listener.port in ports:
            raise BrokerError(f"two listeners on port {listener.port}")
        ports[listener.port] = listener
    plan.files["mosquitto.conf"] = conf_text(plan).encode()
    return plan


def new_host_account(site: str) -> tuple[str, str]:
    return HOST_USER_PREFIX + check_name("site", site), secrets.token_urlsafe(24)
