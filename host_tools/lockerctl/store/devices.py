"""The lockers in the store: their registration, secrets, broker passwords, command counters,
reported status and the clock offsets `serve` measures.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from . import engine
from .chain import _append_action
from .engine import StoreBase, StoreError, ensure_site
from .siteconfig import bump
from .tables import LOCKER_ID_RE, locker_clocks, lockers


class LockersMixin(StoreBase):
    """The lockers' methods of `Store`."""

    _LOCKER_COLS = (
        lockers.c.id,
        lockers.c.bays,
        lockers.c.secret,
        lockers.c.broker_password,
        lockers.c.online,
        lockers.c.last_seen,
        lockers.c.state,
        lockers.c.board,
        lockers.c.cmd_counter,
        lockers.c.control_port,
        lockers.c.data_dir,
        lockers.c.site,
    )

    def lockers(self, site: str) -> list:
        """Rows (id, bays, secret bytes, broker_password, online, last_seen, state dict or None,
        board, cmd_counter, control_port, data_dir, site), ordered by id."""
        with self._read() as conn:
            return conn.execute(
                sa.select(*self._LOCKER_COLS).where(lockers.c.site == site).order_by(lockers.c.id)
            ).all()

    def locker(self, site: str, locker_id: str):
        with self._read() as conn:
            return conn.execute(
                sa.select(*self._LOCKER_COLS).where(
                    lockers.c.site == site, lockers.c.id == locker_id
                )
            ).first()

    def add_locker(
        self,
        site: str,
        locker_id: str,
        bays: int,
        secret: bytes,
        password: str,
        board: str = "sim",
        control_port: int | None = None,
        data_dir: str | None = None,
        actor: str = "lockerctl",
    ) -> int:
        """Registers a locker; returns the new configuration version. StoreError if it exists."""
        if not LOCKER_ID_RE.match(locker_id or ""):
            raise StoreError(f"bad locker id {locker_id!r}: 1-28 of A-Z a-z 0-9 . _ -")
        with self._write() as conn:
            ensure_site(conn, site)
            if conn.execute(
                sa.select(lockers.c.id).where(lockers.c.site == site, lockers.c.id == locker_id)
            ).first():
                raise StoreError(f"locker {locker_id} already exists at site {site}")
            conn.execute(
                lockers.insert().values(
                    site=site,
                    id=locker_id,
                    bays=bays,
                    board=board,
                    secret=bytes(secret),
                    broker_password=password,
                    cmd_counter=0,
                    online=None,
                    last_seen=None,
                    state=None,
                    control_port=control_port,
                    data_dir=data_dir,
                    created_at=engine._now(),
                )
            )
            _append_action(
                conn,
                site,
                actor,
                "locker_add",
                {"locker": locker_id, "bays": bays, "board": board},
            )
            return bump(conn, site)

    def set_locker_secret(
        self,
        site: str,
        locker_id: str,
        secret: bytes,
        password: str | None = None,
        actor: str = "lockerctl",
    ) -> int:
        """Rekeys a locker (and its broker password if given); returns the new config version."""
        values: dict[str, bytes | str] = {"secret": bytes(secret)}
        if password is not None:
            values["broker_password"] = password
        with self._write() as conn:
            n = conn.execute(
                lockers.update()
                .where(lockers.c.site == site, lockers.c.id == locker_id)
                .values(**values)
            ).rowcount
            if not n:
                raise StoreError(f"no locker {locker_id} at site {site}")
            _append_action(
                conn,
                site,
                actor,
                "locker_rekey",
                {"locker": locker_id, "password": password is not None},
            )
            return bump(conn, site)

    def next_command_id(self, site: str, locker_id: str) -> int:
        """The next id of a signed command to this locker: persisted, strictly increasing."""
        with self._write() as conn:
            n = conn.execute(
                lockers.update()
                .where(lockers.c.site == site, lockers.c.id == locker_id)
                .values(cmd_counter=lockers.c.cmd_counter + 1)
            ).rowcount
            if not n:
                raise StoreError(f"no locker {locker_id} at site {site}")
            return conn.execute(
                sa.select(lockers.c.cmd_counter).where(
                    lockers.c.site == site, lockers.c.id == locker_id
                )
            ).scalar()

    def set_clock_offset(self, site: str, locker_id: str, offset: float, checked_at: float):
        """Records how far the locker's clock is from the host's (locker minus host, seconds)."""
        c = locker_clocks
        key = (c.c.site == site, c.c.locker_id == locker_id)
        values = {"offset_s": float(offset), "checked_at": float(checked_at)}
        with self._write() as conn:
            if not conn.execute(c.update().where(*key).values(**values)).rowcount:
                conn.execute(c.insert().values(site=site, locker_id=locker_id, **values))

    def clock_offsets(self, site: str) -> dict[str, tuple[float, float]]:
        """{locker id: (offset seconds, checked_at)} for the site's lockers measured so far."""
        c = locker_clocks
        with self._read() as conn:
            rows = conn.execute(
                sa.select(c.c.locker_id, c.c.offset_s, c.c.checked_at).where(c.c.site == site)
            ).all()
        return {r.locker_id: (r.offset_s, r.checked_at) for r in rows}

    def set_locker_status(
        self, site: str, locker_id: str, online: bool | None = None, state: dict | None = None
    ) -> bool:
        """Records what a locker reported (status and/or state) and when; False if unknown."""
        values: dict = {"last_seen": time.time()}
        if online is not None:
            values["online"] = bool(online)
        if state is not None:
            values["state"] = state
        with self._write() as conn:
            return bool(
                conn.execute(
                    lockers.update()
                    .where(lockers.c.site == site, lockers.c.id == locker_id)
                    .values(**values)
                ).rowcount
            )
