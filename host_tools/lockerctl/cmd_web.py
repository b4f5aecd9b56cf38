"""`lockerctl user add|list|remove|passwd`: the dashboard's accounts, and `lockerctl token
add|list|revoke`: their API tokens (docs/dashboard.md)."""

from __future__ import annotations

import sys

import click

from .clibase import UserError, actor, cli, open_store, site_options


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        try:
            data = sys.stdin.readline()
            data.encode("utf-8")  # bytes that were not UTF-8 come as surrogates
        except UnicodeError:
            raise UserError("the password on standard input is not UTF-8 text") from None
        password = data[:-1] if data.endswith("\n") else data
        if password.endswith("\r"):
            password = password[:-1]
        if not password:
            raise UserError("no password on standard input (--password-stdin reads one line)")
        return password
    if not sys.stdin.isatty():
        raise UserError("give the password on standard input with --password-stdin")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _accounts(site):
    from .accounts import Accounts

    store = open_store(site)
    return store, Accounts(store, site.site)


@cli.group("user")
def user():
    """Dashboard accounts (office, slt, admin)."""


@user.command("add")
@click.argument("username")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["office", "slt", "admin"]),
    help="office: lockers, alerts, opens; slt: also grants and the trail; admin: "
    "also roster, timetable, lockers, users and exports.",
)
@click.option(
    "--person",
    "person_id",
    default=None,
    metavar="PERSON_ID",
    help="The roster person this account acts as (the `by` of opens and grants).",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input.",
)
@click.option(
    "--sso",
    is_flag=True,
    help="USERNAME is an e-mail address that signs in with the school's account (OpenID "
    "Connect, `serve --oidc-issuer`): no local password.",
)
@site_options
def user_add(site, username, role, person_id, password_stdin, sso):
    """Create dashboard account USERNAME with ROLE (password: 8 characters or more), or with
    --sso the account of a school e-mail address that signs in with the school's provider."""
    from .accounts import check_password, check_username
    from .store import StoreError

    if sso:
        if password_stdin:
            raise UserError("--sso accounts have no password: leave out --password-stdin")
        _add_sso(site, username, role, person_id)
        return
    try:
        check_username(username)
    except StoreError as e:
        raise UserError(str(e)) from None
    password = _read_password(password_stdin)
    try:
        check_password(password)
    except StoreError as e:
        raise UserError(str(e)) from None
    store, accounts = _accounts(site)
    try:
        accounts.add_user(username, role, password, person_id, actor=actor())
        known = person_id is None or store.person(site.site, person_id) is not None
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        store.close()
    click.echo(f"user {username} added ({role}{', person ' + person_id if person_id else ''})")
    if not known:
        click.echo(
            f"lockerctl: note: {person_id} is not on the roster yet; opens and grants "
            "need a person on the roster",
            err=True,
        )


def _add_sso(site, email, role, person_id):
    from .store import StoreError

    store, accounts = _accounts(site)
    try:
        user = accounts.add_sso_user(email, role, person_id, actor=actor())
        known = person_id is None or store.person(site.site, person_id) is not None
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        store.close()
    who = f", person {person_id}" if person_id else ""
    click.echo(f"user {user.username} added ({role}{who}; signs in with the school account)")
    if not known:
        click.echo(
            f"lockerctl: note: {person_id} is not on the roster yet; opens and grants "
            "need a person on the roster",
            err=True,
        )


@user.command("list")
@site_options
def user_list(site):
    """The site's dashboard accounts."""
    store, accounts = _accounts(site)
    try:
        rows = accounts.users()
    finally:
        store.close()
    table = [("username", "role", "person", "sign-in")]
    table += [
        (u.username, u.role, u.person_id or "-", "sso" if u.sso else "password") for u in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@user.command("remove")
@click.argument("username")
@site_options
def user_remove(site, username):
    """Delete account USERNAME and end its sessions."""
    from .store import StoreError
    from .store import tokens as store_tokens

    store, accounts = _accounts(site)
    try:
        accounts.remove_user(username, actor=actor())
        store_tokens.drop_tokens_of(store, site.site, username)
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        store.close()
    click.echo(f"user {username} removed")


@user.command("passwd")
@click.argument("username")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the new password from the first line of standard input.",
)
@site_options
def user_passwd(site, username, password_stdin):
    """Set a new password for USERNAME (ends its sessions)."""
    from .store import StoreError

    password = _read_password(password_stdin)
    store, accounts = _accounts(site)
    try:
        accounts.set_password(username, password, actor=actor())
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        store.close()
    click.echo(f"password of {username} changed")


@cli.group("token")
def token():
    """API tokens of dashboard accounts (the JSON API, docs/dashboard.md)."""


@token.command("add")
@click.argument("username")
@click.option("--label", default="", help="What will use the token (64 characters at most).")
@site_options
def token_add(site, username, label):
    """Make an API token for account USERNAME (it acts with the account's role). The token is
    printed once; only its SHA-256 is kept."""
    from .store import StoreError
    from .store import tokens as store_tokens

    store = open_store(site)
    try:
        secret, made = store_tokens.add_token(store, site.site, username, label, actor())
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        store.close()
    click.echo(secret)
    click.echo(f"lockerctl: API token {made.id} for {username} (shown once)", err=True)


@token.command("list")
@click.argument("username", required=False)
@site_options
def token_list(site, username):
    """The API tokens (of USERNAME): id, account, label, when made and last used."""
    from .display import format_ts
    from .store import tokens as store_tokens

    store = open_store(site)
    try:
        rows = store_tokens.tokens(store, site.site, username)
        zone = store.timezone(site.site)
    finally:
        store.close()
    table = [("id", "account", "label", "made", "last used")]
    table += [
        (
            str(t.id),
            t.username,
            t.label,
            format_ts(t.created_at, zone, "minutes"),
            format_ts(t.last_used_at, zone, "minutes") if t.last_used_at else "never",
        )
        for t in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@token.command("revoke")
@click.argument("token_id", type=click.IntRange(1, 2**62))
@site_options
def token_revoke(site, token_id):
    """Revoke API token TOKEN_ID (`lockerctl token list` shows the ids)."""
    from .store import StoreError
    from .store import tokens as store_tokens

    store = open_store(site)
    try:
        store_tokens.revoke_token(store, site.site, token_id, actor())
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        store.close()
    click.echo(f"API token {token_id} revoked")
