"""`lockerctl serve` and `lockerctl open`: the commands that talk to the lockers over MQTT."""

from __future__ import annotations

import logging
import signal

import click

from .clibase import Site, UserError, broker_options, cli, parse_hostport


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    import os

    from .logfmt import ENV, make_handler

    os.environ[ENV] = log_format  # the ingest process (spawned) logs the same way
    handler = make_handler(log_format)
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
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=32),
    default=1,
    show_default=True,
    metavar="N",
    help="Ingest processes sharing the lockers' events through an MQTT shared subscription "
    "($share/lockerctl-SITE/...; client ids CLIENT_ID-w1..wN), each event stored once "
    "(PostgreSQL only: SQLite takes one writer at a time).",
)
@click.option(
    "--checkpoint-every",
    type=click.FloatRange(min=1.0, max=600.0),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="How often a checkpoint of the audit trail is signed and sent to the lockers "
    "(when the trail grew, or to a locker that does not hold the latest).",
)
@click.option(
    "--oidc-issuer",
    default=None,
    metavar="URL",
    help="Offer sign-in with the school's accounts (OpenID Connect) from this issuer, e.g. "
    "https://login.microsoftonline.com/TENANT/v2.0 or https://accounts.google.com.",
)
@click.option("--oidc-client-id", default=None, metavar="ID", help="The app's client id.")
@click.option(
    "--oidc-client-secret-file",
    default=None,
    metavar="FILE",
    help="A file holding the app's client secret (one line).",
)
@click.option(
    "--oidc-redirect-uri",
    default=None,
    metavar="URL",
    help="The redirect URI registered with the provider (default: this dashboard's address "
    "+ /login/sso/callback, from the browser's Host header).",
)
@click.option(
    "--metrics-token-file",
    default=None,
    metavar="FILE",
    help="/metrics requires `Authorization: Bearer TOKEN` (the file's one line) from every "
    "client; without it /metrics answers this machine (loopback) only.",
)
@click.option(
    "--smtp",
    default=None,
    metavar="HOST:PORT",
    help="E-mail urgent alerts through this mail server (port 25 or 587 if none given).",
)
@click.option(
    "--alert-to",
    default=None,
    metavar="ADDR[,ADDR...]",
    help="Who gets the urgent alerts' e-mails (with --smtp).",
)
@click.option(
    "--smtp-from",
    default=None,
    metavar="ADDR",
    help="The e-mails' sender (default classlocker@ this machine's name).",
)
@click.option(
    "--smtp-starttls", is_flag=True, help="Upgrade the connection with STARTTLS (verified)."
)
@click.option("--smtp-user", default=None, metavar="NAME", help="Log in to the mail server.")
@click.option(
    "--smtp-password-file",
    default=None,
    metavar="FILE",
    help="The --smtp-user's password: the file's first line (mode 0600); else the "
    "environment's LOCKER_SMTP_PASSWORD.",
)
@click.option(
    "--smtp-ca",
    default=None,
    metavar="FILE",
    help="Trust this CA (PEM) for the mail server's STARTTLS certificate (default: the system's).",
)
@click.option(
    "--dashboard-url",
    default=None,
    metavar="URL",
    help="The dashboard's address as readers open it, for the links in e-mails "
    "(default: http(s)://the --http address).",
)
@click.option(
    "--review-at",
    default=None,
    metavar="HH:MM",
    help="E-mail SLT's daily review at this local time on school days (with --smtp).",
)
@click.option(
    "--review-to",
    default=None,
    metavar="ADDR[,ADDR...]",
    help="Who gets the daily review (it names pupils; default: --alert-to).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line (time, level, logger, message), for a log collector.",
)
def serve(
    site: Site,
    http,
    http_cert,
    http_key,
    client_id,
    workers,
    checkpoint_every,
    oidc_issuer,
    oidc_client_id,
    oidc_client_secret_file,
    oidc_redirect_uri,
    metrics_token_file,
    smtp,
    alert_to,
    smtp_from,
    smtp_starttls,
    smtp_user,
    smtp_password_file,
    smtp_ca,
    dashboard_url,
    review_at,
    review_to,
    verbose,
    log_format,
):
    """Ingest the lockers' events into the audit store (each exactly once, acknowledged after the
    commit), publish each locker's configuration (again within seconds of any change) and serve
    the dashboard. Stops cleanly on SIGTERM or Ctrl-C."""
    from .serve import Service

    _setup_logging(verbose, log_format)
    address = parse_hostport(http, 8080) if http else None
    tls = None
    if http_cert or http_key:
        if not (http_cert and http_key):
            raise UserError("--http-cert and --http-key go together")
        if not http:
            raise UserError("--http-cert needs --http HOST:PORT (the dashboard's address)")
        from .web.app import tls_context

        try:
            tls_context(http_cert, http_key)
        except ValueError as e:
            raise UserError(f"--http-cert/--http-key: {e}") from None
        tls = (http_cert, http_key)
    web_options = _web_options(
        http,
        oidc_issuer,
        oidc_client_id,
        oidc_client_secret_file,
        oidc_redirect_uri,
        metrics_token_file,
    )
    mail = _mail_settings(
        smtp,
        alert_to,
        smtp_from,
        smtp_starttls,
        smtp_user,
        smtp_password_file,
        smtp_ca,
        dashboard_url or (f"{'https' if tls else 'http'}://{http}" if http else None),
        review_at,
        review_to,
    )
    store = _open_store(site)  # a bad --db is a one-line error before anything starts
    backend = store.engine.dialect.name
    store.close()
    if workers > 1 and backend != "postgresql":
        raise UserError(
            f"--workers {workers} needs PostgreSQL: {backend} takes one writer at a time"
        )
    service = Service(
        site,
        client_id=client_id,
        writer_process=True,
        checkpoint_every=checkpoint_every,
        workers=workers,
    )
    service.web_options = web_options
    service.mail_settings = mail

    def stop(signum, frame):
        service.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("lockerctl.serve").info(
        "serving site %s: store %s, broker %s:%d (%s)",
        site.site,
        _redacted(site.db),
        site.broker_host,
        site.broker_port,
        site.broker_source,
    )
    service.start()
    if address:
        service.dashboard = _start_dashboard(service, address, tls)
    while not service.wait(1.0):
        pass
    service.stop()


def _mail_settings(
    smtp,
    alert_to,
    sender,
    starttls,
    user,
    password_file,
    cafile,
    dashboard_url,
    review_at,
    review_to,
):
    """The e-mail settings of `serve`, checked before anything starts (None without --smtp)."""
    from .mailer import (
        MailSettings,
        MailSettingsError,
        load_password,
        parse_addresses,
        parse_hhmm,
    )

    given = [alert_to, sender, user, password_file, cafile, review_at, review_to]
    if not smtp:
        if any(given) or starttls:
            raise UserError("the e-mail options (--alert-to, --smtp-*, --review-*) need --smtp")
        return None
    if not alert_to:
        raise UserError("--smtp needs --alert-to ADDR[,ADDR...] (who gets the alerts)")
    try:
        host, port = parse_hostport(smtp, 587 if starttls else 25)
        to = parse_addresses(alert_to, "--alert-to")
        if sender:
            (sender,) = parse_addresses(sender, "--smtp-from")
        else:
            import socket

            name = socket.getfqdn()
            sender = f"classlocker@{name if '.' in name and name.isascii() else 'localhost'}"
        password = load_password(password_file) if user else None
        if user and not password:
            raise MailSettingsError(
                "--smtp-user needs a password: --smtp-password-file FILE or LOCKER_SMTP_PASSWORD"
            )
        if password_file and not user:
            raise MailSettingsError("--smtp-password-file needs --smtp-user")
        if cafile and not starttls:
            raise MailSettingsError("--smtp-ca needs --smtp-starttls")
        if cafile:
            import ssl

            try:
                ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as e:
                raise MailSettingsError(f"--smtp-ca {cafile}: {e}") from None
        if dashboard_url and not dashboard_url.startswith(("http://", "https://")):
            raise MailSettingsError("--dashboard-url must begin http:// or https://")
        return MailSettings(
            host=host,
            port=port,
            to=to,
            sender=sender,
            starttls=starttls,
            user=user,
            password=password,
            cafile=cafile,
            dashboard_url=dashboard_url,
            review_at=parse_hhmm(review_at, "--review-at") if review_at else None,
            review_to=parse_addresses(review_to, "--review-to") if review_to else [],
        )
    except MailSettingsError as e:
        raise UserError(str(e)) from None


def _start_dashboard(service, http: tuple[str, int], tls=None):
    """The dashboard (`lockerctl.web`), if this installation has it: `web.start(service, host,
    port, tls)` must return an object with `stop()`."""
    try:
        from . import web
    except ModuleNotFoundError:
        logging.getLogger("lockerctl.serve").warning(
            "no dashboard in this installation (lockerctl.web missing): --http ignored"
        )
        return None
    return web.start(service, http[0], http[1], tls=tls)


def _redacted(db: str) -> str:
    """The store's URL without its password, for the log."""
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(db).render_as_string(hide_password=True)
    except Exception:
        return db


def _web_options(http, issuer, client_id, secret_file, redirect_uri, token_file) -> dict:
    """The dashboard's single sign-on and metrics settings, checked before anything starts."""
    options: dict[str, object] = {}
    oidc = (issuer, client_id, secret_file)
    if any(oidc) or redirect_uri:
        if not all(oidc):
            raise UserError(
                "--oidc-issuer, --oidc-client-id and --oidc-client-secret-file go together"
            )
        if not http:
            raise UserError("--oidc-issuer needs --http HOST:PORT (the dashboard's address)")
        from .web.oidc import load_settings

        try:
            options["oidc"] = load_settings(issuer, client_id, secret_file, redirect_uri)
        except ValueError as e:
            raise UserError(str(e)) from None
    if token_file:
        if not http:
            raise UserError("--metrics-token-file needs --http HOST:PORT")
        from .web.monitoring import load_token

        try:
            options["metrics_token"] = load_token(token_file)
        except ValueError as e:
            raise UserError(str(e)) from None
    return options


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
