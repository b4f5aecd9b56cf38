"""`lockerctl retention apply` and `lockerctl sar`: data protection duties (docs/privacy.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .clibase import Site, UserError, actor, cli, open_store, site_options


@cli.group("retention")
def retention():
    """How long personal data is kept (docs/privacy.md)."""


@retention.command("apply")
@site_options
@click.option(
    "--keep-days",
    type=click.IntRange(0, None),
    required=True,
    metavar="N",
    help="Keep personal fields for N days; older events keep their time, locker, bay and type "
    "but lose who, by whom and the reason.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing.")
def retention_apply(site: Site, keep_days: int, dry_run: bool):
    """Remove personal fields (person, by, reason; names of people who have left) from the audit
    trail's entries older than N days, delete exception grants that ended before then, and keep
    the tamper-evident chain verifiable (`lockerctl audit verify` still passes)."""
    from . import privacy
    from .store import StoreError
    from .timetable import local_iso

    st = open_store(site)
    try:
        tz = st.timezone(site.site)
        if dry_run:
            r = privacy.retention_preview(st, site.site, keep_days)
        else:
            r = privacy.apply_retention(st, site.site, keep_days, actor=actor())
    except (privacy.PrivacyError, StoreError) as e:
        raise UserError(str(e)) from None
    finally:
        st.close()
    when = local_iso(r["cutoff"], tz) if r["cutoff"] > 0 else "the beginning"
    verb = "would redact" if dry_run else "redacted"
    people = "" if r["people"] is None else f", {r['people']} departed people deleted"
    click.echo(
        f"{verb} {r['entries']} trail entries before {when}; "
        f"{r['grants']} ended grants {'would be ' if dry_run else ''}deleted{people}"
    )


@cli.command("sar")
@site_options
@click.argument("person_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the JSON to this file (owner-only) instead of standard output.",
)
def sar(site: Site, person_id: str, output):
    """Subject access: everything held about PERSON_ID as JSON (roster rows with masked card
    UIDs, events as subject or actor, grants, host actions naming them, dashboard accounts, bays
    held now). The request itself is recorded in the audit trail."""
    from . import privacy

    st = open_store(site)
    try:
        report = privacy.subject_access(st, site.site, person_id)
        counts = {k: len(report[k]) for k in ("cards", "events", "grants", "actions")}
        text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        if output is not None:
            _write_private(output, text)
        st.record_action(site.site, actor(), "subject_access", {"person": person_id, **counts})
    except privacy.PrivacyError as e:
        raise UserError(str(e)) from None
    finally:
        st.close()
    if output is None:
        click.echo(text, nl=False)
    if privacy.is_empty(report):
        click.echo(f"lockerctl: nothing is held about {person_id} at site {site.site}", err=True)


def _write_private(path: Path, text: str) -> None:
    target = path.resolve()
    if not target.parent.is_dir():
        raise UserError(f"cannot write {path}: no directory {target.parent}")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UserError(f"cannot write {path}: {e}") from None
