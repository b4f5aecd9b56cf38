"""`lockerctl locker add/list/rekey`: the site's locker banks and the device.json each one is
flashed with (docs/cli.md)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import click

from .bounds import MAX_BAYS
from .clibase import (
    Site,
    UserError,
    actor,
    cli,
    local_time,
    output_file,
    print_table,
    site_options,
    store_session,
)
from .device import device_json
from .store import PERSON_ID_RE


@cli.group("locker")
def locker():
    """The site's locker banks."""


@locker.command("add")
@click.argument("locker_id", metavar="ID")
@click.option(
    "--bays",
    type=click.IntRange(1, MAX_BAYS),
    default=8,
    show_default=True,
    help="Number of bays.",
)
@click.option(
    "--board",
    type=click.Choice(["sim", "esp32"]),
    default="sim",
    show_default=True,
    help="Board: the simulated one (unix port) or an ESP32.",
)
@click.option(
    "--broker",
    default=None,
    help="Broker HOST:PORT the locker connects to [$LOCKER_BROKER, or the address `broker "
    "config` recorded (with its TLS), or 127.0.0.1:1883].",
)
@click.option(
    "--control-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="The simulated board's control port [the first from 7101 that no locker of the site "
    "uses and nothing listens on].",
)
@click.option(
    "--data-dir",
    default=None,
    help="The locker's data directory [sim: lockers/ID next to a SQLite database; esp32: var/ID].",
)
@click.option("--wifi-ssid", default=None, help="ESP32: the school network the locker joins.")
@click.option("--wifi-password", default=None, help="ESP32: that network's password.")
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE",
    help="Write device.json to FILE (owner-only) instead of standard output.",
)
@site_options
def locker_add(
    site, locker_id, bays, board, broker, control_port, data_dir, wifi_ssid, wifi_password, output
):
    """Register locker ID and print its device.json (secret and broker credentials included)."""
    if not PERSON_ID_RE.match(locker_id):
        raise UserError(f"locker id {locker_id!r}: use 1-28 of A-Z a-z 0-9 . _ -")
    if (wifi_ssid is None) != (wifi_password is None):
        raise UserError("--wifi-ssid and --wifi-password go together")
    from .clibase import device_address
    from .keys import new_secret
    from .sitesettings import default_data_dir, free_control_port

    with store_session(site) as st:
        address = device_address(st, site.site, broker)
        if control_port is None:
            taken = {r.control_port for r in st.lockers(site.site) if r.control_port}
            control_port = free_control_port(taken)
        if data_dir is None:
            data_dir = (
                default_data_dir(site.db, locker_id) if board == "sim" else f"var/{locker_id}"
            )
        st.add_locker(
            site.site,
            locker_id,
            bays,
            new_secret(),
            secrets.token_urlsafe(24),
            board=board,
            control_port=control_port,
            data_dir=data_dir,
            actor=actor(),
        )
        wifi = None if wifi_ssid is None else {"ssid": wifi_ssid, "password": wifi_password}
        device = device_json(st.locker(site.site, locker_id), site.site, address, wifi)
    with output_file(output, private=True) as out:
        out.write(json.dumps(device, indent=2) + "\n")
    _broker_hint(site)


def _broker_hint(site) -> None:
    """After a locker is added: the broker needs its account (when `broker config` ran)."""
    with store_session(site) as st:
        directory = st.settings(site.site).get("broker.dir")
    if directory:
        click.echo(
            f"next: lockerctl broker config {directory}, then reload the broker "
            "(systemctl reload classlocker-broker, or kill -HUP its pid)",
            err=True,
        )


@locker.command("list")
@site_options
def locker_list(site):
    """The site's lockers: bays, board, online, last seen, configuration, pending events, and
    each one's health: firmware version (and an offered one with progress), uptime, reset cause,
    heap low-water mark, journal fill, Wi-Fi signal, clock offset, then its warnings
    (docs/fleet.md)."""
    from . import fleet
    from .display import read_state
    from .store import fleet as store_fleet

    with store_session(site) as st:
        rows = st.lockers(site.site)
        tz = st.timezone(site.site)
        clocks = st.clock_offsets(site.site)
        boots = store_fleet.recent_boots(
            st, site.site, int(time.time()) - fleet.RESET_LOOP_WINDOW_S
        )
    table = [
        (
            "locker", "bays", "board", "online", "last_seen", "config", "pending", "version",
            "uptime", "reset", "heap_low", "journal", "rssi", "clock", "warnings",
        )
    ]  # fmt: skip
    for r in rows:
        state = read_state(r.state)
        h = fleet.health(r.state, (clocks.get(r.id) or (None,))[0], boots.get(r.id, 0))
        online = {True: "yes", False: "no"}.get(r.online, "never")
        version = h.version or "-"
        if h.offered:
            version += f" ({h.offered} {h.progress or 0:.0%})"
        table.append(
            (
                r.id,
                str(r.bays),
                r.board,
                online,
                local_time(r.last_seen, tz) or "-",
                "unreadable" if state.unreadable else str(_dash(state.config)),
                "unreadable" if state.unreadable else str(_dash(state.pending)),
                version,
                "-" if h.uptime_s is None else _duration(h.uptime_s),
                h.reset_cause or "-",
                "-" if h.heap_low is None else f"{h.heap_low // 1024} KB",
                "-" if h.journal_fill is None else f"{h.journal_fill:.0%}",
                "-" if h.rssi is None else f"{h.rssi} dBm",
                "-" if h.clock_offset_s is None else f"{h.clock_offset_s:+.0f} s",
                "; ".join(h.warnings) or "-",
            )
        )
    print_table(table)


def _duration(seconds: int) -> str:
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def _dash(value):
    return "-" if value is None else value


# -- locker rekey ------------------------------------------------------------------------------


@locker.command("rekey")
@site_options
@click.argument("locker_id")
@click.option(
    "--broker",
    default=None,
    help="Broker HOST:PORT the locker connects to (written into device.json) [$LOCKER_BROKER, "
    "or the address `broker config` recorded, or 127.0.0.1:1883].",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Write `tls: true` into the new device.json (a broker "
    "configured with --tls; --broker then names its TLS port).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the new device.json to this file (owner-only) instead of stdout.",
)
def locker_rekey(site: Site, locker_id, broker, tls, output):
    """Give a locker a new secret and a new broker password and print its new device.json.

    The locker keeps its journal: events not yet acknowledged are sent after it comes back with
    the new device.json. Procedure: flash the new device.json (make flash DEVICE=...), run
    `lockerctl broker config DIR` again and reload mosquitto (kill -HUP its pid); `lockerctl
    serve` signs the next configuration with the new key by itself."""
    from .clibase import device_address
    from .keys import new_secret

    with store_session(site) as st:
        address = device_address(st, site.site, broker, tls)
        if st.locker(site.site, locker_id) is None:
            raise UserError(f"no locker {locker_id} at site {site.site}")
        secret = new_secret()
        password = secrets.token_urlsafe(24)
        version = st.set_locker_secret(site.site, locker_id, secret, password, actor=actor())
        device = device_json(st.locker(site.site, locker_id), site.site, address)
    text = json.dumps(device, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        from .broker import _write_atomic

        try:
            _write_atomic(output.resolve(), text.encode(), 0o600, None, None)
        except OSError as e:
            raise UserError(f"cannot write {output}: {e}") from None
    click.echo(
        f"locker {locker_id} rekeyed (configuration version {version}); flash the new "
        "device.json, re-run `lockerctl broker config` and reload the broker",
        err=True,
    )
