"""`lockerctl serve` and `lockerctl open`: the commands that talk to the lockers over MQTT."""

from __future__ import annotations

import logging
import signal
import sys

import click

from .clibase import Site, UserError, broker_options, cli, parse_hostport


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s serve: %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("lockerctl")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _open_store(site: Site):
    from .serve import open_store

    try:
        return open_store(site.db)
    except Exception as e:
        raise UserError(f"cannot open the store {site.db}: {e}") from None


@cli.command()
@broker_options
@click.option(
    "--http",
    "http",
    default=None,
    metavar="HOST:PORT",
    help="Serve the dashboard on this address (e.g. 127.0.0.1:8080).",
)
@click.option(
    "--http-cert",
    default=None,
    metavar="FILE",
    help="Serve the dashboard over HTTPS with this PEM certificate (chain); needs --http-key.",
)
@click.option(
    "--http-key",
    default=None,
    metavar="FILE",
    help="The PEM private key of --http-cert.",
)
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id (default lockerctl-serve-SITE: one persistent session per "
    "site; two services with the same id would take turns).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def serve(site: Site, http, http_cert, http_key, client_id, verbose):
    """Ingest the lockers' events into the audit store (each exactly once, acknowledged after the
    commit), publish each locker's configuration (again within seconds of any change) and serve
    the dashboard. Stops cleanly on SIGTERM or Ctrl-C."""
    from .serve import Service

    _setup_logging(verbose)
    address = parse_hostport(http, 8080) if http else None
    tls = None
    if http_cert or http_key:
        if not (http_cert and http_key):
            raise UserError("--http-cert and --http-key go together")
        if not http:
            raise UserError("--http-cert needs --http HOST:PORT (the dashboard's address)")
        from .web.server import tls_context

        try:
            tls_context(http_cert, http_key)
        except ValueError as e:
            raise UserError(f"--http-cert/--http-key: {e}") from None
        tls = (http_cert, http_key)
    _open_store(site)  # a bad --db is a one-line error before anything starts
    service = Service(site, client_id=client_id, writer_process=True)

    def stop(signum, frame):
        service.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("lockerctl.serve").info(
        "serving site %s: store %s, broker %s:%d",
        site.site,
        site.db,
        site.broker_host,
        site.broker_port,
    )
    service.start(http=address, tls=tls)
    while not service.wait(1.0):
        pass
    service.stop()


@cli.command("open")
@broker_options
@click.argument("locker")
@click.argument("bay", metavar="BAY|all")
@click.option(
    "--by",
    "by",
    required=True,
    metavar="PERSON_ID",
    help="Who asks for the open (a person on the roster).",
)
@click.option("--reason", required=True, help="Why (required, recorded in the audit trail).")
@click.option(
    "--expires",
    default=60,
    show_default=True,
    type=int,
    metavar="SECONDS",
    help="The locker refuses the command after this many seconds.",
)
@click.option(
    "--wait",
    "wait",
    default=0.0,
    type=float,
    metavar="S",
    help="Wait up to S seconds for the locker's answer and report it.",
)
def open_(site: Site, locker, bay, by, reason, expires, wait):
    """Office emergency open of one bay, or of every occupied bay (`all`), of LOCKER: a signed
    command with an expiry, recorded in the audit trail."""
    from .serve import send_open

    if not reason.strip():
        raise UserError("--reason must not be empty")
    if not 0 <= wait <= 600:  # also refuses nan
        raise UserError(f"--wait must be 0 to 600 seconds, not {wait}")
    store = _open_store(site)
    try:
        detail, outcomes = send_open(
            site, store, locker, bay, by, reason, expires=expires, wait=wait
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"open not sent: {e}") from None
    click.echo(
        f"sent open {detail['bay']} to {locker} (command {detail['cmd_id']}, "
        f"expires in {expires} s)"
    )
    if not wait:
        return
    if not outcomes:
        raise UserError(
            f"no answer from {locker} within {wait:g} s (the command was sent; "
            "the locker may be offline)"
        )
    rejected = None
    for ev in outcomes:
        if ev.get("type") == "cmd_rejected":
            rejected = ev.get("reason") or "rejected"
        elif ev.get("bay") is None:
            click.echo(f"{ev.get('type')}: no occupied bay to open")
        else:
            holder = f" (holder {ev['person']})" if ev.get("person") else ""
            click.echo(f"{ev.get('type')}: bay {ev['bay']} opened{holder}")
    if rejected:
        raise UserError(f"{locker} rejected the command: {rejected}")
