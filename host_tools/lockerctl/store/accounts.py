"""The dashboard's accounts in the store (`users`, `web_sessions`, `alert_acks`; migration
`0002_dashboard`): the rows `lockerctl.accounts.Accounts` reads and writes. Validation, password
hashing and what a session is stay there; each change here is one transaction with its trail
entry.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from .chain import _append_action
from .engine import StoreError, ensure_site
from .tables import alert_acks, users, web_sessions

# An account that signs in with the school's OpenID Connect provider has no local password: this
# marker stands in its `password_hash`, and no password ever verifies against it.
SSO_PASSWORD_HASH = "sso"


# -- users ----------------------------------------------------------------------------------------


def add_user(
    store, site: str, username: str, password_hash: str, role: str, person_id, actor: str
) -> int:
    """Inserts an account (`password_hash` SSO_PASSWORD_HASH: a single sign-on one, whose name
    is taken in any case); its id. StoreError (nothing changed) if the name is taken."""
    sso = password_hash == SSO_PASSWORD_HASH
    name = sa.func.lower(users.c.username) if sso else users.c.username
    with store._write() as conn:
        ensure_site(conn, site)
        if conn.execute(
            sa.select(users.c.id).where(users.c.site == site, name == username)
        ).first():
            raise StoreError(f"user {username} already exists at site {site}")
        uid = conn.execute(
            users.insert().values(
                site=site,
                username=username,
                password_hash=password_hash,
                role=role,
                person_id=person_id,
                created_at=int(time.time()),
                disabled=False,
            )
        ).inserted_primary_key[0]
        detail = {"username": username, "role": role, "person": person_id}
        _append_action(conn, site, actor, "user_add", {**detail, "sso": True} if sso else detail)
    return uid


def sso_user(store, site: str, address: str):
    """The enabled single sign-on account row whose name is `address` in any case, or None."""
    with store._read() as conn:
        return conn.execute(
            sa.select(users).where(
                users.c.site == site,
                sa.func.lower(users.c.username) == address,
                users.c.password_hash == SSO_PASSWORD_HASH,
                users.c.disabled.is_(False),
            )
        ).first()


def enabled_users(store, site: str) -> list:
    with store._read() as conn:
        return list(
            conn.execute(
                sa.select(users)
                .where(users.c.site == site, users.c.disabled.is_(False))
                .order_by(users.c.username)
            ).all()
        )


def enabled_user(store, site: str, username: str):
    """The enabled account row of `username`, or None."""
    with store._read() as conn:
        return conn.execute(
            sa.select(users).where(
                users.c.site == site,
                users.c.username == username,
                users.c.disabled.is_(False),
            )
        ).first()


def remove_user(store, site: str, username: str, actor: str) -> None:
    """Deletes the account and ends its sessions; StoreError if there is no such user."""
    with store._write() as conn:
        row = conn.execute(
            sa.select(users.c.id).where(users.c.site == site, users.c.username == username)
        ).first()
        if row is None:
            raise StoreError(f"no user {username} at site {site}")
        conn.execute(web_sessions.delete().where(web_sessions.c.user_id == row.id))
        conn.execute(users.delete().where(users.c.id == row.id))
        _append_action(conn, site, actor, "user_remove", {"username": username})


def set_password_hash(store, site: str, username: str, password_hash: str, actor: str) -> None:
    """Replaces the account's password hash and ends its sessions; StoreError if there is no
    such user or it signs in with the school account."""
    with store._write() as conn:
        row = conn.execute(
            sa.select(users.c.id, users.c.password_hash).where(
                users.c.site == site, users.c.username == username
            )
        ).first()
        if row is None:
            raise StoreError(f"no user {username} at site {site}")
        if row.password_hash == SSO_PASSWORD_HASH:
            raise StoreError(
                f"{username} signs in with the school account (--sso): it has no password"
            )
        conn.execute(
            users.update().where(users.c.id == row.id).values(password_hash=password_hash)
        )
        conn.execute(web_sessions.delete().where(web_sessions.c.user_id == row.id))
        _append_action(conn, site, actor, "user_password", {"username": username})


# -- sessions -------------------------------------------------------------------------------------


def add_session(
    store, site: str, user_id: int, token_hash: str, csrf: str, now: int, expires_at: int
) -> None:
    """Stores a new session (and drops the expired ones)."""
    with store._write() as conn:
        conn.execute(web_sessions.delete().where(web_sessions.c.expires_at < now))
        conn.execute(
            web_sessions.insert().values(
                token_hash=token_hash,
                site=site,
                user_id=user_id,
                csrf=csrf,
                created_at=now,
                expires_at=expires_at,
            )
        )


def live_session(store, site: str, token_hash: str, now: int):
    """(csrf, expires_at, id, username, role, person_id) of the live session with this token
    hash, whose account is enabled, or None."""
    s, u = web_sessions, users
    with store._read() as conn:
        return conn.execute(
            sa.select(s.c.csrf, s.c.expires_at, u.c.id, u.c.username, u.c.role, u.c.person_id)
            .select_from(s.join(u, u.c.id == s.c.user_id))
            .where(
                s.c.token_hash == token_hash,
                s.c.site == site,
                s.c.expires_at > now,
                u.c.disabled.is_(False),
            )
        ).first()


def end_session(store, token_hash: str) -> None:
    with store._write() as conn:
        conn.execute(web_sessions.delete().where(web_sessions.c.token_hash == token_hash))


# -- alert acknowledgements -----------------------------------------------------------------------


def acknowledge(store, site: str, alert: str, username: str, detail: dict | None) -> bool:
    """Records that `username` acknowledged `alert`; False if it already was."""
    with store._write() as conn:
        if conn.execute(
            sa.select(alert_acks.c.alert).where(
                alert_acks.c.site == site, alert_acks.c.alert == alert
            )
        ).first():
            return False
        conn.execute(
            alert_acks.insert().values(site=site, alert=alert, by=username, at=int(time.time()))
        )
        _append_action(
            conn, site, f"web:{username}", "alert_ack", {"alert": alert, **(detail or {})}
        )
    return True


def acknowledgements(store, site: str) -> dict[str, tuple[str, int]]:
    """{alert: (username, at)} for the site."""
    with store._read() as conn:
        rows = conn.execute(sa.select(alert_acks).where(alert_acks.c.site == site))
        return {r.alert: (r.by, r.at) for r in rows}


def forget_acknowledgements(store, site: str, alerts: list[str]) -> None:
    with store._write() as conn:
        conn.execute(
            alert_acks.delete().where(alert_acks.c.site == site, alert_acks.c.alert.in_(alerts))
        )
