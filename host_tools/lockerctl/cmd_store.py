"""The store's commands: export, audit verify, roster, locker add/list, timetable, card revoke,
grant (docs/cli.md). Every change is one transaction with its trail entry and a new configuration
version, so `serve` republishes the lockers' configuration."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import IO

import click

from .clibase import (
    UserError,
    actor,
    broker_options,
    cli,
    open_store,
    printable,
    site_options,
)
from .store import PERSON_ID_RE, StoreError, mask_uid

MAX_BAYS = 64
DEFAULT_CONTROL_PORT_BASE = 7100


@contextmanager
def _store(site):
    st = open_store(site)
    try:
        yield st
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        st.close()


def _check_person_id(value: str, what: str) -> str:
    if not PERSON_ID_RE.match(value or ""):
        raise UserError(f"{what} {value!r} is not a person id (1-28 of A-Z a-z 0-9 . _ -)")
    return value


@contextmanager
def _output(path: str | None, binary: bool = False, private: bool = False):
    """stdout, or a file written whole: a temporary file renamed over FILE at the end, so a
    failure leaves no half-written file."""
    if path is None or path == "-":
        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise UserError(f"cannot write {path}: no directory {directory}")
    fd, tmp = tempfile.mkstemp(prefix=".lockerctl-", dir=directory)
    try:
        if not private:
            os.chmod(tmp, 0o644 & ~_umask())
        f: IO = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        with f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _progress(label: str, length: int):
    """A progress bar on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    return click.progressbar(length=length, label=label, file=sys.stderr)


def _local(ts, tz: str) -> str:
    from .display import invalid_time, local_datetime

    if ts is None:
        return ""
    when = local_datetime(ts, tz)
    return invalid_time(ts) if when is None else when.isoformat(timespec="minutes")


# -- export -------------------------------------------------------------------------------------


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
    with _store(site) as st:
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
            bar = _progress("exporting", st.count_events(site.site, start, end, locker, person))
        with _output(output, binary=(fmt == "xlsx")) as out:
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
            with _output(output + ".checkpoint") as f:
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
    from .store_exceptions import action_rows

    return action_rows(st, site, start, end, person)


# -- audit --------------------------------------------------------------------------------------


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
    from . import checkpoint as cp
    from .trail import Broken

    notes = []  # (where, note text, locker row or None)
    for path in checkpoint_files:
        try:
            with open(path, encoding="utf-8") as f:
                notes.append((path, f.read(4 * cp.MAX_NOTE_BYTES), None))
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--checkpoint {path}: {getattr(e, 'strerror', None) or e}") from None
    with _store(site) as st:
        if vkey:
            try:
                _, public = cp.parse_verifier_key(vkey)
            except cp.CheckpointError as e:
                raise UserError(f"--key: {e}") from None
        else:
            public = st.host_public_key(cp.KEY)
        lockers = list(st.lockers(site.site))
        source, states = _locker_states(site, st, lockers, no_broker)
        held = []
        for row in lockers:
            state = states.get(row.id)
            checkpoint = state.get("checkpoint") if isinstance(state, dict) else None
            if isinstance(checkpoint, dict) and isinstance(checkpoint.get("note"), str):
                held.append((row.id, checkpoint))
                notes.append((f"locker {row.id}", checkpoint["note"], row))
        if notes and public is None:
            raise UserError("checkpoints given, but the store has no checkpoint key (--key?)")
        checked, report, failures = [], [], []
        for where, note, row in notes:
            try:
                checked.append((where, cp.verify(note, public)))
            except cp.CheckpointError as e:
                if row is None:  # a file the user named: its signature must hold
                    raise UserError(f"{where}: not a valid checkpoint: {e}") from None
                report.append(
                    f"{where}: holds a checkpoint not signed by this host: ignored ({e})"
                )
        bar = _progress("verifying", st.trail_count()) if sys.stderr.isatty() else None
        sizes = [c.size for _, c in checked]
        try:
            if bar is None:
                count, head, heads = st.verify_trail_at(sizes)
            else:
                with bar:
                    count, head, heads = st.verify_trail_at(sizes, progress=bar.update)
        except Broken as e:
            raise UserError(f"audit trail broken: {e}") from None
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
        for locker_id, checkpoint in held:
            acked = checkpoint.get("acked")
            if (
                isinstance(acked, int)
                and acked > 0
                and st.highest_seq(site.site, locker_id) < acked
            ):
                failures.append(
                    f"locker {locker_id}: acknowledged events up to seq {acked}, but the store"
                    " holds no journal of it reaching that seq (events deleted)"
                )
    if failures:
        for line in report + failures[1:]:
            click.echo(line, err=True)
        raise UserError(f"audit trail incomplete: {failures[0]}")
    click.echo(f"audit trail intact: {count} entries, head {head}")
    if lockers:
        click.echo(f"lockers' checkpoints read from {source}")
        for locker_id in sorted({r.id for r in lockers} - {lid for lid, _ in held}):
            click.echo(f"locker {locker_id}: holds no checkpoint")
    for line in report:
        click.echo(line)


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

    with _store(site) as st:
        _, public = cp.host_key(st, site.site)
    click.echo(cp.verifier_key(cp.origin(site.site), public))
    click.echo(f"ed25519 {public.hex()}")


# -- roster -------------------------------------------------------------------------------------


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
    with _store(site) as st:
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

    with _store(site) as st:
        rows = st.roster(site.site)
    with _output(output) as out:
        write_roster(rows, out)


# -- lockers ------------------------------------------------------------------------------------


@cli.group("locker")
def locker():
    """The site's locker banks."""


def _new_secret() -> bytes:
    try:
        from .keys import new_secret
    except ImportError:
        return secrets.token_bytes(32)
    s = new_secret()
    return bytes.fromhex(s) if isinstance(s, str) else bytes(s)


@locker.command("add")
@click.argument("locker_id", metavar="ID")
@click.option(
    "--bays",
    type=click.IntRange(1, MAX_BAYS),
    default=8,
    show_default=True,
    help="Number of bays.",
)
@click.option(
    "--board",
    type=click.Choice(["sim", "esp32"]),
    default="sim",
    show_default=True,
    help="Board: the simulated one (unix port) or an ESP32.",
)
@click.option(
    "--broker",
    default=None,
    help="Broker HOST:PORT the locker connects to [$LOCKER_BROKER, or the address `broker "
    "config` recorded (with its TLS), or 127.0.0.1:1883].",
)
@click.option(
    "--control-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="The simulated board's control port [the first from 7101 that no locker of the site "
    "uses and nothing listens on].",
)
@click.option(
    "--data-dir",
    default=None,
    help="The locker's data directory [sim: lockers/ID next to a SQLite database; esp32: var/ID].",
)
@click.option("--wifi-ssid", default=None, help="ESP32: the school network the locker joins.")
@click.option("--wifi-password", default=None, help="ESP32: that network's password.")
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE",
    help="Write device.json to FILE (owner-only) instead of standard output.",
)
@site_options
def locker_add(
    site, locker_id, bays, board, broker, control_port, data_dir, wifi_ssid, wifi_password, output
):
    """Register locker ID and print its device.json (secret and broker credentials included)."""
    if not PERSON_ID_RE.match(locker_id):
        raise UserError(f"locker id {locker_id!r}: use 1-28 of A-Z a-z 0-9 . _ -")
    if (wifi_ssid is None) != (wifi_password is None):
        raise UserError("--wifi-ssid and --wifi-password go together")
    from .clibase import device_address
    from .sitesettings import default_data_dir, free_control_port

    secret = _new_secret()
    password = secrets.token_urlsafe(24)
    with _store(site) as st:
        host, port, tls = device_address(st, site.site, broker)
        if control_port is None:
            taken = {r.control_port for r in st.lockers(site.site) if r.control_port}
            control_port = free_control_port(taken, DEFAULT_CONTROL_PORT_BASE + 1)
        if data_dir is None:
            data_dir = (
                default_data_dir(site.db, locker_id) if board == "sim" else f"var/{locker_id}"
            )
        st.add_locker(
            site.site,
            locker_id,
            bays,
            secret,
            password,
            board=board,
            control_port=control_port,
            data_dir=data_dir,
            actor=actor(),
        )
    device = {
        "locker_id": locker_id,
        "site": site.site,
        "board": board,
        "bays": bays,
        "broker": {
            "host": host,
            "port": port,
            "user": locker_id,
            "password": password,
            "tls": tls,
        },
        "secret": secret.hex(),
        "data_dir": data_dir,
        "sim": {"control_port": control_port},
    }
    if tls:  # the site CA's certificate, copied onto the board next to device.json
        device["broker"]["ca"] = "ca.crt"
    if wifi_ssid is not None:
        device["wifi"] = {"ssid": wifi_ssid, "password": wifi_password}
    with _output(output, private=True) as out:
        out.write(json.dumps(device, indent=2) + "\n")
    _broker_hint(site)


def _broker_hint(site) -> None:
    """After a locker is added: the broker needs its account (when `broker config` ran)."""
    from .sitesettings import remembered

    with _store(site) as st:
        directory = remembered(st, site.site).get("broker.dir")
    if directory:
        click.echo(
            f"next: lockerctl broker config {directory}, then reload the broker "
            "(systemctl reload classlocker-broker, or kill -HUP its pid)",
            err=True,
        )


@locker.command("list")
@site_options
def locker_list(site):
    """The site's lockers: bays, board, online, last seen, configuration, pending events, and
    each one's health: firmware version (and an offered one with progress), uptime, reset cause,
    heap low-water mark, journal fill, Wi-Fi signal, clock offset, then its warnings
    (docs/fleet.md)."""
    from . import fleet, store_fleet
    from .display import read_state

    with _store(site) as st:
        rows = st.lockers(site.site)
        tz = st.timezone(site.site)
        clocks = st.clock_offsets(site.site)
        boots = store_fleet.recent_boots(
            st, site.site, int(time.time()) - fleet.RESET_LOOP_WINDOW_S
        )
    table = [
        (
            "locker", "bays", "board", "online", "last_seen", "config", "pending", "version",
            "uptime", "reset", "heap_low", "journal", "rssi", "clock", "warnings",
        )
    ]  # fmt: skip
    for r in rows:
        state = read_state(r.state)
        h = fleet.health(r.state, (clocks.get(r.id) or (None,))[0], boots.get(r.id, 0))
        online = {True: "yes", False: "no"}.get(r.online, "never")
        version = h.version or "-"
        if h.offered:
            version += f" ({h.offered} {h.progress or 0:.0%})"
        table.append(
            (
                r.id,
                str(r.bays),
                r.board,
                online,
                _local(r.last_seen, tz) or "-",
                "unreadable" if state.unreadable else str(_dash(state.config)),
                "unreadable" if state.unreadable else str(_dash(state.pending)),
                version,
                "-" if h.uptime_s is None else _duration(h.uptime_s),
                h.reset_cause or "-",
                "-" if h.heap_low is None else f"{h.heap_low // 1024} KB",
                "-" if h.journal_fill is None else f"{h.journal_fill:.0%}",
                "-" if h.rssi is None else f"{h.rssi} dBm",
                "-" if h.clock_offset_s is None else f"{h.clock_offset_s:+.0f} s",
                "; ".join(h.warnings) or "-",
            )
        )
    _print_table(table)


def _duration(seconds: int) -> str:
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def _dash(value):
    return "-" if value is None else value


def _print_table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


# -- timetable ----------------------------------------------------------------------------------


@cli.group("timetable")
def timetable():
    """The site's timetable (school day, contact periods, terms)."""


@timetable.command("set")
@click.argument("file", type=click.Path(dir_okay=False))
@site_options
def timetable_set(site, file):
    """Set the site's timetable from FILE.toml (validated first; nothing changes on an error)."""
    from .timetable import compile_timetable, parse_timetable

    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"cannot read {file}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None
    parsed = parse_timetable(text, file)  # TimetableError is a one-line UserError
    try:
        compile_timetable(parsed, int(time.time()))
    except (ValueError, KeyError) as e:
        raise UserError(f"{file}: cannot compile the timetable: {e}") from None
    with _store(site) as st:
        version = st.set_timetable(site.site, text, parsed, parsed["timezone"], actor=actor())
    click.echo(
        f"timetable set for site {site.site} ({parsed['timezone']}); config version {version}"
    )


@timetable.command("show")
@site_options
def timetable_show(site):
    """Print the site's timetable as it was set (TOML)."""
    with _store(site) as st:
        row = st.timetable(site.site)
    if row is None:
        raise UserError(f"no timetable set for site {site.site} (lockerctl timetable set FILE)")
    click.echo(row.source, nl=not row.source.endswith("\n"))


# -- cards --------------------------------------------------------------------------------------


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

    _check_person_id(person_id, "person")
    if uid is not None:
        try:
            uid = normalise_uid(uid)
        except ValueError as e:
            raise UserError(f"--card: {e}") from None
    with _store(site) as st:
        if st.person(site.site, person_id, include_inactive=True) is None:
            raise UserError(f"{person_id} is not on the roster of site {site.site}")
        n = st.revoke_cards(site.site, person_id, uid, actor=actor())
    what = f"card {mask_uid(uid)}" if uid else f"{n} card{'s' if n != 1 else ''}"
    if n:
        click.echo(f"revoked {what} of {person_id}")
    else:
        click.echo(f"{person_id}: {'card ' + mask_uid(uid) if uid else 'cards'} already revoked")


# -- grants -------------------------------------------------------------------------------------


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


def parse_when(text: str, tz: str, option: str) -> int:
    """Unix seconds of an ISO 8601 date-time in the years 2000-2100; without an offset it is the
    site's local time, and must exist that day (not in the hour the clocks go forward)."""
    from .bounds import BoundError, parse_local_datetime

    try:
        return parse_local_datetime(text, tz, option)
    except BoundError as e:
        raise UserError(str(e)) from None


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
    _check_person_id(person_id, "person")
    _check_person_id(by, "--by")
    from .bounds import BoundError, check_text

    reason = (reason or "").strip()
    if not reason:
        raise UserError("--reason must not be empty")
    try:
        check_text(reason, "--reason", 200)
    except BoundError as e:
        raise UserError(str(e)) from None
    with _store(site) as st:
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
        f"grant {gid}: {person_id} from {_local(start, tz)} until {_local(end, tz)} "
        f"at {locker or 'every locker'}, by {by}"
    )


@grant.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include ended and revoked grants.")
@site_options
def grant_list(site, show_all):
    """The site's grants that have not ended (all of them with --all)."""
    now = int(time.time())
    with _store(site) as st:
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
                _local(g.from_ts, tz),
                _local(g.until_ts, tz),
                g.by,
                status,
                g.reason,
            )
        )
    _print_table(table)


@grant.command("revoke")
@click.argument("grant_id", metavar="ID", type=int)
@site_options
def grant_revoke(site, grant_id):
    """Revoke grant ID on every locker."""
    with _store(site) as st:
        st.revoke_grant(site.site, grant_id, actor=actor())
    click.echo(f"grant {grant_id} revoked")
