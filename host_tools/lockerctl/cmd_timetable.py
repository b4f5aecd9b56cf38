"""`lockerctl timetable set/show`: the site's school day, contact periods and terms (a TOML file,
docs/cli.md)."""

from __future__ import annotations

import time

import click

from .clibase import UserError, UserErrors, actor, cli, site_options, store_session


@cli.group("timetable")
def timetable():
    """The site's timetable (school day, contact periods, terms)."""


@timetable.command("set")
@click.argument("file", type=click.Path(dir_okay=False))
@site_options
def timetable_set(site, file):
    """Set the site's timetable from FILE.toml (validated first; nothing changes on an error)."""
    from .timetable import TimetableError, compile_timetable, parse_timetable

    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"cannot read {file}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None
    try:
        parsed = parse_timetable(text, file)
    except TimetableError as e:
        raise UserErrors(e.problems) from None
    try:
        compile_timetable(parsed, int(time.time()))
    except (ValueError, KeyError) as e:
        raise UserError(f"{file}: cannot compile the timetable: {e}") from None
    with store_session(site) as st:
        version = st.set_timetable(site.site, text, parsed, parsed["timezone"], actor=actor())
    click.echo(
        f"timetable set for site {site.site} ({parsed['timezone']}); config version {version}"
    )


@timetable.command("show")
@site_options
def timetable_show(site):
    """Print the site's timetable as it was set (TOML)."""
    with store_session(site) as st:
        row = st.timetable(site.site)
    if row is None:
        raise UserError(f"no timetable set for site {site.site} (lockerctl timetable set FILE)")
    click.echo(row.source, nl=not row.source.endswith("\n"))
