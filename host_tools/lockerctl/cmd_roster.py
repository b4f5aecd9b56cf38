"""`lockerctl roster import/export` and `card revoke`: the site's people and their cards. Every
change is one transaction with its trail entry and a new configuration version, so `serve`
republishes the lockers' configuration."""

from __future__ import annotations

import hashlib
import os

import click

from .clibase import (
    UserError,
    actor,
    check_person_id,
    cli,
    output_file,
    printable,
    site_options,
    store_session,
)
from .store import mask_uid


@cli.group("roster")
def roster():
    """The site's roster of people and their cards."""


@roster.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@site_options
def roster_import(site, file):
    """Replace the roster with FILE.csv (all or nothing).

    Header: person_id,name,role,year,walk_home,card_uid; one row per card (a person may have
    several). role is pupil, staff, slt or office; year 1-6 for pupils (empty otherwise);
    walk_home yes or no; card_uid 8 or 14 hex digits. The file is the whole roster: cards it no
    longer lists are removed; a revoked card stays revoked. Every bad line is reported with its
    line number and nothing is imported.
    """
    from .roster import RosterError, parse_roster

    try:
        with open(file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {file}: {e.strerror}") from None
    try:
        rows = parse_roster(data, file)
    except RosterError as e:
        for line in e.lines():
            click.echo(printable(line), err=True)
        raise UserError(str(e)) from None
    with store_session(site) as st:
        c = st.replace_roster(
            site.site,
            rows,
            actor=actor(),
            detail={"file": os.path.basename(file), "sha256": hashlib.sha256(data).hexdigest()},
        )
    click.echo(
        f"imported {c['cards']} cards for {c['people']} people ({c['added']} added, "
        f"{c['updated']} updated, {c['removed']} removed); config version {c['version']}"
    )


@roster.command("export")
@click.option("-o", "--output", default=None, metavar="FILE", help="Write to FILE.")
@site_options
def roster_export(site, output):
    """The roster as CSV, one row per card, card UIDs masked (****A1B2)."""
    from .roster import write_roster

    with store_session(site) as st:
        rows = st.roster(site.site)
    with output_file(output) as out:
        write_roster(rows, out)


@cli.group("card")
def card():
    """Roster cards."""


@card.command("revoke")
@click.argument("person_id")
@click.option(
    "--card",
    "uid",
    default=None,
    metavar="UID",
    help="Revoke only this card (8 or 14 hex digits) of the person.",
)
@site_options
def card_revoke(site, person_id, uid):
    """Revoke PERSON_ID's cards (or one of them) on every locker."""
    from .roster import normalise_uid

    check_person_id(person_id, "person")
    if uid is not None:
        try:
            uid = normalise_uid(uid)
        except ValueError as e:
            raise UserError(f"--card: {e}") from None
    with store_session(site) as st:
        if st.person(site.site, person_id, include_inactive=True) is None:
            raise UserError(f"{person_id} is not on the roster of site {site.site}")
        n = st.revoke_cards(site.site, person_id, uid, actor=actor())
    what = f"card {mask_uid(uid)}" if uid else f"{n} card{'s' if n != 1 else ''}"
    if n:
        click.echo(f"revoked {what} of {person_id}")
    else:
        click.echo(f"{person_id}: {'card ' + mask_uid(uid) if uid else 'cards'} already revoked")
