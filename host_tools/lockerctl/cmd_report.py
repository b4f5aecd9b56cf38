"""`lockerctl report`: the policy report (report.py) as HTML or CSV."""

from __future__ import annotations

import click

from .clibase import UserError, cli, open_store, site_options


@cli.command("report")
@click.option(
    "--from",
    "from_day",
    type=click.DateTime(["%Y-%m-%d"]),
    required=True,
    help="First local date (YYYY-MM-DD), inclusive.",
)
@click.option(
    "--to",
    "to_day",
    type=click.DateTime(["%Y-%m-%d"]),
    required=True,
    help="Last local date (YYYY-MM-DD), inclusive.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "csv"]),
    default="html",
    show_default=True,
    help="html: one self-contained page with charts that prints on A4; csv: the same figures.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE",
    help="Write to FILE (default: standard output).",
)
@site_options
def report_cmd(site, from_day, to_day, fmt, output):
    """The policy report: per school day and year group, phones deposited, collected late,
    policy flags, SLT fob opens, grants and exemptions used, incidents; per locker, bay use and
    alerts; charts of deposits per day and incidents per week."""
    from . import report
    from .bounds import BoundError, check_date

    first, last = from_day.date(), to_day.date()
    try:
        check_date(first, "--from")
        check_date(last, "--to")
    except BoundError as e:
        raise UserError(str(e)) from None
    st = open_store(site)
    try:
        try:
            rep = report.build(st, site.site, first, last)
        except ValueError as e:
            raise UserError(str(e)) from None
        text = report.to_html(rep) if fmt == "html" else report.to_csv(rep)
    finally:
        st.close()
    if output in (None, "-"):
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as e:
        raise UserError(f"{output}: {e.strerror or e}") from None
    click.echo(f"report {first} to {last} written to {output}", err=True)
