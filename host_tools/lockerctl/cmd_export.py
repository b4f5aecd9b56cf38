"""`lockerctl export`: the audit trail's events (and, if asked, the host's actions) as CSV, JSON
Lines or Excel, with the signed checkpoint it was cut from (docs/cli.md)."""

from __future__ import annotations

import contextlib
import sys

import click

from .clibase import UserError, cli, output_file, progress_bar, site_options, store_session


@cli.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "xlsx"]),
    default="csv",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--from",
    "from_day",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="First local date (YYYY-MM-DD), inclusive.",
)
@click.option(
    "--to",
    "to_day",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Last local date (YYYY-MM-DD), inclusive.",
)
@click.option("--locker", default=None, help="Only this locker's events.")
@click.option("--person", default=None, help="Only events of this person (as holder or by).")
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE",
    help="Write to FILE instead of standard output (required for xlsx on a terminal).",
)
@click.option(
    "--include",
    "include",
    multiple=True,
    type=click.Choice(["actions"]),
    help="Also the host-side actions (grants, consents, exemptions, visitors, revocations, "
    "opens and releases, account changes, downloads) as rows: locker empty, `by` the account, "
    "`event` the action.",
)
@site_options
def export_cmd(site, fmt, from_day, to_day, locker, person, output, include=()):
    """Export the audit trail's events as CSV, JSON Lines or Excel.

    Columns: time,locker,bay,event,person_id,name,role,by,reason,seq, with `time` in the site's
    local time (ISO 8601 with offset; empty when the locker's clock was unknown). Events are in
    time order; --from/--to are local dates, both inclusive.
    """
    from .export import date_range, export_events

    if fmt == "xlsx" and output in (None, "-") and sys.stdout.isatty():
        raise UserError("xlsx is binary: give -o FILE.xlsx or redirect standard output")
    from .bounds import BoundError, check_date

    try:
        for option, day in (("--from", from_day), ("--to", to_day)):
            if day is not None:
                check_date(day.date(), option)
    except BoundError as e:
        raise UserError(str(e)) from None
    if from_day and to_day and from_day > to_day:
        raise UserError(f"--from {from_day:%Y-%m-%d} is after --to {to_day:%Y-%m-%d}")
    with store_session(site) as st:
        tz = st.timezone(site.site)
        start, end = date_range(
            from_day.date() if from_day else None, to_day.date() if to_day else None, tz
        )
        if (
            locker is not None
            and st.locker(site.site, locker) is None
            and st.count_events(site.site, locker=locker) == 0
        ):
            raise UserError(f"--locker {locker}: no such locker at site {site.site}")
        if (
            person is not None
            and st.person(site.site, person, include_inactive=True) is None
            and st.count_events(site.site, person=person) == 0
        ):
            raise UserError(f"--person {person}: not on the roster of site {site.site}")
        from .checkpoint import make as make_checkpoint

        # the trail's head as the export begins, signed: what the export was cut from
        note = make_checkpoint(st, site.site).note
        bar = None
        if sys.stderr.isatty():
            bar = progress_bar("exporting", st.count_events(site.site, start, end, locker, person))
        with output_file(output, binary=(fmt == "xlsx")) as out:
            with bar if bar is not None else contextlib.nullcontext():
                n = export_events(
                    st,
                    site.site,
                    fmt,
                    out,
                    start=start,
                    end=end,
                    locker=locker,
                    person=person,
                    timezone=tz,
                    progress=bar.update if bar is not None else None,
                    checkpoint=note,
                    actions=_actions(st, site.site, start, end, locker, person, include),
                )
        if output not in (None, "-"):
            with output_file(output + ".checkpoint") as f:
                f.write(note)
    # Never in the rows (consumers parse every line): on stderr, and beside FILE.
    click.echo("cut from the audit trail at this checkpoint:", err=True)
    click.echo(note, err=True, nl=False)
    if output not in (None, "-"):
        click.echo(
            f"exported {n} events to {output} (checkpoint in {output}.checkpoint)", err=True
        )


def _actions(st, site, start, end, locker, person, include):
    """The host-side actions as export rows when asked for (`--include actions`); a locker's
    export (--locker) has none of them."""
    if "actions" not in include or locker is not None:
        return None
    from .store.lookup import action_rows

    return action_rows(st, site, start, end, person)
