"""The store's everyday exceptions: exemptions and visitors (migration `0010_exceptions`),
card unrevocation, and what keep-safe consents (`consents.py`) share with them: dates, the
checks of who is on the roster, and `config_extra`, which adds the visitors' cards and the rule
table (docs/protocol.md, `config`) to every locker's bundle (registered with the store's
configuration on import).

Each change is one transaction with its trail entry and a new configuration version, like the
grants (`schedule.py`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .chain import _append_action
from .engine import StoreError, ensure_site, mask_uid
from .siteconfig import bump, register_config_extra
from .tables import cards, consent_approvers, consents, exemptions, people, timetables, visitors

CATEGORIES = ("medical", "send", "young_carer", "other")
# A visitor's card stays in the lockers' bundles this long after its end, so that a phone left
# in a bay can still be collected with it (refused for anything else).
VISITOR_COLLECT_DAYS = 7
VISITOR_PREFIX = "visitor-"


# -- dates and windows ------------------------------------------------------------------------


def day_end(day: dt.date, timezone: str) -> int:
    """Unix seconds of the local midnight that ends `day`."""
    nxt = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), ZoneInfo(timezone))
    return int(nxt.timestamp())


def today(timezone: str, now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, ZoneInfo(timezone)).date()


def _yyyymmdd(text: str | None) -> int:
    return int(text.replace("-", "")) if text else 0


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def window_minutes(windows: str) -> list[list[int]]:
    """ "08:00-08:15,12:00-12:30" as [[480, 495], [720, 750]]."""
    out = []
    for w in windows.split(","):
        a, b = w.split("-")
        out.append([_minutes(a), _minutes(b) if b != "24:00" else 1440])
    return out


# -- the lockers' bundles -----------------------------------------------------------------------


def config_extra(conn, site: str, locker_id: str, now: int):
    """(visitors' cards, rules) for every locker of the site (store.CONFIG_EXTRAS)."""
    tz = _timezone(conn, site)
    rules: list[dict] = []
    for c in conn.execute(
        sa.select(consents)
        .where(
            consents.c.site == site,
            consents.c.ended_at.is_(None),
            sa.or_(consents.c.until_ts.is_(None), consents.c.until_ts > now),
        )
        .order_by(consents.c.id)
    ):
        rules.append(
            {
                "kind": "consent",
                "person": c.person_id,
                "by": c.by,
                "until": c.until_ts or 0,
                "id": c.id,
            }
        )
    day = today(tz, now).isoformat()
    for e in conn.execute(
        sa.select(exemptions)
        .where(
            exemptions.c.site == site,
            exemptions.c.ended_at.is_(None),
            sa.or_(exemptions.c.until_date.is_(None), exemptions.c.until_date >= day),
        )
        .order_by(exemptions.c.id)
    ):
        rules.append(
            {
                "kind": "exemption",
                "person": e.person_id,
                "by": e.by,
                "category": e.category,
                "from": _yyyymmdd(e.from_date),
                "until": _yyyymmdd(e.until_date),
                "windows": window_minutes(e.windows),
                "id": e.id,
            }
        )
    extra_cards = []
    roster_uids = set(conn.execute(sa.select(cards.c.uid).where(cards.c.site == site)).scalars())
    latest: dict[str, Any] = {}  # a spare card given out again: its newest visitor only
    for v in conn.execute(
        sa.select(visitors)
        .where(
            visitors.c.site == site,
            visitors.c.until_ts > now - VISITOR_COLLECT_DAYS * 86400,
        )
        .order_by(visitors.c.id)
    ):
        latest[v.card_uid] = v
    for uid, v in latest.items():
        if uid in roster_uids:  # the roster's card wins
            continue
        extra_cards.append((uid, v.person_id, "visitor", 0, False, False))
        rules.append(
            {"kind": "visitor", "person": v.person_id, "by": v.by, "until": v.until_ts, "id": v.id}
        )
    return extra_cards, rules


register_config_extra(config_extra)


def _timezone(conn, site: str) -> str:
    tz = conn.execute(sa.select(timetables.c.timezone).where(timetables.c.site == site)).scalar()
    return tz or "Europe/London"


def _person(conn, site: str, person_id: str):
    return conn.execute(
        sa.select(people).where(people.c.site == site, people.c.person_id == person_id)
    ).first()


def _roles(conn, site: str, person_id: str) -> set[str]:
    return set(
        conn.execute(
            sa.select(cards.c.role).where(
                cards.c.site == site,
                cards.c.person_id == person_id,
                cards.c.revoked.is_(False),
            )
        ).scalars()
    )


def _check_approver(conn, site: str, by: str) -> None:
    p = _person(conn, site, by)
    if p is None or not p.active:
        raise StoreError(f"--by {by} is not on the roster of site {site}")
    if "slt" not in _roles(conn, site, by):
        raise StoreError(f"--by {by} is not an SLT member (no slt card)")


def _is_approver(conn, site: str, person_id: str) -> bool:
    return (
        conn.execute(
            sa.select(consent_approvers.c.person_id).where(
                consent_approvers.c.site == site, consent_approvers.c.person_id == person_id
            )
        ).first()
        is not None
    )


def _check_consent_approver(conn, site: str, by: str) -> None:
    """StoreError unless `by` is on the roster with an slt card and named an approver."""
    _check_approver(conn, site, by)
    if _is_approver(conn, site, by):
        return
    named = conn.execute(
        sa.select(sa.func.count())
        .select_from(consent_approvers)
        .where(consent_approvers.c.site == site)
    ).scalar()
    if not named:
        raise StoreError(
            f"no one may approve keep-safe consents at site {site} yet: an admin names the "
            f"Headteacher (and any SLT members) with `lockerctl consent approver add {by}`"
        )
    raise StoreError(
        f"--by {by} may not approve keep-safe consents (an admin names approvers: "
        f"`lockerctl consent approver add {by}`)"
    )


def _check_person(conn, site: str, person_id: str):
    p = _person(conn, site, person_id)
    if p is None or not p.active:
        raise StoreError(f"{person_id} is not on the roster of site {site}")
    return p


# -- exemptions ---------------------------------------------------------------------------------


def add_exemption(
    st,
    site: str,
    person_id: str,
    category: str,
    by: str,
    review: dt.date,
    windows: list[str],
    start: dt.date,
    until: dt.date | None,
    actor: str,
    now: int,
) -> int:
    """An exemption (validated by the caller: category, windows, dates); its id."""
    with st._write() as conn:
        ensure_site(conn, site)
        _check_person(conn, site, person_id)
        _check_approver(conn, site, by)
        eid = conn.execute(
            exemptions.insert().values(
                site=site,
                person_id=person_id,
                category=category,
                windows=",".join(windows),
                by=by,
                review_date=review.isoformat(),
                from_date=start.isoformat(),
                until_date=until.isoformat() if until else None,
                created_at=now,
                ended_at=None,
            )
        ).inserted_primary_key[0]
        _append_action(
            conn,
            site,
            actor,
            "exemption_add",
            {
                "id": eid,
                "person": person_id,
                "category": category,
                "windows": windows,
                "by": by,
                "review": review.isoformat(),
                "from": start.isoformat(),
                "until": until.isoformat() if until else None,
            },
        )
        bump(conn, site)
    return eid


def end_exemption(st, site: str, exemption_id: int, actor: str, now: int) -> str:
    """Ends exemption ID; returns its person. StoreError if there is none or it has ended."""
    with st._write() as conn:
        r = conn.execute(
            sa.select(exemptions).where(exemptions.c.site == site, exemptions.c.id == exemption_id)
        ).first()
        if r is None:
            raise StoreError(f"no exemption {exemption_id} at site {site}")
        if r.ended_at is not None:
            raise StoreError(f"exemption {exemption_id} has already ended")
        conn.execute(
            exemptions.update().where(exemptions.c.id == exemption_id).values(ended_at=now)
        )
        _append_action(
            conn, site, actor, "exemption_end", {"id": exemption_id, "person": r.person_id}
        )
        bump(conn, site)
    return r.person_id


@dataclass
class Exemption:
    id: int
    person_id: str
    name: str | None
    category: str
    windows: str
    by: str
    review_date: str
    from_date: str
    until_date: str | None
    status: str  # active, future, ended (its last day passed or `end`ed)
    due: bool  # its review date has come (and it has not ended)


def list_exemptions(st, site: str, due: bool, include_ended: bool, now: int) -> list[Exemption]:
    """The site's exemptions, oldest first: those not ended (all with include_ended); with
    `due` only those whose review date is today or past."""
    with st._read() as conn:
        tz = _timezone(conn, site)
        rows = conn.execute(
            sa.select(exemptions, people.c.name)
            .select_from(
                exemptions.outerjoin(
                    people,
                    sa.and_(
                        people.c.site == exemptions.c.site,
                        people.c.person_id == exemptions.c.person_id,
                    ),
                )
            )
            .where(exemptions.c.site == site)
            .order_by(exemptions.c.id)
        ).all()
    day = today(tz, now).isoformat()
    out = []
    for r in rows:
        if r.ended_at is not None or (r.until_date and r.until_date < day):
            status = "ended"
        elif r.from_date > day:
            status = "future"
        else:
            status = "active"
        is_due = status != "ended" and r.review_date <= day
        if status == "ended" and not include_ended:
            continue
        if due and not is_due:
            continue
        out.append(
            Exemption(
                r.id,
                r.person_id,
                r.name,
                r.category,
                r.windows,
                r.by,
                r.review_date,
                r.from_date,
                r.until_date,
                status,
                is_due,
            )
        )
    return out


# -- visitors -----------------------------------------------------------------------------------


def add_visitor(
    st, site: str, name: str, uid: str, by: str, until_ts: int, actor: str, now: int
) -> str:
    """Gives a visitor a spare card until `until_ts`; returns the visitor's new person_id."""
    with st._write() as conn:
        ensure_site(conn, site)
        p = _person(conn, site, by)
        if p is None or not p.active:
            raise StoreError(f"--by {by} is not on the roster of site {site}")
        on_roster = conn.execute(
            sa.select(cards.c.person_id).where(cards.c.site == site, cards.c.uid == uid)
        ).first()
        if on_roster is not None:
            raise StoreError(
                f"card {mask_uid(uid)} is {on_roster.person_id}'s roster card, not a spare one"
            )
        current = conn.execute(
            sa.select(visitors.c.person_id).where(
                visitors.c.site == site, visitors.c.card_uid == uid, visitors.c.until_ts > now
            )
        ).first()
        if current is not None:
            raise StoreError(
                f"card {mask_uid(uid)} is still given to {current.person_id} until its end"
            )
        vid = conn.execute(
            visitors.insert().values(
                site=site,
                person_id="",
                name=name,
                card_uid=uid,
                by=by,
                from_ts=now,
                until_ts=until_ts,
                created_at=now,
            )
        ).inserted_primary_key[0]
        person_id = f"{VISITOR_PREFIX}{vid}"
        while _person(conn, site, person_id) is not None:  # a roster id of that form
            person_id += "v"
        conn.execute(visitors.update().where(visitors.c.id == vid).values(person_id=person_id))
        conn.execute(
            people.insert().values(
                site=site, person_id=person_id, name=name, role="visitor", active=True
            )
        )
        _append_action(
            conn,
            site,
            actor,
            "visitor_add",
            {
                "person": person_id,
                "card": mask_uid(uid),
                "by": by,
                "until": until_ts,
            },
        )
        bump(conn, site)
    return person_id


def list_visitors(st, site: str, include_ended: bool, now: int) -> list:
    q = sa.select(visitors).where(visitors.c.site == site)
    if not include_ended:
        q = q.where(visitors.c.until_ts > now)
    with st._read() as conn:
        return conn.execute(q.order_by(visitors.c.id)).all()


# -- cards --------------------------------------------------------------------------------------


def unrevoke_cards(st, site: str, person_id: str, uid: str | None, actor: str) -> int:
    """Undoes the revocation of the person's cards (or the one with `uid`); returns how many
    were revoked and are not now. StoreError if there is no such card."""
    with st._write() as conn:
        q = sa.select(cards.c.uid, cards.c.revoked).where(
            cards.c.site == site, cards.c.person_id == person_id
        )
        if uid is not None:
            q = q.where(cards.c.uid == uid)
        found = conn.execute(q).all()
        if not found:
            if uid is not None:
                raise StoreError(f"{person_id} has no card {mask_uid(uid)}")
            raise StoreError(f"{person_id} has no cards")
        todo = [r.uid for r in found if r.revoked]
        if todo:
            conn.execute(
                cards.update()
                .where(cards.c.site == site, cards.c.uid.in_(todo))
                .values(revoked=False)
            )
            _append_action(
                conn,
                site,
                actor,
                "card_unrevoke",
                {"person": person_id, "cards": [mask_uid(u) for u in todo]},
            )
            bump(conn, site)
    return len(todo)
