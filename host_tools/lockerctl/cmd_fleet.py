"""The fleet's commands: `lockerctl firmware publish` and `firmware status` (docs/fleet.md)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import click

from .clibase import UserError, actor, broker_options, cli, open_store, site_options


@cli.group("firmware")
def firmware():
    """Over-the-air firmware updates: offer a build to the lockers, see how far they are."""


def _open(site):

    return open_store(site)


@firmware.command("publish")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--version", "version", required=True, help="The build's version (e.g. 1.4.0).")
@click.option(
    "--locker",
    "targets",
    multiple=True,
    metavar="ID",
    help="Offer it to this locker (repeatable) [every locker of the site].",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    metavar="S",
    help="How long the broker may take to accept every message.",
)
@broker_options
def publish(site, directory, version, targets, timeout):
    """Offer the firmware build in DIR (as `make firmware` writes it) as version V: the files
    go to the broker as retained chunks, and each locker gets a manifest signed with its own
    key. A locker installs it into its spare slot, switches when no bay is in use and reports
    the version in its state (or `update_rejected` / `update_failed`). V must be newer than
    what each target runs."""
    from . import firmware as fw
    from .brokerclient import broker_auth
    from .store import fleet as store_fleet

    try:
        files = fw.collect_build(directory, version)
    except fw.FirmwareError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"cannot read {directory}: {e.strerror or e}") from None
    st = open_store(site)
    try:
        rows = {r.id: r for r in st.lockers(site.site)}
        if targets:
            missing = [t for t in targets if t not in rows]
            if missing:
                raise UserError(f"no locker {missing[0]!r} at site {site.site}")
            chosen = [rows[t] for t in dict.fromkeys(targets)]
        else:
            chosen = list(rows.values())
        if not chosen:
            raise UserError(f"site {site.site} has no lockers (lockerctl locker add)")
        offers = []
        for r in chosen:
            running = r.state.get("version") if isinstance(r.state, dict) else None
            if isinstance(running, str):
                try:
                    if not fw.newer(version, running):
                        raise UserError(
                            f"{r.id} runs {running}: version {version} is not newer (nothing "
                            "was published)"
                        )
                except fw.FirmwareError:
                    pass  # a locker reporting no proper version: it decides itself
            man = fw.manifest(r.id, site.site, version, files)
            try:
                offers.append((r.id, fw.sign_offer(bytes(r.secret), man)))
            except fw.FirmwareError as e:
                raise UserError(str(e)) from None
        user, password = broker_auth(site, st)
        messages = list(dict.fromkeys(fw.chunk_messages(site.site, files)))
        messages += [(fw.offer_topic(site.site, lid), payload) for lid, payload in offers]
        _send(site, user, password, messages, timeout)
        nbytes = sum(len(f.data) for f in files)
        store_fleet.record_offers(
            st, site.site, [lid for lid, _ in offers], version, len(files), nbytes, actor()
        )
    finally:
        st.close()
    click.echo(
        f"offered firmware {version} ({len(files)} files, {nbytes} bytes) to "
        f"{', '.join(lid for lid, _ in offers)}"
    )


def _send(site, user, password, messages, timeout: float) -> None:
    """Publishes (topic, payload) pairs retained at QoS 1 and waits for every PUBACK."""
    from .brokerclient import make_client

    client = make_client(f"lockerctl-fw-{uuid.uuid4().hex[:12]}", user, password)
    try:
        client.connect(site.broker_host, site.broker_port, keepalive=30)
    except OSError as e:
        raise UserError(
            f"cannot reach the broker at {site.broker_host}:{site.broker_port}: {e.strerror or e}"
        ) from None
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        infos = [client.publish(t, p, qos=1, retain=True) for t, p in messages]
        for info in infos:
            left = deadline - time.monotonic()
            try:
                info.wait_for_publish(max(left, 0.01))
            except (RuntimeError, ValueError):
                pass
            if not info.is_published():
                raise UserError(
                    f"the broker at {site.broker_host}:{site.broker_port} did not accept the "
                    "firmware (check the host's broker account); lockers are offered nothing new"
                )
    finally:
        client.disconnect()
        client.loop_stop()


@firmware.command("status")
@site_options
def status(site):
    """Each locker's running firmware, the version offered to it, how much of it is on its
    flash, and the last version that failed there."""
    from .fleet import health
    from .store import fleet as store_fleet

    st = open_store(site)
    try:
        rows = st.lockers(site.site)
        offered = store_fleet.offers(st, site.site)
    finally:
        st.close()
    table = [("locker", "online", "running", "offered", "progress", "failed", "reset_cause")]
    for r in rows:
        h = health(r.state)
        offer = offered.get(r.id)
        want = offer.version if offer else None
        progress = "-"
        if h.progress is not None:
            progress = f"{h.progress:.0%}"
        elif want and h.version == want:
            progress = "installed"
        elif want and h.failed == want:
            progress = "failed"
        table.append(
            (
                r.id,
                {True: "yes", False: "no"}.get(r.online, "never"),
                h.version or "-",
                want or "-",
                progress,
                h.failed or "-",
                h.reset_cause or "-",
            )
        )
    _print(table)


def _print(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
