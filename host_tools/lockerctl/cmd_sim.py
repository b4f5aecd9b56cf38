"""`lockerctl sim ...`: talk to a simulated locker's control port (docs/protocol.md) from a shell.

    lockerctl sim tap L1 04A1B2C3
    lockerctl sim door L1 3 open
    lockerctl sim state L1

The locker's control port is `--port`, or the one in `--device FILE` (its device.json), or
`<ID>.json` in `$LOCKER_SIM_DIR` when that is set, or the one registered for the locker in the
database (`--db`/`$LOCKER_DB`: `locker add` records it). Nothing else is guessed: a locker that is
not found is a one-line error.
"""

import json
import os
import socket
from pathlib import Path

import click

from .clibase import Site, UserError, cli, open_store, site_options


def _registered_port(locker: str, site: Site) -> int:
    from .store.engine import StoreError, sqlite_database

    try:
        database = sqlite_database(site.db)
    except StoreError as e:
        raise UserError(str(e)) from None
    if database:
        if not Path(database).exists():
            raise UserError(
                f"no database at {database} to find locker {locker} in "
                "(set --db or $LOCKER_DB, or use --device FILE or --port N)"
            )
    st = open_store(site)
    try:
        row = st.locker(site.site, locker)
    finally:
        st.close()
    if row is None:
        raise UserError(
            f"no locker {locker} at site {site.site} in {site.db} (use --device FILE or --port N)"
        )
    if not row.control_port or (row.board or "sim") != "sim":
        raise UserError(f"locker {locker} is not a simulated board (no control port)")
    return int(row.control_port)


def _port(locker: str, device: str | None, port: int | None, site: Site) -> int:
    if port:
        return port
    if device:
        path = Path(device)
    elif os.environ.get("LOCKER_SIM_DIR"):
        path = Path(os.environ["LOCKER_SIM_DIR"]) / f"{locker}.json"
    else:
        return _registered_port(locker, site)
    try:
        return int(json.loads(path.read_text())["sim"]["control_port"])
    except FileNotFoundError:
        raise UserError(
            f"no device file for {locker} at {path} (use --device or --port)"
        ) from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: no sim.control_port in it") from None


def request(port: int, line: str, timeout: float = 10.0) -> dict:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(line.encode() + b"\n")
            reply = s.makefile("rb").readline()
    except OSError as e:
        raise UserError(f"cannot reach the simulated locker on port {port}: {e}") from None
    if not reply:
        raise UserError(f"the simulated locker on port {port} closed the connection")
    return json.loads(reply)


def _locker_options(fn):
    fn = site_options(fn)
    fn = click.option(
        "--port", type=int, default=None, help="Control port (default: from the device file)."
    )(fn)
    fn = click.option("--device", default=None, help="The locker's device.json.")(fn)
    return fn


@cli.group()
def sim():
    """Drive a simulated locker's control port (tap a card, open a door, read its state)."""


def _show(reply: dict) -> None:
    click.echo(json.dumps(reply))
    if "error" in reply:
        raise SystemExit(1)


@sim.command()
@click.argument("locker")
@click.argument("uid")
@_locker_options
def tap(locker, uid, device, port, site):
    """Present card UID (8 or 14 hex digits) to LOCKER's reader."""
    _show(request(_port(locker, device, port, site), f"tap {uid}"))


@sim.command()
@click.argument("locker")
@click.argument("bay", type=int)
@click.argument("action", type=click.Choice(["open", "close", "fail"]))
@_locker_options
def door(locker, bay, action, device, port, site):
    """Open or close BAY's door (its reed switch), or make its switch fail."""
    _show(request(_port(locker, device, port, site), f"door {bay} {action}"))


@sim.command()
@click.argument("locker")
@click.argument("unix_seconds", type=int)
@_locker_options
def clock(locker, unix_seconds, device, port, site):
    """Set LOCKER's real-time clock (UTC seconds), as NTP would."""
    _show(request(_port(locker, device, port, site), f"clock {unix_seconds}"))


@sim.command()
@click.argument("locker")
@_locker_options
def state(locker, device, port, site):
    """Print LOCKER's state: clock, link, pending events, bays."""
    _show(request(_port(locker, device, port, site), "state"))
