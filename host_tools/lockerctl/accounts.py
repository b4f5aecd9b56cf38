"""Dashboard accounts: users and roles, password hashing, sessions, CSRF tokens, login rate
limiting and alert acknowledgements.

Passwords are hashed with scrypt (memory-hard; `hashlib.scrypt`, N=2**14, r=8, p=1: 16 MiB and
tens of milliseconds per guess) and stored as `scrypt$N$r$p$salt$hash` (base64), so the cost can
be raised later without breaking old hashes. A session is a random token in an HttpOnly,
SameSite=Strict cookie; the store keeps only its SHA-256, with the session's CSRF token and
expiry. Sign-in attempts are counted in memory (the dashboard is one process) per username and
client address and per address, before the password is hashed (`LoginLimiter`); past the limit,
that address's sign-ins for that user are refused until the window has passed.

The `users` table is part of the store's initial schema; sessions and acknowledgements come with
the revision `0002_dashboard` (lockerctl/migrations).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

from .store import PERSON_ID_RE, StoreError
from .store import accounts as rows
from .store.accounts import SSO_PASSWORD_HASH

ACCOUNT_ROLES = ("office", "slt", "admin")
USERNAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}\Z")
# An account that signs in with the school's OpenID Connect provider (`lockerctl user add EMAIL
# --sso`) has no local password: `SSO_PASSWORD_HASH` stands in its `password_hash`, and no password
# ever verifies against it (it is not an `scrypt$...` hash). Its username is the e-mail address, in
# lower case; the provider's verified `email` claim is matched against it, case-insensitively.
EMAIL_RE = re.compile(r"[a-z0-9._%+'-]{1,64}@[a-z0-9-]+(\.[a-z0-9-]+)+\Z")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
SESSION_SECONDS = 12 * 3600

# scrypt cost: 128 * r * N bytes of memory = 16 MiB.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


# -- passwords ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash` for `password` with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=32,
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches the stored hash (constant-time compare)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        salt_b, digest_b = base64.b64decode(salt), base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=salt_b,
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(digest_b),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, digest_b)


# A hash to check against when the username is unknown, so both cases take as long.
_DUMMY_HASH = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(8))
    return _DUMMY_HASH


def check_username(username: str) -> str:
    if not USERNAME_RE.match(username or ""):
        raise StoreError(f"username {username!r}: use 1-64 of A-Z a-z 0-9 . _ @ -")
    return username


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise StoreError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise StoreError(f"password too long: at most {MAX_PASSWORD} characters")
    return password


# -- users and sessions ---------------------------------------------------------------------------


def check_email(email: str) -> str:
    """The address in lower case; StoreError if it is not one (or longer than 64 characters,
    the username column's width)."""
    address = (email or "").strip().lower()
    if len(address) > 64 or not EMAIL_RE.match(address):
        raise StoreError(f"{email!r} is not an e-mail address of at most 64 characters")
    return address


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    person_id: str | None
    sso: bool = False


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_at: int


def _user(row) -> User:
    sso = getattr(row, "password_hash", None) == SSO_PASSWORD_HASH
    return User(row.id, row.username, row.role, row.person_id, sso)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """Users, sessions and acknowledgements of one site, in the store."""

    def __init__(self, store, site: str):
        self.store = store
        self.site = site

    # users

    def add_user(
        self,
        username: str,
        role: str,
        password: str,
        person_id: str | None = None,
        actor: str = "lockerctl",
    ) -> User:
        """Creates an account; StoreError (nothing changed) for a bad value or a taken name."""
        check_username(username)
        if role not in ACCOUNT_ROLES:
            raise StoreError(f"role {role!r} must be one of {', '.join(ACCOUNT_ROLES)}")
        if person_id is not None and not PERSON_ID_RE.match(person_id):
            raise StoreError(f"person {person_id!r}: use 1-28 of A-Z a-z 0-9 . _ -")
        check_password(password)
        pw_hash = hash_password(password)
        uid = rows.add_user(self.store, self.site, username, pw_hash, role, person_id, actor)
        return User(uid, username, role, person_id)

    def add_sso_user(
        self, email: str, role: str, person_id: str | None = None, actor: str = "lockerctl"
    ) -> User:
        """An account with no local password that signs in with the school's OpenID Connect
        provider as `email` (see `SSO_PASSWORD_HASH`). StoreError (nothing changed) for a bad
        value or an address that already has an account."""
        address = check_email(email)
        if role not in ACCOUNT_ROLES:
            raise StoreError(f"role {role!r} must be one of {', '.join(ACCOUNT_ROLES)}")
        if person_id is not None and not PERSON_ID_RE.match(person_id):
            raise StoreError(f"person {person_id!r}: use 1-28 of A-Z a-z 0-9 . _ -")
        uid = rows.add_user(
            self.store, self.site, address, SSO_PASSWORD_HASH, role, person_id, actor
        )
        return User(uid, address, role, person_id, True)

    def sso_user(self, email: str) -> User | None:
        """The single sign-on account of `email` (any case), or None."""
        address = (email or "").strip().lower()
        if not address:
            return None
        row = rows.sso_user(self.store, self.site, address)
        return _user(row) if row else None

    def users(self) -> list[User]:
        return [_user(r) for r in rows.enabled_users(self.store, self.site)]

    def user(self, username: str) -> User | None:
        row = rows.enabled_user(self.store, self.site, username)
        return _user(row) if row else None

    def remove_user(self, username: str, actor: str = "lockerctl") -> None:
        """Deletes the account and ends its sessions; StoreError if there is no such user."""
        rows.remove_user(self.store, self.site, username, actor)

    def set_password(self, username: str, password: str, actor: str = "lockerctl") -> None:
        check_password(password)
        pw_hash = hash_password(password)
        rows.set_password_hash(self.store, self.site, username, pw_hash, actor)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password is right, else None (same work either way)."""
        row = rows.enabled_user(self.store, self.site, username)
        ok = verify_password(password, row.password_hash if row else _dummy_hash())
        return _user(row) if (row is not None and ok) else None

    # sessions

    def create_session(self, user: User, now: int | None = None) -> tuple[str, Session]:
        """(cookie token, session): a new session for `user`."""
        now = int(time.time()) if now is None else now
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + SESSION_SECONDS
        rows.add_session(self.store, self.site, user.id, _token_hash(token), csrf, now, expires)
        return token, Session(user, csrf, expires)

    def session(self, token: str | None, now: int | None = None) -> Session | None:
        """The live session of a cookie token, or None."""
        if not token or len(token) > 200:
            return None
        now = int(time.time()) if now is None else now
        row = rows.live_session(self.store, self.site, _token_hash(token), now)
        if row is None:
            return None
        return Session(_user(row), row.csrf, row.expires_at)

    def end_session(self, token: str) -> None:
        rows.end_session(self.store, _token_hash(token))

    # alert acknowledgements

    def acknowledge(self, alert: str, username: str, detail: dict | None = None) -> bool:
        """Records that `username` acknowledged `alert`; False if it already was."""
        return rows.acknowledge(self.store, self.site, alert, username, detail)

    def acknowledgements(self) -> dict[str, tuple[str, int]]:
        """{alert: (username, at)} for the site."""
        return rows.acknowledgements(self.store, self.site)

    def forget_acknowledgements(self, alerts) -> None:
        """Drops acknowledgements of conditions that have cleared (so a recurrence shows)."""
        alerts = list(alerts)
        if alerts:
            rows.forget_acknowledgements(self.store, self.site, alerts)


# -- login rate limiting --------------------------------------------------------------------------


class RateLimiter:
    """At most `limit` failures per key in `window` seconds; then `blocked(key)` says how long to
    wait. Thread-safe, in memory."""

    def __init__(self, limit: int, window: float, clock=time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._fails: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._fails.get(key, ()) if now - t < self.window]
        if times:
            self._fails[key] = times
        else:
            self._fails.pop(key, None)
        return times

    def blocked(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[-self.limit] + self.window - now)

    def fail(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            self._recent(key, now)
            self._fails.setdefault(key, []).append(now)
            if len(self._fails) > 10000:  # bound memory under a spray of usernames
                for k in list(self._fails)[:1000]:
                    del self._fails[k]

    def reset(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)

    def forget_last(self, key: str) -> None:
        """Takes back the latest failure counted for `key`."""
        with self._lock:
            times = self._fails.get(key)
            if times:
                times.pop()
                if not times:
                    del self._fails[key]

    def count(self, key: str) -> int:
        with self._lock:
            return len(self._recent(key, self.clock()))


class LoginLimiter:
    """Sign-in attempts, counted before the password is checked (docs/security.md).

    `begin(username, client)` atomically counts an attempt against the pair (username, client
    address) and against the address alone, or says how long to wait when either is at its limit
    (`per_pair` failures of the pair, `per_client` of the address, in `window` seconds). An
    attempt that turns out right is taken back (`succeeded`); a wrong one stays counted and
    `delay(...)` says how long to hold its answer (longer with each failure). Only the address
    that has been failing is blocked for that user: the right password from any other address
    still signs in, so a stranger cannot lock an account out.
    """

    def __init__(
        self,
        per_pair: int = 5,
        per_client: int = 30,
        window: float = 900,
        clock=time.monotonic,
    ):
        self.pairs = RateLimiter(per_pair, window, clock)
        self.clients = RateLimiter(per_client, window, clock)
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, client: str) -> tuple[str, str]:
        return f"{username.lower()}\0{client}", client

    def begin(self, username: str, client: str) -> float:
        """0 when the attempt may go on (it is counted now), else the seconds to wait."""
        pair, addr = self._keys(username, client)
        with self._lock:
            wait = max(self.pairs.blocked(pair), self.clients.blocked(addr))
            if wait:
                return max(wait, 1.0)
            self.pairs.fail(pair)
            self.clients.fail(addr)
            return 0.0

    def succeeded(self, username: str, client: str) -> None:
        """The attempt was right: the pair's failures are forgotten, the address's attempt
        taken back."""
        pair, addr = self._keys(username, client)
        with self._lock:
            self.pairs.reset(pair)
            self.clients.forget_last(addr)

    def failures(self, username: str, client: str) -> int:
        pair, _ = self._keys(username, client)
        return self.pairs.count(pair)

    @staticmethod
    def delay(failures: int) -> float:
        """Seconds to hold the answer to the `failures`-th wrong password in a row."""
        return min(0.1 * 2 ** max(failures - 1, 0), 2.0)
