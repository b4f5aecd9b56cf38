"""`lockerctl broker config`: a locked-down mosquitto for the site."""

from __future__ import annotations

from pathlib import Path

import click

from .clibase import Site, UserError, actor, cli, open_store, parse_hostport, site_options


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
    from .sitesettings import WILDCARDS, broker_settings, primary_address

    if address is not None:
        try:
            broker.check_name("--address", address)
        except broker.BrokerError as e:
            raise UserError(str(e)) from None
    if not listen:  # keep the listener a previous run recorded
        st = open_store(site)
        try:
            remembered = st.settings(site.site)
        finally:
            st.close()
        was_tls = remembered.get("broker.tls") == "1"
        if remembered.get("broker.listen") and (was_tls or not tls):
            listen, tls = remembered["broker.listen"], was_tls
            if address is None:  # the address lockers were given stays theirs
                address = remembered.get("broker.device", "").rpartition(":")[0] or None
            if local_port is None and tls:
                host_side = remembered.get("broker.host") or ""
                local_port = int(host_side.rpartition(":")[2]) if host_side else 0
            if not names and tls and remembered.get("broker.names"):
                names = tuple(remembered["broker.names"].split(","))  # the certificate's
    if local_port is None:
        local_port = 1883
    if not tls and (renew or new_ca or names):
        raise UserError("--renew, --new-ca and --name only apply with --tls")
    if listen:
        try:
            host, port = parse_hostport(listen, 8883 if tls else 1883)
        except UserError as e:
            raise UserError(f"--listen: {e.format_message()}") from None
        if not 0 < port < 65536:
            raise UserError(f"--listen: bad port {port}")
        main = broker.Listener(host, port, tls)
    else:
        main = broker.default_listen(tls)
    listeners = [main]
    if tls and local_port and local_port != main.port:
        listeners.append(broker.Listener("127.0.0.1", local_port, False))
    if address is None and main.host in WILDCARDS:
        address = names[0] if names else primary_address()
    cert_names = list(names) or broker.default_names(listeners)
    if address and address not in cert_names:
        cert_names.append(address)  # the name lockers check the certificate against

    st = open_store(site)
    try:
        rows = st.lockers(site.site)
        lockers = [(r.id, r.broker_password) for r in rows]
        creds = st.broker_credentials(site.site)
        host_user, host_password = broker.new_host_account(site.site)
        if creds and not new_host_password:
            host_user, host_password = creds
        elif creds:
            host_user = creds[0]
        limit = broker.choose_message_limit(
            _site_cards(st, site.site, [r.id for r in rows]), message_limit
        )
        directory = directory.resolve()
        if directory.exists() and not directory.is_dir():
            raise UserError(f"{directory} is not a directory")
        owner = broker.file_owner(directory)
        tls_files: dict[str, bytes] | None = None
        notes: list[str] = []
        if tls:
            tls_files, notes = broker.tls_material(
                directory,
                site.site,
                cert_names,
                new_ca=new_ca,
                renew=renew,
            )
        plan = broker.build_plan(
            directory,
            site.site,
            lockers,
            host_user,
            host_password,
            listeners,
            limit,
            owner,
            tls_files,
        )
    except broker.BrokerError as e:
        raise UserError(str(e)) from None

    if owner.warning:
        click.echo(f"lockerctl: warning: {owner.warning}", err=True)
    for listener in listeners:
        if not listener.tls and not broker.is_loopback(listener.host):
            click.echo(
                f"lockerctl: warning: {listener.host}:{listener.port} is plain MQTT: "
                "passwords cross the network in clear (use --tls)",
                err=True,
            )
    if not lockers:
        click.echo(
            "lockerctl: warning: the site has no lockers yet (lockerctl locker add, then "
            "run this again)",
            err=True,
        )

    if creds != (host_user, host_password):
        st.set_broker_credentials(site.site, host_user, host_password)
    chosen = broker_settings(
        str(directory),
        (main.host, main.port),
        main.tls,
        local_port if len(listeners) > 1 else 0,
        address,
        list(names),
    )
    try:
        written = broker.write_files(plan, owner)
    except OSError as e:
        raise UserError(f"cannot write the broker configuration in {directory}: {e}") from None
    if {k: v for k, v in st.settings(site.site).items() if k.startswith("broker.")} != {
        k: v for k, v in chosen.items() if v is not None
    }:
        st.set_settings(site.site, chosen, actor())  # once the files say the same
    st.record_action(
        site.site,
        actor(),
        "broker_config",
        {
            "dir": str(directory),
            "lockers": len(lockers),
            "tls": bool(tls),
            "listen": [f"{x.host}:{x.port}" for x in listeners],
            "message_limit": limit,
        },
    )
    for note in notes:
        click.echo(note)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(
        f"{len(lockers)} locker account(s) and the host account {host_user!r}; "
        f"payload limit {limit} bytes"
    )
    click.echo(
        f"remembered: lockers connect to {chosen['broker.device']}"
        f"{' (TLS)' if main.tls else ''}, the host tools to "
        f"{chosen['broker.host'] or 'no plain listener (use --local-port)'}"
    )
    click.echo(
        f"run: mosquitto -c {directory / 'mosquitto.conf'}   "
        "(running already: kill -HUP <its pid> to reload)"
    )
