"""The roster in the store: people and their cards, replaced whole by an import; a card's
revocation.
"""

from __future__ import annotations

import sqlalchemy as sa

from .chain import _append_action
from .engine import StoreBase, StoreError, ensure_site, mask_uid
from .siteconfig import bump, check_bundles_fit, next_version
from .tables import cards, people


class _Person:
    __slots__ = ("person_id", "name", "role", "active", "roles")

    def __init__(self, person_id, name, role, active, roles):
        self.person_id, self.name, self.role = person_id, name, role
        self.active, self.roles = active, roles


class RosterMixin(StoreBase):
    """The roster's methods of `Store`."""

    def replace_roster(
        self, site: str, rows: list[dict], actor: str = "lockerctl", detail: dict | None = None
    ) -> dict:
        """Makes `rows` (validated: person_id, name, role, year, walk_home, card_uid) the whole
        roster of the site in one transaction. Cards no longer listed are removed; a card listed
        again keeps its revocation; people no longer listed are kept inactive (their name stays
        on old events). Returns counts {people, cards, added, removed, updated, version}."""
        new_people: dict[str, dict] = {}
        for r in rows:
            new_people.setdefault(r["person_id"], r)
        with self._write() as conn:
            ensure_site(conn, site)
            # Refused before anything is written when the lockers could not take it (checked
            # again, with everything else, when the version is bumped).
            check_bundles_fit(conn, site, next_version(conn, site), len(rows))
            old_cards = {
                r.uid: r for r in conn.execute(sa.select(cards).where(cards.c.site == site)).all()
            }
            old_people = {
                r.person_id
                for r in conn.execute(
                    sa.select(people.c.person_id).where(people.c.site == site)
                ).all()
            }
            new_uids = {r["card_uid"] for r in rows}
            gone = [u for u in old_cards if u not in new_uids]
            for i in range(0, len(gone), 500):
                conn.execute(
                    cards.delete().where(cards.c.site == site, cards.c.uid.in_(gone[i : i + 500]))
                )
            for pid, r in new_people.items():
                values = {"name": r["name"], "role": r["role"], "active": True}
                if pid in old_people:
                    conn.execute(
                        people.update()
                        .where(people.c.site == site, people.c.person_id == pid)
                        .values(**values)
                    )
                else:
                    conn.execute(people.insert().values(site=site, person_id=pid, **values))
            absent = [p for p in old_people if p not in new_people]
            for i in range(0, len(absent), 500):
                conn.execute(
                    people.update()
                    .where(people.c.site == site, people.c.person_id.in_(absent[i : i + 500]))
                    .values(active=False)
                )
            added = updated = 0
            for r in rows:
                values = {
                    "person_id": r["person_id"],
                    "role": r["role"],
                    "year": r["year"],
                    "walk_home": r["walk_home"],
                }
                old = old_cards.get(r["card_uid"])
                if old is None:
                    conn.execute(
                        cards.insert().values(
                            site=site, uid=r["card_uid"], revoked=False, **values
                        )
                    )
                    added += 1
                elif any(getattr(old, k) != v for k, v in values.items()):
                    conn.execute(
                        cards.update()
                        .where(cards.c.site == site, cards.c.uid == r["card_uid"])
                        .values(**values)
                    )
                    updated += 1
            counts = {
                "people": len(new_people),
                "cards": len(rows),
                "added": added,
                "removed": len(gone),
                "updated": updated,
            }
            _append_action(conn, site, actor, "roster_import", {**counts, **(detail or {})})
            counts["version"] = bump(conn, site)
        return counts

    def roster(self, site: str) -> list:
        """Rows (person_id, name, role, year, walk_home, card_uid, revoked), one per card."""
        with self._read() as conn:
            return conn.execute(
                sa.select(
                    cards.c.person_id,
                    people.c.name,
                    cards.c.role,
                    cards.c.year,
                    cards.c.walk_home,
                    cards.c.uid.label("card_uid"),
                    cards.c.revoked,
                )
                .select_from(
                    cards.join(
                        people,
                        sa.and_(
                            people.c.site == cards.c.site, people.c.person_id == cards.c.person_id
                        ),
                    )
                )
                .where(cards.c.site == site)
                .order_by(cards.c.person_id, cards.c.uid)
            ).all()

    def person(self, site: str, person_id: str, include_inactive: bool = False):
        """(person_id, name, role, active, roles: set of the roles of their unrevoked cards), or
        None if the roster does not list the person (now, or ever with `include_inactive`)."""
        with self._read() as conn:
            p = conn.execute(
                sa.select(people).where(people.c.site == site, people.c.person_id == person_id)
            ).first()
            if p is None or not (p.active or include_inactive):
                return None
            roles = set(
                conn.execute(
                    sa.select(cards.c.role).where(
                        cards.c.site == site,
                        cards.c.person_id == person_id,
                        cards.c.revoked.is_(False),
                    )
                ).scalars()
            )
        return _Person(p.person_id, p.name, p.role, bool(p.active), roles)

    def person_cards(self, site: str, person_id: str) -> list:
        with self._read() as conn:
            return conn.execute(
                sa.select(cards)
                .where(cards.c.site == site, cards.c.person_id == person_id)
                .order_by(cards.c.uid)
            ).all()

    def revoke_cards(
        self, site: str, person_id: str, uid: str | None = None, actor: str = "lockerctl"
    ) -> int:
        """Revokes the person's cards (or the one with `uid`); returns how many were revoked
        now (already revoked ones are not counted). StoreError if there is no such card."""
        with self._write() as conn:
            q = sa.select(cards.c.uid, cards.c.revoked).where(
                cards.c.site == site, cards.c.person_id == person_id
            )
            if uid is not None:
                q = q.where(cards.c.uid == uid)
            found = conn.execute(q).all()
            if not found:
                if uid is not None:
                    raise StoreError(f"{person_id} has no card {uid}")
                raise StoreError(f"{person_id} has no cards (unknown person?)")
            todo = [r.uid for r in found if not r.revoked]
            if todo:
                conn.execute(
                    cards.update()
                    .where(cards.c.site == site, cards.c.uid.in_(todo))
                    .values(revoked=True)
                )
            _append_action(
                conn,
                site,
                actor,
                "card_revoke",
                {"person": person_id, "cards": [mask_uid(u) for u in todo]},
            )
            bump(conn, site)
        return len(todo)
