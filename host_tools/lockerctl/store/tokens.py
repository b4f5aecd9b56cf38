"""The JSON API's tokens in the store (`api_tokens`, migration `0014_api_tokens`): a token is
shown once when it is made; the store keeps only its SHA-256, its owner's username, a label and
when it was made and last used. Removing the account removes its tokens (`Accounts.remove_user`
ends its sessions; the token lookup also checks the account still exists).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from .engine import StoreError
from .tables import MAX_LABEL, api_tokens, users

TOKEN_PREFIX = "clt_"  # so a leaked token is recognisable (secret scanners, logs)
MAX_TOKENS_PER_ACCOUNT = 20


# -- API tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiToken:
    id: int
    username: str
    label: str
    created_at: int
    created_by: str
    last_used_at: int | None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_row(r) -> ApiToken:
    return ApiToken(r.id, r.username, r.label, r.created_at, r.created_by, r.last_used_at)


def add_token(store, site: str, username: str, label: str, actor: str) -> tuple[str, ApiToken]:
    """A new API token for the account `username`: (the token, shown once; its record).
    StoreError for an unknown account, a bad label or too many tokens."""
    from ..bounds import BoundError, check_text

    label = (label or "").strip() or "API token"
    try:
        check_text(label, "the label", MAX_LABEL)
    except BoundError as err:
        raise StoreError(str(err)) from None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = int(time.time())
    with store._write() as conn:
        if (
            conn.execute(
                sa.select(users.c.id).where(users.c.site == site, users.c.username == username)
            ).first()
            is None
        ):
            raise StoreError(f"no account {username!r}")
        held = conn.execute(
            sa.select(sa.func.count()).where(
                api_tokens.c.site == site, api_tokens.c.username == username
            )
        ).scalar()
        if held >= MAX_TOKENS_PER_ACCOUNT:
            raise StoreError(
                f"{username} already has {MAX_TOKENS_PER_ACCOUNT} API tokens: revoke one first"
            )
        tid = conn.execute(
            api_tokens.insert().values(
                site=site,
                token_hash=_token_hash(token),
                username=username,
                label=label,
                created_at=now,
                created_by=actor[:80],
            )
        ).inserted_primary_key[0]
    store.record_action(
        site, actor, "api_token_add", {"username": username, "token": tid, "label": label}
    )
    return token, ApiToken(tid, username, label, now, actor[:80], None)


def tokens(store, site: str, username: str | None = None) -> list[ApiToken]:
    """The site's API tokens (of one account), oldest first."""
    q = sa.select(api_tokens).where(api_tokens.c.site == site).order_by(api_tokens.c.id)
    if username is not None:
        q = q.where(api_tokens.c.username == username)
    with store._read() as conn:
        return [_token_row(r) for r in conn.execute(q).all()]


def revoke_token(store, site: str, token_id: int, actor: str, username: str | None = None):
    """Deletes token `token_id` (only of `username` when given); StoreError if there is none."""
    with store._write() as conn:
        q = sa.select(api_tokens).where(api_tokens.c.site == site, api_tokens.c.id == token_id)
        if username is not None:
            q = q.where(api_tokens.c.username == username)
        row = conn.execute(q).first()
        if row is None:
            raise StoreError(f"no API token {token_id}")
        conn.execute(api_tokens.delete().where(api_tokens.c.id == token_id))
    store.record_action(
        site, actor, "api_token_revoke", {"username": row.username, "token": token_id}
    )


def token_user(store, site: str, token: str) -> str | None:
    """The username a valid token belongs to (its use is noted, at most once a minute)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = _token_hash(token)
    with store._read() as conn:
        row = conn.execute(
            sa.select(api_tokens.c.id, api_tokens.c.username, api_tokens.c.last_used_at).where(
                api_tokens.c.site == site, api_tokens.c.token_hash == digest
            )
        ).first()
    if row is None:
        return None
    now = int(time.time())
    if row.last_used_at is None or now - row.last_used_at >= 60:
        with store._write() as conn:
            conn.execute(
                api_tokens.update().where(api_tokens.c.id == row.id).values(last_used_at=now)
            )
    return row.username


def drop_tokens_of(store, site: str, username: str) -> int:
    """Deletes every token of `username` (its account is gone); how many."""
    with store._write() as conn:
        return conn.execute(
            api_tokens.delete().where(api_tokens.c.site == site, api_tokens.c.username == username)
        ).rowcount
