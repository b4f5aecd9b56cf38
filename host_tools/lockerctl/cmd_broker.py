"""`lockerctl broker config`: a locked-down mosquitto for the site."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from .clibase import Site, UserError, actor, cli, parse_hostport, site_options, store_session


def _site_cards(st, site: str, locker_ids: list[str]) -> int:
    if not locker_ids:
        return 0
    cards, _, _ = st.config_inputs(site, locker_ids[0])
    return len(cards)


@cli.group("broker")
def broker_group():
    """The MQTT broker the lockers and the host meet on."""


@broker_group.command("config")
@site_options
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Where the broker listens [127.0.0.1:1883; with --tls 0.0.0.0:8883].",
)
@click.option(
    "--tls",
    is_flag=True,
    help="TLS on the listener: a site CA and a server "
    "certificate are made in DIRECTORY (kept on later runs).",
)
@click.option(
    "--local-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="With --tls: a plain listener on 127.0.0.1 for the host tools (0: none) [1883, or "
    "the one recorded by an earlier run].",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="DNS|IP",
    help="With --tls: a name the lockers use for the broker (repeatable) [this "
    "host's names and loopback].",
)
@click.option(
    "--address",
    default=None,
    metavar="DNS|IP",
    help="The name or address lockers use to reach the broker, written into each device.json "
    "[the --listen host; for 0.0.0.0 the first --name, or this machine's address].",
)
@click.option("--renew", is_flag=True, help="With --tls: issue a new server certificate.")
@click.option(
    "--new-ca",
    is_flag=True,
    help="With --tls: make a new site CA (every locker then needs the new ca.crt).",
)
@click.option(
    "--message-limit",
    type=click.IntRange(1024, 256 * 1024 * 1024),
    default=None,
    metavar="BYTES",
    help="Largest payload the broker accepts [256 KiB, or twice the "
    "site's config bundle if bigger].",
)
@click.option(
    "--new-host-password",
    is_flag=True,
    help="Replace the host account's password (restart `lockerctl serve` after).",
)
def broker_config(
    site: Site,
    directory: Path,
    listen,
    tls,
    local_port,
    names,
    address,
    renew,
    new_ca,
    message_limit,
    new_host_password,
):
    """Write a mosquitto configuration for the site into DIRECTORY: mosquitto.conf, a password
    file (every locker and the host's own account), an ACL (each locker publishes only under its
    own topic root and reads only its own ack, config and cmd) and, with --tls, the site CA and
    server certificate. No anonymous access. The host account is recorded in the store; later
    commands use it. Run the broker with `mosquitto -c DIRECTORY/mosquitto.conf`; after adding
    or rekeying a locker, run this again and reload the broker (kill -HUP its pid).

    The listener (--listen, --tls, --address) is remembered in the store: later commands connect
    to it and `locker add` writes it into device.json; a later run without --listen keeps it."""
    from . import broker

    if address is not None:
        try:
            broker.check_name("--address", address)
        except broker.BrokerError as e:
            raise UserError(str(e)) from None
    want = _remembered(site, _Listening(listen, tls, local_port, tuple(names), address))
    if not want.tls and (renew or new_ca or want.names):
        raise UserError("--renew, --new-ca and --name only apply with --tls")
    want = _decide(want)
    with store_session(site) as st:
        try:
            made = _make(
                st, site.site, directory.resolve(), want, new_host_password, message_limit
            )
            if want.tls:
                made.files, made.notes = broker.tls_material(
                    made.directory, site.site, want.cert_names, new_ca=new_ca, renew=renew
                )
            plan = made.plan(site.site, want.listeners)
        except broker.BrokerError as e:
            raise UserError(str(e)) from None
        _warn(made, want)
        chosen, written = _write(st, site.site, made, want, plan)
    _tell(made, want, chosen, written)


@dataclass
class _Listening:
    """The broker's listeners: as the options (or an earlier run) ask, then as decided
    (`listeners`, the main one first; the names its certificate carries)."""

    listen: str | None
    tls: bool
    local_port: int | None
    names: tuple[str, ...]
    address: str | None  # what lockers use to reach the broker
    listeners: list = field(default_factory=list)  # broker.Listener
    cert_names: list[str] = field(default_factory=list)

    @property
    def main(self):
        return self.listeners[0]


@dataclass
class _Made:
    """What the broker's directory will hold, before anything is written."""

    directory: Path
    lockers: list[tuple[str, str]]  # (locker id, its broker password)
    creds: tuple[str, str] | None  # the host account recorded before this run
    host_user: str
    host_password: str
    limit: int  # the largest payload the broker accepts
    owner: Any  # broker.Owner
    files: dict[str, bytes] | None = None  # TLS material
    notes: list[str] = field(default_factory=list)

    def plan(self, site: str, listeners: list):
        from . import broker

        return broker.build_plan(
            self.directory,
            site,
            self.lockers,
            self.host_user,
            self.host_password,
            listeners,
            self.limit,
            self.owner,
            self.files,
        )


def _remembered(site: Site, want: _Listening) -> _Listening:
    """Without --listen, the listener an earlier run recorded is kept (with its TLS, the address
    the lockers were given, the host tools' plain port and the certificate's names)."""
    if want.listen:
        return want
    with store_session(site) as st:
        remembered = st.settings(site.site)
    was_tls = remembered.get("broker.tls") == "1"
    if not remembered.get("broker.listen") or (want.tls and not was_tls):
        return want
    tls = was_tls
    address, local_port, names = want.address, want.local_port, want.names
    if address is None:  # the address lockers were given stays theirs
        address = remembered.get("broker.device", "").rpartition(":")[0] or None
    if local_port is None and tls:
        host_side = remembered.get("broker.host") or ""
        local_port = int(host_side.rpartition(":")[2]) if host_side else 0
    if not names and tls and remembered.get("broker.names"):
        names = tuple(remembered["broker.names"].split(","))  # the certificate's
    listen = remembered["broker.listen"]
    return replace(
        want, listen=listen, tls=tls, local_port=local_port, names=names, address=address
    )


def _decide(want: _Listening) -> _Listening:
    """The listeners (the main one, then with TLS a plain one on loopback for the host tools),
    the address lockers use and the names the server certificate carries."""
    from . import broker
    from .sitesettings import WILDCARDS, primary_address

    local_port = 1883 if want.local_port is None else want.local_port
    if want.listen:
        try:
            host, port = parse_hostport(want.listen, 8883 if want.tls else 1883)
        except UserError as e:
            raise UserError(f"--listen: {e.format_message()}") from None
        if not 0 < port < 65536:
            raise UserError(f"--listen: bad port {port}")
        main = broker.Listener(host, port, want.tls)
    else:
        main = broker.default_listen(want.tls)
    listeners = [main]
    if want.tls and local_port and local_port != main.port:
        listeners.append(broker.Listener("127.0.0.1", local_port, False))
    address = want.address
    if address is None and main.host in WILDCARDS:
        address = want.names[0] if want.names else primary_address()
    cert_names = list(want.names) or broker.default_names(listeners)
    if address and address not in cert_names:
        cert_names.append(address)  # the name lockers check the certificate against
    return replace(
        want, local_port=local_port, address=address, listeners=listeners, cert_names=cert_names
    )


def _make(
    st, site: str, directory: Path, want: _Listening, new_host_password: bool, limit: int | None
) -> _Made:
    """The accounts, the payload limit and the files' owner (BrokerError, UserError)."""
    from . import broker

    rows = st.lockers(site)
    creds = st.broker_credentials(site)
    host_user, host_password = broker.new_host_account(site)
    if creds and not new_host_password:
        host_user, host_password = creds
    elif creds:
        host_user = creds[0]  # the same account, a new password
    cards = _site_cards(st, site, [r.id for r in rows])
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    return _Made(
        directory,
        [(r.id, r.broker_password) for r in rows],
        creds,
        host_user,
        host_password,
        broker.choose_message_limit(cards, limit),
        broker.file_owner(directory),
    )


def _warn(made: _Made, want: _Listening) -> None:
    from . import broker

    if made.owner.warning:
        click.echo(f"lockerctl: warning: {made.owner.warning}", err=True)
    for listener in want.listeners:
        if not listener.tls and not broker.is_loopback(listener.host):
            click.echo(
                f"lockerctl: warning: {listener.host}:{listener.port} is plain MQTT: "
                "passwords cross the network in clear (use --tls)",
                err=True,
            )
    if not made.lockers:
        click.echo(
            "lockerctl: warning: the site has no lockers yet (lockerctl locker add, then "
            "run this again)",
            err=True,
        )


def _write(st, site: str, made: _Made, want: _Listening, plan) -> tuple[dict, list[Path]]:
    """Writes the files and records the host account, the listener settings and the action:
    (the settings recorded, the files written)."""
    from . import broker
    from .sitesettings import broker_settings

    if made.creds != (made.host_user, made.host_password):
        st.set_broker_credentials(site, made.host_user, made.host_password)
    main = want.main
    chosen = broker_settings(
        str(made.directory),
        (main.host, main.port),
        main.tls,
        (want.local_port or 0) if len(want.listeners) > 1 else 0,  # the host tools' plain one
        want.address,
        list(want.names),
    )
    try:
        written = broker.write_files(plan, made.owner)
    except OSError as e:
        raise UserError(
            f"cannot write the broker configuration in {made.directory}: {e}"
        ) from None
    recorded = {k: v for k, v in st.settings(site).items() if k.startswith("broker.")}
    if recorded != {k: v for k, v in chosen.items() if v is not None}:
        st.set_settings(site, chosen, actor())  # once the files say the same
    st.record_action(
        site,
        actor(),
        "broker_config",
        {
            "dir": str(made.directory),
            "lockers": len(made.lockers),
            "tls": bool(want.tls),
            "listen": [f"{x.host}:{x.port}" for x in want.listeners],
            "message_limit": made.limit,
        },
    )
    return chosen, written


def _tell(made: _Made, want: _Listening, chosen: dict, written: list[Path]) -> None:
    for note in made.notes:
        click.echo(note)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(
        f"{len(made.lockers)} locker account(s) and the host account {made.host_user!r}; "
        f"payload limit {made.limit} bytes"
    )
    click.echo(
        f"remembered: lockers connect to {chosen['broker.device']}"
        f"{' (TLS)' if want.main.tls else ''}, the host tools to "
        f"{chosen['broker.host'] or 'no plain listener (use --local-port)'}"
    )
    click.echo(
        f"run: mosquitto -c {made.directory / 'mosquitto.conf'}   "
        "(running already: kill -HUP <its pid> to reload)"
    )
