"""`lockerctl grant`: exception grants, access outside the rules for a while (docs/cli.md)."""

from __future__ import annotations

import time

import click

from .clibase import (
    UserError,
    actor,
    check_person_id,
    cli,
    local_time,
    parse_when,
    print_table,
    site_options,
    store_session,
)


class _GrantGroup(click.Group):
    """`grant PERSON_ID --from ...` makes a grant; `grant list` and `grant revoke ID` manage
    them. A first word that is not a subcommand is taken as PERSON_ID of `grant add`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["add", *args]
        return super().parse_args(ctx, args)


@cli.group("grant", cls=_GrantGroup)
def grant():
    """Exception grants: `grant PERSON_ID --from ISO --until ISO --by SLT_ID --reason TEXT
    [--locker ID]`, `grant list`, `grant revoke ID`."""


@grant.command("add")
@click.argument("person_id")
@click.option(
    "--from",
    "from_",
    required=True,
    metavar="ISO",
    help="Start, ISO 8601; without an offset, the site's local time.",
)
@click.option("--until", required=True, metavar="ISO", help="End, ISO 8601.")
@click.option(
    "--by", "by", required=True, metavar="SLT_PERSON_ID", help="The SLT member granting it."
)
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@click.option("--locker", default=None, metavar="ID", help="Only at this locker [default: all].")
@site_options
def grant_add(site, person_id, from_, until, by, reason, locker):
    """Grant PERSON_ID access outside the rules from --from until --until (also offline)."""
    check_person_id(person_id, "person")
    check_person_id(by, "--by")
    from .bounds import BoundError, check_text

    reason = (reason or "").strip()
    if not reason:
        raise UserError("--reason must not be empty")
    try:
        check_text(reason, "--reason", 200)
    except BoundError as e:
        raise UserError(str(e)) from None
    with store_session(site) as st:
        tz = st.timezone(site.site)
        start = parse_when(from_, tz, "--from")
        end = parse_when(until, tz, "--until")
        if start >= end:
            raise UserError(f"--from {from_} is not before --until {until}")
        if end <= time.time():
            raise UserError(f"--until {until} has already passed")
        if st.person(site.site, person_id) is None:
            raise UserError(f"{person_id} is not on the roster of site {site.site}")
        granter = st.person(site.site, by)
        if granter is None:
            raise UserError(f"--by {by} is not on the roster of site {site.site}")
        if "slt" not in granter.roles:
            raise UserError(f"--by {by} is not an SLT member (no slt card)")
        if locker is not None and st.locker(site.site, locker) is None:
            raise UserError(f"--locker {locker}: no such locker at site {site.site}")
        gid = st.add_grant(site.site, person_id, start, end, by, reason, locker, actor=actor())
    click.echo(
        f"grant {gid}: {person_id} from {local_time(start, tz)} until {local_time(end, tz)} "
        f"at {locker or 'every locker'}, by {by}"
    )


@grant.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include ended and revoked grants.")
@site_options
def grant_list(site, show_all):
    """The site's grants that have not ended (all of them with --all)."""
    now = int(time.time())
    with store_session(site) as st:
        rows = st.grants(site.site, include_ended=show_all, now=now)
        tz = st.timezone(site.site)
    table = [("id", "person", "locker", "from", "until", "by", "status", "reason")]
    for g in rows:
        if g.revoked_at is not None:
            status = "revoked"
        elif g.until_ts <= now:
            status = "ended"
        elif g.from_ts > now:
            status = "future"
        else:
            status = "active"
        table.append(
            (
                str(g.id),
                g.person_id,
                g.locker_id or "all",
                local_time(g.from_ts, tz),
                local_time(g.until_ts, tz),
                g.by,
                status,
                g.reason,
            )
        )
    print_table(table)


@grant.command("revoke")
@click.argument("grant_id", metavar="ID", type=int)
@site_options
def grant_revoke(site, grant_id):
    """Revoke grant ID on every locker."""
    with store_session(site) as st:
        st.revoke_grant(site.site, grant_id, actor=actor())
    click.echo(f"grant {grant_id} revoked")
