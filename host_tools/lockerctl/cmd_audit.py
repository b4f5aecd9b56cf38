"""`lockerctl audit verify` and `audit key`: the trail's hash chain, and the trail against the
signed checkpoints the lockers hold and the ones given as files (docs/cli.md)."""

from __future__ import annotations

import sys

import click

from .clibase import UserError, broker_options, cli, progress_bar, site_options, store_session


@cli.group("audit")
def audit():
    """The tamper-evident audit trail."""


@audit.command("verify")
@broker_options
@click.option(
    "--checkpoint",
    "checkpoint_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also check the trail against this signed checkpoint (e.g. an export's "
    "FILE.checkpoint); repeatable.",
)
@click.option(
    "--key",
    "vkey",
    default=None,
    metavar="VKEY",
    help="The host's checkpoint verifier key (as `audit key` prints it) to check signatures "
    "with, instead of the one in the store.",
)
@click.option(
    "--no-broker",
    is_flag=True,
    help="Read the lockers' checkpoints from the store's last recorded state, not the broker.",
)
def audit_verify(site, checkpoint_files, vkey, no_broker):
    """Check the hash chain over the whole audit trail (every site in the store), and the trail
    against the signed checkpoints the lockers hold and any --checkpoint FILE.

    Each locker keeps the latest checkpoint (entry count and chain hash) the host sent it and
    reports it in its retained `state`: read from the broker when it can be reached, else from
    the state the store last recorded (the output says which). A checkpoint signed by the
    host's key must name an entry the store still has, with that hash: removing the newest
    entries, head and all, is found. Exit 0 printing the number of entries and the head hash
    when everything holds; otherwise exit 1 naming the first bad entry or what is missing.
    """
    notes = _checkpoint_files(checkpoint_files)  # (where, note text, locker row or None)
    with store_session(site) as st:
        public = _verifier_key(st, vkey)
        lockers = list(st.lockers(site.site))
        source, states = _locker_states(site, st, lockers, no_broker)
        held = _held_checkpoints(lockers, states)
        notes += [(f"locker {row.id}", checkpoint["note"], row) for row, checkpoint in held]
        if notes and public is None:
            raise UserError("checkpoints given, but the store has no checkpoint key (--key?)")
        checked, report = _signed_by_host(notes, public)
        count, head, heads = _verify_chain(st, [c.size for _, c in checked])
        failures = _against_checkpoints(checked, count, heads, report)
        failures += _deleted_events(st, site.site, held)
    if failures:
        for line in report + failures[1:]:
            click.echo(line, err=True)
        raise UserError(f"audit trail incomplete: {failures[0]}")
    click.echo(f"audit trail intact: {count} entries, head {head}")
    if lockers:
        click.echo(f"lockers' checkpoints read from {source}")
        for locker_id in sorted({r.id for r in lockers} - {row.id for row, _ in held}):
            click.echo(f"locker {locker_id}: holds no checkpoint")
    for line in report:
        click.echo(line)


def _checkpoint_files(paths) -> list[tuple[str, str, None]]:
    """(path, note text, None) of each --checkpoint FILE."""
    from . import checkpoint as cp

    notes = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                notes.append((path, f.read(4 * cp.MAX_NOTE_BYTES), None))
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--checkpoint {path}: {getattr(e, 'strerror', None) or e}") from None
    return notes


def _verifier_key(st, vkey: str | None) -> bytes | None:
    """The public key checkpoints are checked with: --key, else the store's (None: none)."""
    from . import checkpoint as cp

    if not vkey:
        return st.host_public_key(cp.KEY)
    try:
        return cp.parse_verifier_key(vkey)[1]
    except cp.CheckpointError as e:
        raise UserError(f"--key: {e}") from None


def _held_checkpoints(lockers, states: dict) -> list[tuple]:
    """(locker row, the checkpoint object its state reports) of each locker that holds one."""
    held = []
    for row in lockers:
        state = states.get(row.id)
        checkpoint = state.get("checkpoint") if isinstance(state, dict) else None
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get("note"), str):
            held.append((row, checkpoint))
    return held


def _signed_by_host(notes, public) -> tuple[list, list[str]]:
    """([(where, checkpoint)] of the notes signed by the host's key, report lines for the
    lockers' notes that are not). A file the user named must be signed: UserError."""
    from . import checkpoint as cp

    checked, report = [], []
    for where, note, row in notes:
        try:
            checked.append((where, cp.verify(note, public)))
        except cp.CheckpointError as e:
            if row is None:
                raise UserError(f"{where}: not a valid checkpoint: {e}") from None
            report.append(f"{where}: holds a checkpoint not signed by this host: ignored ({e})")
    return checked, report


def _verify_chain(st, sizes: list[int]) -> tuple[int, str, dict]:
    """(entries, head hash, {size: hash at that size}) of the whole chain; UserError where it
    breaks."""
    from .trail import Broken

    bar = progress_bar("verifying", st.trail_count()) if sys.stderr.isatty() else None
    try:
        if bar is None:
            return st.verify_trail_at(sizes)
        with bar:
            return st.verify_trail_at(sizes, progress=bar.update)
    except Broken as e:
        raise UserError(f"audit trail broken: {e}") from None


def _against_checkpoints(checked, count: int, heads: dict, report: list[str]) -> list[str]:
    """What the trail fails of each checkpoint (its tail cut, or rewritten); a line added to
    `report` for each that holds."""
    failures = []
    for where, c in checked:
        if c.size > count:
            failures.append(
                f"{where}: a checkpoint of {c.size} entries, but the trail has {count}:"
                f" entries {count + 1}..{c.size} are missing (the tail was cut)"
            )
        elif c.size and heads.get(c.size) != c.head:
            failures.append(
                f"{where}: entry {c.size} does not have the hash its checkpoint names:"
                " the trail was rewritten up to there"
            )
        else:
            report.append(f"{where}: checkpoint of {c.size} entries: consistent")
    return failures


def _deleted_events(st, site: str, held) -> list[str]:
    """A locker's checkpoint says which seq the host acknowledged: the store must hold its
    journal up to there."""
    failures = []
    for row, checkpoint in held:
        acked = checkpoint.get("acked")
        if isinstance(acked, int) and acked > 0 and st.highest_seq(site, row.id) < acked:
            failures.append(
                f"locker {row.id}: acknowledged events up to seq {acked}, but the store"
                " holds no journal of it reaching that seq (events deleted)"
            )
    return failures


def _locker_states(site, st, lockers, no_broker) -> tuple[str, dict]:
    """(where from, {locker: state}): the broker's retained `state` messages when it can be
    reached, else the state the store last recorded."""
    recorded = {row.id: row.state for row in lockers}
    if not lockers or no_broker:
        return "the store (last recorded state)", recorded
    from .brokerclient import retained_states

    try:
        got = retained_states(site, st, [row.id for row in lockers])
    except OSError as e:
        return f"the store (last recorded state; broker not reachable: {e})", recorded
    where = f"the broker's retained state ({site.broker_host}:{site.broker_port})"
    missing = [lid for lid in recorded if lid not in got]
    for lid in missing:
        got[lid] = recorded[lid]
    if missing:
        where += f"; from the store for {', '.join(missing)} (nothing retained)"
    return where, got


@audit.command("key")
@site_options
def audit_key(site):
    """Print the public key that signs the trail's checkpoints (a C2SP verifier key, then the
    raw key in hex). Made and kept in the store the first time; the private key never leaves
    the store."""
    from . import checkpoint as cp

    with store_session(site) as st:
        _, public = cp.host_key(st, site.site)
    click.echo(cp.verifier_key(cp.origin(site.site), public))
    click.echo(f"ed25519 {public.hex()}")
