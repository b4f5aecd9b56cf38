"""The timetable and the exception grants in the store: what a locker's rules are made of."""

from __future__ import annotations

import sqlalchemy as sa

from . import engine
from .chain import _append_action
from .engine import StoreBase, StoreError, _text, ensure_site
from .siteconfig import bump
from .tables import grants, timetables


class ScheduleMixin(StoreBase):
    """The timetable's and the grants' methods of `Store`."""

    def set_timetable(
        self, site: str, source: str, parsed: dict, timezone: str, actor: str = "lockerctl"
    ) -> int:
        """Stores the TOML text and its parsed form; returns the new configuration version."""
        with self._write() as conn:
            ensure_site(conn, site)
            t = timetables
            values = {
                "source": source,
                "parsed": parsed,
                "timezone": timezone,
                "updated_at": engine._now(),
            }
            if conn.execute(sa.select(t.c.site).where(t.c.site == site)).first():
                conn.execute(t.update().where(t.c.site == site).values(**values))
            else:
                conn.execute(t.insert().values(site=site, **values))
            _append_action(conn, site, actor, "timetable_set", {"timezone": timezone})
            return bump(conn, site)

    def timetable(self, site: str):
        """Row (source, parsed, timezone, updated_at) or None."""
        with self._read() as conn:
            return conn.execute(sa.select(timetables).where(timetables.c.site == site)).first()

    def timezone(self, site: str, default: str = "Europe/London") -> str:
        """The site's time zone: the timetable's, else `default`."""
        row = self.timetable(site)
        return row.timezone if row else default

    def add_grant(
        self,
        site: str,
        person_id: str,
        from_ts: int,
        until_ts: int,
        by: str,
        reason: str,
        locker_id: str | None = None,
        actor: str = "lockerctl",
    ) -> int:
        """Stores an exception grant (validated by the caller); returns its id."""
        with self._write() as conn:
            ensure_site(conn, site)
            gid = conn.execute(
                grants.insert().values(
                    site=site,
                    person_id=person_id,
                    locker_id=locker_id,
                    from_ts=int(from_ts),
                    until_ts=int(until_ts),
                    by=by,
                    reason=_text(reason),
                    created_at=engine._now(),
                    revoked_at=None,
                )
            ).inserted_primary_key[0]
            _append_action(
                conn,
                site,
                actor,
                "grant",
                {
                    "id": gid,
                    "person": person_id,
                    "from": int(from_ts),
                    "until": int(until_ts),
                    "by": by,
                    "reason": reason,
                    "locker": locker_id,
                },
            )
            bump(conn, site)
        return gid

    def grants(self, site: str, include_ended: bool = False, now: int | None = None) -> list:
        """Grant rows, oldest first: by default only those not revoked and not yet ended."""
        now = engine._now() if now is None else now
        q = sa.select(grants).where(grants.c.site == site)
        if not include_ended:
            q = q.where(grants.c.revoked_at.is_(None), grants.c.until_ts > now)
        with self._read() as conn:
            return conn.execute(q.order_by(grants.c.id)).all()

    def revoke_grant(self, site: str, grant_id: int, actor: str = "lockerctl") -> None:
        with self._write() as conn:
            r = conn.execute(
                sa.select(grants.c.revoked_at).where(
                    grants.c.site == site, grants.c.id == grant_id
                )
            ).first()
            if r is None:
                raise StoreError(f"no grant {grant_id} at site {site}")
            if r.revoked_at is not None:
                raise StoreError(f"grant {grant_id} is already revoked")
            conn.execute(
                grants.update().where(grants.c.id == grant_id).values(revoked_at=engine._now())
            )
            _append_action(conn, site, actor, "grant_revoke", {"id": grant_id})
            bump(conn, site)
