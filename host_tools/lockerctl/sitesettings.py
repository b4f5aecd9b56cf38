"""What a site remembers between commands (the store's `settings` table).

`lockerctl broker config --listen ... [--tls]` records where the broker is; every later command
that talks to the broker, and the `device.json` that `locker add` prints, use it. The order of
precedence for the host's own connection is: `--broker`, then `$LOCKER_BROKER`, then the
remembered address, then 127.0.0.1:1883.

Keys (values are text):

- `broker.dir`: the directory `broker config` wrote (absolute);
- `broker.listen`: the listener the lockers reach, `HOST:PORT` as given to `--listen`;
- `broker.tls`: `1` when that listener is TLS, else `0`;
- `broker.host`: where the host tools connect, `HOST:PORT` (plain MQTT: the listener itself, or
  with TLS the plain loopback listener of `--local-port`);
- `broker.device`: the address written into `device.json`, `HOST:PORT` (`--address`, or the
  listener's host; for a wildcard listener the first `--name`, or this machine's address);
- `broker.names`: the `--name`s of the TLS certificate, comma-separated (kept by a later run).
"""

from __future__ import annotations

import socket

from .device import DEFAULT_CONTROL_PORT

DEFAULT_BROKER = ("127.0.0.1", 1883)
WILDCARDS = ("", "0.0.0.0", "::", "[::]", "*")


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def primary_address() -> str:
    """This machine's address on its default route (no packet is sent), or its host name."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed, only picks the interface
            address = s.getsockname()[0]
        if not address.startswith("127."):
            return address
    except OSError:
        pass
    return socket.getfqdn() or socket.gethostname()


def broker_settings(
    directory: str,
    listen: tuple[str, int],
    tls: bool,
    local_port: int,
    address: str | None,
    names: list[str],
) -> dict[str, str | None]:
    """The settings `broker config` records for these listeners."""
    host, port = listen
    if tls:
        host_side = f"127.0.0.1:{local_port}" if local_port else None
    else:
        host_side = f"{'127.0.0.1' if host in WILDCARDS else host}:{port}"
    if address:
        device_host = address
    elif host not in WILDCARDS:
        device_host = host
    elif names:
        device_host = names[0]
    else:
        device_host = primary_address()
    return {
        "broker.dir": directory,
        "broker.listen": f"{host}:{port}",
        "broker.tls": "1" if tls else "0",
        "broker.host": host_side,
        "broker.device": f"{device_host}:{port}",
        "broker.names": ",".join(names) if tls and names else None,
    }


def host_broker(store, site: str) -> tuple[str, int] | None:
    """Where the host tools connect, as remembered, or None."""
    value = store.settings(site).get("broker.host")
    return hostport(value) if value else None


def device_broker(store, site: str) -> tuple[str, int, bool] | None:
    """(host, port, tls) for a locker's device.json, as remembered, or None."""
    s = store.settings(site)
    if not s.get("broker.device"):
        return None
    host, port = hostport(s["broker.device"])
    return host, port, s.get("broker.tls") == "1"


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def free_control_port(taken: set[int], first: int = DEFAULT_CONTROL_PORT) -> int:
    """The first port from `first` that no registered locker uses and nothing listens on now
    (a running demo's lockers, another service)."""
    port = first
    while port < 65535:
        if port not in taken and not port_in_use(port):
            return port
        port += 1
    raise ValueError(f"no free control port above {first}")


def default_data_dir(db_url: str, locker_id: str) -> str:
    """A simulated locker's data directory: next to a SQLite database (so two sites, or a demo
    and a school, never share one), else var/ID under the current directory."""
    import os

    from .store.engine import StoreError, sqlite_database

    try:
        database = sqlite_database(db_url)
    except StoreError:
        database = None
    if database and not database.startswith("file:"):
        base = os.path.dirname(os.path.abspath(database))
        return os.path.join(base, "lockers", locker_id)
    return os.path.abspath(os.path.join("var", locker_id))
