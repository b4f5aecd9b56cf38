"""The school's everyday exceptions (docs/cli.md): `release`, `consent`, `exemption`,
`visitor`, `card unrevoke`. Each change is one transaction with its trail entry and a new
configuration version, so `serve` pushes it to the lockers in their signed bundles."""

from __future__ import annotations

import datetime as dt
import time

import click

from .bounds import BoundError, parse_day
from .bounds import parse_windows as bounds_windows
from .clibase import (
    UserError,
    actor,
    broker_options,
    check_person_id,
    cli,
    local_time,
    parse_when,
    print_table,
    site_options,
    store_session,
)
from .cmd_roster import card
from .store import consents as XC
from .store import exceptions as X

_MAX_NAME = 100


def parse_date(text: str | None, option: str) -> dt.date | None:
    """`bounds.parse_day` as a one-line UserError."""
    try:
        return parse_day(text, option)
    except BoundError as e:
        raise UserError(str(e)) from None


def parse_windows(values: tuple[str, ...]) -> list[str]:
    """`bounds.parse_windows` as a one-line UserError."""
    try:
        return bounds_windows(values)
    except BoundError as e:
        raise UserError(str(e)) from None


def _text(value: str | None, option: str, limit: int = 200) -> str | None:
    from .bounds import BoundError, check_text

    if value is None:
        return None
    value = " ".join(value.split())
    if not value:
        raise UserError(f"{option} must not be empty")
    try:
        return check_text(value, option, limit)
    except BoundError as e:
        raise UserError(str(e)) from None


# -- release ------------------------------------------------------------------------------------


@cli.command("release")
@broker_options
@click.argument("person_id")
@click.option("--by", "by", required=True, metavar="PERSON_ID", help="The office person asking.")
@click.option(
    "--reason",
    required=True,
    help="appointment, illness, collected by parent, emergency, or other: TEXT.",
)
@click.option(
    "--wait",
    default=15.0,
    show_default=True,
    type=float,
    metavar="S",
    help="How long to wait for the locker's answer.",
)
def release_cmd(site, person_id, by, reason, wait):
    """The office's named release: open the one bay that holds PERSON_ID's phone, on whichever
    locker, by a signed command; prints `<LOCKER> bay <N> opened` when the locker confirms."""
    from .release import send_release

    check_person_id(person_id, "person")
    check_person_id(by, "--by")
    if not 0 < wait <= 600:  # also refuses nan
        raise UserError(f"--wait must be more than 0 and at most 600 seconds, not {wait}")
    with store_session(site) as st:
        try:
            rel, answer = send_release(site, st, person_id, by, reason, actor(), wait=wait)
        except ValueError as e:
            raise UserError(str(e)) from None
        except OSError as e:
            raise UserError(f"release not sent: {e}") from None
    if answer is None:
        raise UserError(
            f"no answer from {rel.locker} within {wait:g} s (the command was sent; the locker "
            "may be offline)"
        )
    if answer != "opened":
        raise UserError(f"{rel.locker} refused to open bay {rel.bay}: {answer}")
    click.echo(f"{rel.locker} bay {rel.bay} opened")


# -- consent ------------------------------------------------------------------------------------


@cli.group("consent")
def consent():
    """The Headteacher's keep-safe consents: while one holds, the pupil's deposits raise no
    policy_flag (at the locker, offline too). Only an approver an admin names (`consent
    approver add`) may give one."""


@consent.command("add")
@click.argument("person_id")
@click.option(
    "--by",
    "by",
    required=True,
    metavar="PERSON_ID",
    help="The approver consenting (see `consent approver list`).",
)
@click.option("--until", default=None, metavar="DATE", help="Last day (YYYY-MM-DD) [no end].")
@click.option("--reason", default=None, help="Why (recorded in the audit trail).")
@site_options
def consent_add(site, person_id, by, until, reason):
    """Record keep-safe consent for pupil PERSON_ID."""
    check_person_id(person_id, "person")
    check_person_id(by, "--by")
    day = parse_date(until, "--until")
    reason = _text(reason, "--reason")
    with store_session(site) as st:
        cid = XC.add_consent(st, site.site, person_id, by, day, reason, actor(), int(time.time()))
    until_text = day.isoformat() if day else "no end date"
    click.echo(f"consent {cid}: {person_id} until {until_text}, by {by}")


@consent.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include ended consents.")
@site_options
def consent_list(site, show_all):
    """Consents in force (all with --all)."""
    now = int(time.time())
    with store_session(site) as st:
        rows = XC.list_consents(st, site.site, show_all, now)
    table = [("id", "person", "name", "until", "by", "status", "reason")]
    for r in rows:
        ended = r.ended_at is not None or (r.until_ts is not None and r.until_ts <= now)
        table.append(
            (
                str(r.id),
                r.person_id,
                r.name or "",
                r.until_date or "-",
                r.by,
                "ended" if ended else "active",
                r.reason or "",
            )
        )
    print_table(table)


@consent.command("end")
@click.argument("person_id")
@site_options
def consent_end(site, person_id):
    """End PERSON_ID's consent."""
    check_person_id(person_id, "person")
    with store_session(site) as st:
        ids = XC.end_consent(st, site.site, person_id, actor(), int(time.time()))
    click.echo(f"consent {', '.join(map(str, ids))} of {person_id} ended")


@consent.group("approver")
def consent_approver():
    """Who may approve keep-safe consents: the Headteacher and the SLT members an admin names
    (each on the roster with an slt card). Changes are recorded in the audit trail."""


@consent_approver.command("add")
@click.argument("person_id")
@site_options
def consent_approver_add(site, person_id):
    """Let PERSON_ID (an SLT member) approve keep-safe consents."""
    check_person_id(person_id, "person")
    with store_session(site) as st:
        XC.add_approver(st, site.site, person_id, actor(), int(time.time()))
    click.echo(f"{person_id} may approve keep-safe consents")


@consent_approver.command("remove")
@click.argument("person_id")
@site_options
def consent_approver_remove(site, person_id):
    """PERSON_ID may no longer approve keep-safe consents (those they gave stand)."""
    check_person_id(person_id, "person")
    with store_session(site) as st:
        XC.remove_approver(st, site.site, person_id, actor())
    click.echo(f"{person_id} may no longer approve keep-safe consents")


@consent_approver.command("list")
@site_options
def consent_approver_list(site):
    """The approvers of keep-safe consents (status `no slt card`: refused until they hold
    one again)."""
    with store_session(site) as st:
        rows = XC.list_approvers(st, site.site)
        tz = st.timezone(site.site)
    if not rows:
        click.echo(
            "no approver of keep-safe consents yet: name the Headteacher with "
            "`lockerctl consent approver add PERSON_ID`"
        )
        return
    table = [("person", "name", "named", "named by", "status")]
    for a in rows:
        table.append(
            (
                a.person_id,
                a.name or "",
                local_time(a.added_at, tz),
                a.added_by,
                "approver" if a.slt else "no slt card",
            )
        )
    print_table(table)


# -- exemptions ---------------------------------------------------------------------------------


@cli.group("exemption")
def exemption():
    """The exemptions register: on school days, inside each window, the person may retrieve
    and deposit again whatever the timetable says (offline too)."""


@exemption.command("add")
@click.argument("person_id")
@click.option(
    "--category",
    required=True,
    type=click.Choice(X.CATEGORIES),
    help="A category, never a diagnosis.",
)
@click.option("--by", "by", required=True, metavar="PERSON_ID", help="The SLT member approving.")
@click.option("--review", required=True, metavar="DATE", help="When to review it (YYYY-MM-DD).")
@click.option(
    "--window",
    "windows",
    multiple=True,
    metavar="HH:MM-HH:MM",
    help="A daily access window on school days (repeatable, 1-4).",
)
@click.option("--from", "from_", default=None, metavar="DATE", help="First day [today].")
@click.option("--until", default=None, metavar="DATE", help="Last day [no end].")
@site_options
def exemption_add(site, person_id, category, by, review, windows, from_, until):
    """Add an exemption for PERSON_ID; prints its id."""
    check_person_id(person_id, "person")
    check_person_id(by, "--by")
    spans = parse_windows(windows)
    review_day = parse_date(review, "--review")
    start = parse_date(from_, "--from")
    end = parse_date(until, "--until")
    now = int(time.time())
    with store_session(site) as st:
        tz = st.timezone(site.site)
        today = X.today(tz, now)
        start = start or today
        if end is not None and end < start:
            raise UserError(f"--until {end} is before --from {start}")
        if end is not None and end < today:
            raise UserError(f"--until {end} has already passed")
        assert review_day is not None
        if review_day < today:
            raise UserError(f"--review {review_day} has already passed")
        eid = X.add_exemption(
            st, site.site, person_id, category, by, review_day, spans, start, end, actor(), now
        )
    click.echo(eid)


@exemption.command("list")
@click.option("--due", is_flag=True, help="Only those due for review (review date reached).")
@click.option("--all", "show_all", is_flag=True, help="Include ended exemptions.")
@site_options
def exemption_list(site, due, show_all):
    """Exemptions not ended (all with --all; those due for review with --due)."""
    with store_session(site) as st:
        rows = X.list_exemptions(st, site.site, due, show_all, int(time.time()))
    table = [
        ("id", "person", "name", "category", "windows", "from", "until", "review", "by", "status")
    ]
    for e in rows:
        table.append(
            (
                str(e.id),
                e.person_id,
                e.name or "",
                e.category,
                e.windows,
                e.from_date,
                e.until_date or "-",
                e.review_date + (" (due)" if e.due else ""),
                e.by,
                e.status,
            )
        )
    print_table(table)


@exemption.command("end")
@click.argument("exemption_id", metavar="ID", type=int)
@site_options
def exemption_end(site, exemption_id):
    """End exemption ID on every locker."""
    with store_session(site) as st:
        person = X.end_exemption(st, site.site, exemption_id, actor(), int(time.time()))
    click.echo(f"exemption {exemption_id} of {person} ended")


# -- visitors -----------------------------------------------------------------------------------


@cli.group("visitor")
def visitor():
    """Visitors' day cards (supply teachers, volunteers, contractors, parent helpers)."""


@visitor.command("add")
@click.argument("name")
@click.option("--card", "uid", required=True, metavar="UID", help="A spare card (8 or 14 hex).")
@click.option("--by", "by", required=True, metavar="PERSON_ID", help="The office person.")
@click.option("--until", default=None, metavar="ISO", help="End [the end of today].")
@site_options
def visitor_add(site, name, uid, by, until):
    """Give visitor NAME a spare card: staff rules until --until, then refused except to
    collect a phone still in a bay. Prints the visitor's new person_id."""
    from .roster import normalise_uid

    name = _text(name, "NAME", _MAX_NAME)
    check_person_id(by, "--by")
    try:
        uid = normalise_uid(uid)
    except ValueError as e:
        raise UserError(f"--card: {e}") from None
    now = int(time.time())
    with store_session(site) as st:
        tz = st.timezone(site.site)
        if until is None:
            end = X.day_end(X.today(tz, now), tz)
        else:
            end = parse_when(until, tz, "--until")
        if end <= now:
            raise UserError(f"--until {until} has already passed")
        if end > now + 31 * 86400:
            raise UserError(f"--until {until}: a visitor's card is for at most 31 days")
        person_id = X.add_visitor(st, site.site, name, uid, by, end, actor(), now)
    click.echo(person_id)


@visitor.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include visitors whose card has ended.")
@site_options
def visitor_list(site, show_all):
    """Visitors whose card is in use (all with --all)."""
    from .store import mask_uid

    now = int(time.time())
    with store_session(site) as st:
        rows = X.list_visitors(st, site.site, show_all, now)
        tz = st.timezone(site.site)
    table = [("person", "name", "card", "from", "until", "by", "status")]
    for v in rows:
        table.append(
            (
                v.person_id,
                v.name,
                mask_uid(v.card_uid),
                local_time(v.from_ts, tz),
                local_time(v.until_ts, tz),
                v.by,
                "ended" if v.until_ts <= now else "active",
            )
        )
    print_table(table)


# -- cards --------------------------------------------------------------------------------------


@card.command("unrevoke")
@click.argument("person_id")
@click.option("--card", "uid", default=None, metavar="UID", help="Only this card of the person.")
@site_options
def card_unrevoke(site, person_id, uid):
    """Undo the revocation of PERSON_ID's cards (or one of them), recorded in the trail."""
    from .roster import normalise_uid
    from .store import mask_uid

    check_person_id(person_id, "person")
    if uid is not None:
        try:
            uid = normalise_uid(uid)
        except ValueError as e:
            raise UserError(f"--card: {e}") from None
    with store_session(site) as st:
        if st.person(site.site, person_id, include_inactive=True) is None:
            raise UserError(f"{person_id} is not on the roster of site {site.site}")
        n = X.unrevoke_cards(st, site.site, person_id, uid, actor())
    what = f"card {mask_uid(uid)}" if uid else f"{n} card{'s' if n != 1 else ''}"
    if n:
        click.echo(f"unrevoked {what} of {person_id}")
    else:
        click.echo(f"{person_id}: {what if uid else 'no card'} revoked, nothing to undo")
