"""A site's configuration in the store: its version (bumped by every change the lockers must
get), what each locker's bundle is built from (cards, timetable, grants and the extras other
areas register), the remembered settings and the broker's credentials.

A change of another area calls `bump(conn, site)` in its own transaction: the version moves
with the change, or neither does (StoreError if a bundle would no longer fit a locker).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from . import engine
from .chain import _append_action
from .engine import StoreBase, StoreError, ensure_site
from .tables import (
    broker_accounts,
    cards,
    config_changes,
    grants,
    lockers,
    settings,
    sites,
    timetables,
)

# A locker's reported configuration version above this is not believed (a locker can only
# report what it was sent, but one with stolen credentials could report anything; this keeps
# such a report from pushing the site's version to the end of its 32-bit range).
MAX_REPORTED_VERSION = 2**31

# Other modules' additions to every locker's bundle (store/exceptions.py, which the package
# imports, so that no Store builds a bundle without them: visitors' cards and the rule table of
# consents, exemptions and visitors): fn(conn, site, locker_id, now) ->
# (extra card rows as `build_bundle` takes them, rule dicts as `bundle.rule_record` takes them).
CONFIG_EXTRAS: list[Callable] = []


def register_config_extra(fn: Callable) -> None:
    if fn not in CONFIG_EXTRAS:
        CONFIG_EXTRAS.append(fn)


def _grant_obj(g) -> dict:
    """A grant row as the bundle header carries it (docs/protocol.md)."""
    return {
        "id": g.id,
        "person": g.person_id,
        "from": int(g.from_ts),
        "until": int(g.until_ts),
        "by": g.by,
    }


def bump(conn, site: str) -> int:
    """Sets the site's next configuration version in this transaction: one above both the
    current one and the highest any of its lockers reports (a database restored from a
    backup must not publish versions the lockers ignore as stale). StoreError, so the whole
    change is rolled back, if any locker's bundle would then be larger than a locker takes.
    """
    ensure_site(conn, site)
    reported = reported_version(conn, site)
    v = sites.c.config_version
    conn.execute(
        sites.update()
        .where(sites.c.name == site)
        .values(config_version=sa.case((v > reported, v), else_=reported) + 1)
    )
    version = conn.execute(sa.select(v).where(sites.c.name == site)).scalar()
    check_bundles_fit(conn, site, version)
    values = {"version": version, "changed_at": engine._now()}
    if (
        conn.execute(
            config_changes.update().where(config_changes.c.site == site).values(**values)
        ).rowcount
        == 0
    ):
        conn.execute(config_changes.insert().values(site=site, **values))
    return version


def reported_version(conn, site: str) -> int:
    """The highest configuration version the site's lockers report running (0: none)."""
    best = 0
    for (state,) in conn.execute(sa.select(lockers.c.state).where(lockers.c.site == site)):
        v = state.get("config") if isinstance(state, dict) else None
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_REPORTED_VERSION:
            best = max(best, v)
    return best


def next_version(conn, site: str) -> int:
    current = conn.execute(sa.select(sites.c.config_version).where(sites.c.name == site)).scalar()
    return max(current or 0, reported_version(conn, site)) + 1


def check_bundles_fit(conn, site: str, version: int, ncards: int | None = None) -> None:
    """StoreError naming the locker and the limit if a bundle at `version` (with `ncards`
    cards, else the cards stored) would be more than a locker takes."""
    from ..bundle import bundle_header, check_size

    ids = list(conn.execute(sa.select(lockers.c.id).where(lockers.c.site == site)).scalars())
    if not ids:
        return
    now = engine._now()
    if ncards is None:
        ncards = conn.execute(
            sa.select(sa.func.count()).select_from(cards).where(cards.c.site == site)
        ).scalar()
    compiled = None
    for locker_id in ids:
        _, timetable, grant_rows = inputs_in(conn, site, locker_id, now, False)
        if timetable is not None and compiled is None:
            from ..timetable import compile_timetable

            try:
                compiled = compile_timetable(timetable, now)
            except (ValueError, KeyError) as e:
                raise StoreError(f"the timetable cannot be compiled: {e}") from None
        header = bundle_header(
            locker_id, site, version, now, compiled, [_grant_obj(g) for g in grant_rows]
        )
        extra_cards, rules = extras_in(conn, site, locker_id, now)
        try:
            check_size(locker_id, len(header), ncards + len(extra_cards), len(rules))
        except ValueError as e:
            raise StoreError(f"{e}; nothing was changed") from None


def inputs_in(conn, site: str, locker_id: str, now: int, with_cards=True):
    card_rows = []
    if with_cards:
        card_rows = conn.execute(
            sa.select(
                cards.c.uid,
                cards.c.person_id,
                cards.c.role,
                cards.c.year,
                cards.c.walk_home,
                cards.c.revoked,
            )
            .where(cards.c.site == site)
            .order_by(cards.c.uid)
        ).all()
    tt = conn.execute(
        sa.select(timetables.c.source, timetables.c.parsed).where(timetables.c.site == site)
    ).first()
    grant_rows = conn.execute(
        sa.select(
            grants.c.id,
            grants.c.person_id,
            grants.c.locker_id,
            grants.c.from_ts,
            grants.c.until_ts,
            grants.c.by,
            grants.c.reason,
        )
        .where(
            grants.c.site == site,
            grants.c.revoked_at.is_(None),
            grants.c.until_ts > now,
            sa.or_(grants.c.locker_id.is_(None), grants.c.locker_id == locker_id),
        )
        .order_by(grants.c.id)
    ).all()
    return card_rows, (tt.parsed if tt is not None else None), grant_rows


def extras_in(conn, site: str, locker_id: str, now: int):
    extra_cards: list = []
    rules: list = []
    for fn in CONFIG_EXTRAS:
        c, r = fn(conn, site, locker_id, now)
        extra_cards += c
        rules += r
    return extra_cards, rules


class ConfigMixin(StoreBase):
    """The site configuration's methods of `Store`."""

    def config_version(self, site: str) -> int:
        with self._read() as conn:
            v = conn.execute(
                sa.select(sites.c.config_version).where(sites.c.name == site)
            ).scalar()
        return v or 0

    def reported_config_version(self, site: str) -> int:
        """The highest configuration version the site's lockers report running (0: none)."""
        with self._read() as conn:
            return reported_version(conn, site)

    def raise_config_version(self, site: str, actor: str = "lockerctl") -> int:
        """Puts the site's configuration version above every version its lockers report, if it
        is not already (a database restored from a backup); returns the version in force."""
        with self._write() as conn:
            ensure_site(conn, site)
            current = conn.execute(
                sa.select(sites.c.config_version).where(sites.c.name == site)
            ).scalar()
            reported = reported_version(conn, site)
            if reported < current:
                return current
            version = bump(conn, site)
            _append_action(
                conn,
                site,
                actor,
                "config_version_raised",
                {"from": current, "to": version, "reported": reported},
            )
            return version

    def config_changed_at(self, site: str) -> tuple[int, int] | None:
        """(version, when it was set) of the site's configuration, or None if unknown."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(config_changes.c.version, config_changes.c.changed_at).where(
                    config_changes.c.site == site
                )
            ).first()
        return (row.version, row.changed_at) if row else None

    def bump_config(self, site: str) -> int:
        """Marks the site's configuration changed; returns the new version."""
        with self._write() as conn:
            return bump(conn, site)

    def broker_credentials(self, site: str) -> tuple[str, str] | None:
        with self._read() as conn:
            r = conn.execute(
                sa.select(broker_accounts.c.user, broker_accounts.c.password).where(
                    broker_accounts.c.site == site
                )
            ).first()
        return (r.user, r.password) if r else None

    def set_broker_credentials(self, site: str, user: str, password: str) -> None:
        with self._write() as conn:
            ensure_site(conn, site)
            b = broker_accounts
            if conn.execute(sa.select(b.c.site).where(b.c.site == site)).first():
                conn.execute(
                    b.update().where(b.c.site == site).values(user=user, password=password)
                )
            else:
                conn.execute(b.insert().values(site=site, user=user, password=password))
            _append_action(conn, site, "lockerctl", "broker_credentials", {"user": user})

    def settings(self, site: str) -> dict[str, str]:
        """The site's remembered settings ({} when none)."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(settings.c.key, settings.c.value).where(settings.c.site == site)
            ).all()
        return {r.key: r.value for r in rows}

    def set_settings(self, site: str, values: dict[str, str | None], actor: str) -> None:
        """Stores (or, for None, forgets) settings in one transaction, with a trail entry."""
        with self._write() as conn:
            ensure_site(conn, site)
            for key, value in values.items():
                conn.execute(
                    settings.delete().where(settings.c.site == site, settings.c.key == key)
                )
                if value is not None:
                    conn.execute(settings.insert().values(site=site, key=key, value=str(value)))
            _append_action(conn, site, actor, "settings", dict(values))

    def config_inputs(self, site: str, locker_id: str, now: int | None = None):
        """(cards, timetable, grants) for the locker's bundle.

        cards: every card of the site, revoked ones included, ordered by uid; rows with uid,
        person_id, role, year, walk_home, revoked. timetable: the dict `parse_timetable` made
        of the TOML when it was set (JSON-ready; `compile_timetable` takes it), or None.
        grants: rows (id, person_id, locker_id, from_ts, until_ts, by, reason) not revoked, not
        ended, for this locker or for every locker.
        """
        now = engine._now() if now is None else now
        with self._read() as conn:
            return inputs_in(conn, site, locker_id, now)

    def config_extras(self, site: str, locker_id: str, now: int | None = None):
        """(extra cards, rules) the registered CONFIG_EXTRAS add to the locker's bundle."""
        now = engine._now() if now is None else now
        with self._read() as conn:
            return extras_in(conn, site, locker_id, now)
