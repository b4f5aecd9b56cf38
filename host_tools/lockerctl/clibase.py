"""The `lockerctl` command group and the options every command shares.

Each area of the host tools defines its commands in its own module and registers them on `cli`
(see `cli.py` for the list). Options follow the command words, as docs/cli.md describes:
`lockerctl export --format csv --db URL`.
"""

import functools
import getpass
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import click

# defined below the CLI (the modules the CLI uses raise it too); imported from here by the cmd_*
from .errors import UserError, UserErrors, printable  # noqa: F401


class _UsageLine(UserError):
    """A usage mistake shown as one line: click's exit code for usage mistakes."""

    exit_code = click.UsageError.exit_code


@dataclass
class Site:
    """What every command knows: where the store is and which site it acts for."""

    db: str
    site: str
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    user: str | None = None
    password: str | None = None
    broker_source: str = "default"  # --broker, $LOCKER_BROKER, remembered (broker config)


def _one_line(e: click.UsageError) -> UserError:
    """A usage mistake (unknown option, bad value for a typed option) as one line, like every
    other failure, instead of click's usage block."""
    path = e.ctx.command_path if e.ctx is not None else "lockerctl"
    message = " ".join(e.format_message().split())
    sub = path.partition(" ")[2]
    return _UsageLine(f"{sub + ': ' if sub else ''}{message} (see {path} --help)")


class OneLineGroup(click.Group):
    """The root group: usage mistakes anywhere below it are reported in one line (exit 2)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise _one_line(e) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise _one_line(e) from None


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lockerctl")
def cli():
    """Host tools for classlocker: the audit trail, lockers' configuration, remote opens,
    exports and the dashboard."""


def parse_hostport(value: str, default_port: int = 1883) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        host, port = value, str(default_port)
    try:
        return host, int(port)
    except ValueError:
        raise UserError(f"bad address {value!r}: expected HOST:PORT") from None


def device_address(store, site: str, given: str | None, tls_flag: bool = False):
    """(host, port, tls) for a device.json: `--broker` (with `--tls`), else $LOCKER_BROKER, else
    the remembered address (and its TLS, sitesettings.device_broker), else 127.0.0.1:1883."""
    from .sitesettings import DEFAULT_BROKER, device_broker

    text = given or os.environ.get("LOCKER_BROKER")
    if text:
        host, port = parse_hostport(text)
        return host, port, tls_flag
    stored = device_broker(store, site)
    if stored:
        return stored[0], stored[1], stored[2] or tls_flag
    return DEFAULT_BROKER[0], DEFAULT_BROKER[1], tls_flag


def site_options(fn):
    """--db and --site, with LOCKER_DB / LOCKER_SITE as defaults; passes `site: Site`."""

    @click.option(
        "--db",
        "db",
        default=lambda: os.environ.get("LOCKER_DB", "sqlite:///lockers.db"),
        show_default="sqlite:///lockers.db or $LOCKER_DB",
        help="Store URL.",
    )
    @click.option(
        "--site",
        "site_name",
        default=lambda: os.environ.get("LOCKER_SITE", "school"),
        show_default="school or $LOCKER_SITE",
        help="Site name (the MQTT topic root).",
    )
    @functools.wraps(fn)
    def wrapper(*args, db, site_name, **kw):
        return fn(*args, site=Site(db=db, site=site_name), **kw)

    return wrapper


def broker_options(fn):
    """--db, --site, --broker, --user, --password; passes `site: Site` with the broker set."""

    @site_options
    @click.option(
        "--broker",
        default=None,
        show_default="$LOCKER_BROKER, or the address `broker config` recorded, or 127.0.0.1:1883",
        help="MQTT broker HOST:PORT.",
    )
    @click.option(
        "--user",
        default=None,
        help="Broker user (default: the host account recorded by `broker config`).",
    )
    @click.option("--password", default=None, help="Broker password.")
    @functools.wraps(fn)
    def wrapper(*args, site, broker, user, password, **kw):
        resolve_broker(site, broker)
        site.user, site.password = user, password
        return fn(*args, site=site, **kw)

    return wrapper


def resolve_broker(site: Site, given: str | None) -> None:
    """Sets the host's broker address: `--broker`, else $LOCKER_BROKER, else the address
    `broker config` recorded in the store, else 127.0.0.1:1883."""
    if given:
        site.broker_host, site.broker_port = parse_hostport(given)
        site.broker_source = "--broker"
        return
    if os.environ.get("LOCKER_BROKER"):
        site.broker_host, site.broker_port = parse_hostport(os.environ["LOCKER_BROKER"])
        site.broker_source = "$LOCKER_BROKER"
        return
    from .sitesettings import host_broker

    st = open_store(site)
    try:
        stored = host_broker(st, site.site)
        listen = st.settings(site.site).get("broker.listen")
    finally:
        st.close()
    if stored:
        site.broker_host, site.broker_port = stored
        site.broker_source = "recorded by broker config"
    elif listen:  # a TLS-only broker: the host tools speak plain MQTT on loopback
        raise UserError(
            f"the site's broker ({listen}) has no plain listener for the host tools: run "
            "`lockerctl broker config DIR --local-port N` (and reload it), or give --broker"
        )


def actor() -> str:
    """Who a command-line change is recorded as in the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (a container): still say it came from the command line
        return "cli"


def open_store(site: Site):
    """The store named by `--db`, migrated, or a one-line UserError."""
    from .store import Store, StoreError
    from .store.engine import DatabaseError

    try:
        return Store.open(site.db)
    except StoreError as e:
        raise UserError(str(e)) from None
    except DatabaseError as e:
        orig = getattr(e, "orig", None)  # the driver's own error, when there is one
        msg = str(orig if orig is not None else e).splitlines()[0]
        raise UserError(f"cannot open the store {site.db}: {msg}") from None
    except ModuleNotFoundError as e:
        raise UserError(f"cannot open the store {site.db}: missing driver {e.name}") from None


# -- what the commands share ----------------------------------------------------------------------


@contextmanager
def store_session(site: Site):
    """The store for one command, closed at the end; a StoreError raised inside becomes a
    one-line UserError."""
    from .store import StoreError

    st = open_store(site)
    try:
        yield st
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        st.close()


def check_person_id(value: str, what: str) -> str:
    from .store import PERSON_ID_RE

    if not PERSON_ID_RE.match(value or ""):
        raise UserError(f"{what} {value!r} is not a person id (1-28 of A-Z a-z 0-9 . _ -)")
    return value


@contextmanager
def output_file(path: str | None, binary: bool = False, private: bool = False):
    """stdout, or a file written whole: a temporary file renamed over FILE at the end, so a
    failure leaves no half-written file. `private`: owner-only (it holds a secret)."""
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


def progress_bar(label: str, length: int):
    """A progress bar on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    return click.progressbar(length=length, label=label, file=sys.stderr)


def local_time(ts, tz: str) -> str:
    """Unix seconds as the site's local date and time to the minute ("" for None)."""
    from .display import invalid_time, local_datetime

    if ts is None:
        return ""
    when = local_datetime(ts, tz)
    return invalid_time(ts) if when is None else when.isoformat(timespec="minutes")


def print_table(rows) -> None:
    """Rows of text as columns, the first row the header."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def parse_when(text: str, tz: str, option: str) -> int:
    """Unix seconds of an ISO 8601 date-time in the years 2000-2100; without an offset it is the
    site's local time, and must exist that day (not in the hour the clocks go forward)."""
    from .bounds import BoundError, parse_local_datetime

    try:
        return parse_local_datetime(text, tz, option)
    except BoundError as e:
        raise UserError(str(e)) from None
