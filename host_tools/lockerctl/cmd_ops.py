"""Keeping the store safe: `lockerctl backup` and `lockerctl restore` (a nightly backup is one of
the units `lockerctl setup` installs, cmd_setup.py)."""

from __future__ import annotations

from pathlib import Path

import click

from .clibase import Site, UserError, cli, site_options


@cli.command()
@site_options
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write a dated copy (classlocker-YYYY-MM-DDTHHMMSSZ.sqlite or .pgdump) into DIR "
    "instead of FILE.",
)
@click.option(
    "--keep",
    type=click.IntRange(1, 10000),
    default=None,
    metavar="N",
    help="With --dir: keep the newest N dated copies, remove older ones.",
)
def backup(site: Site, file, directory, keep):
    """A consistent copy of the store, made while `serve` runs (SQLite: the online backup API;
    PostgreSQL: pg_dump, custom format). The copy's audit chain is verified before it is kept;
    the file is owner-only (0600). Restore it with `lockerctl restore FILE`."""
    from . import backup as bk

    if (file is None) == (directory is None):
        raise UserError("give FILE or --dir DIR (one of them)")
    if keep and directory is None:
        raise UserError("--keep goes with --dir")
    try:
        if directory is not None:
            if not directory.is_dir():
                raise UserError(f"no directory {directory}")
            file = directory / bk.dated_name(site.db)
        count, head = bk.backup(site.db, file)
        removed = bk.prune(directory, keep) if directory is not None and keep else []
    except bk.BackupError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"backup failed: {e.strerror or e}: {e.filename or file}") from None
    click.echo(f"backup {file}: audit trail intact in the copy, {count} entries, head {head}")
    for path in removed:
        click.echo(f"removed old backup {path}")


@cli.command()
@site_options
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def restore(site: Site, file):
    """Fill an EMPTY database (--db) from a backup FILE, bring its schema up to date and verify
    its audit trail. A database that holds anything (lockers, people, events, users, trail) is
    refused: restore into a new one, then point `serve` at it."""
    from . import backup as bk

    try:
        count, head, applied = bk.restore(file, site.db)
    except bk.BackupError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"restore failed: {e.strerror or e}") from None
    if applied:
        click.echo(f"migrations applied: {', '.join(applied)}")
    click.echo(f"restored {file}: audit trail intact, {count} entries, head {head}")
