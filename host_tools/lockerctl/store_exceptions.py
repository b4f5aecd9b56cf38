"""The store's everyday exceptions: keep-safe consents, exemptions and visitors (migration
`0010_exceptions`), who may approve keep-safe consents (migration `0015_consent_approvers`),
card unrevocation, where a person's phone is (for the named release) and the
host-side actions as export rows.

Each change is one transaction with its trail entry and a new configuration version, like the
grants in store.py; `config_extra` adds the visitors' cards and the rule table (docs/protocol.md,
`config`) to every locker's bundle. Importing this module registers it with the store.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from . import store as S
from . import trail

CATEGORIES = ("medical", "send", "young_carer", "other")
# A visitor's card stays in the lockers' bundles this long after its end, so that a phone left
# in a bay can still be collected with it (refused for anything else).
VISITOR_COLLECT_DAYS = 7
VISITOR_PREFIX = "visitor-"

consents = sa.Table(
    "consents",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("reason", sa.String(S.MAX_TEXT), nullable=True),
    sa.Column("until_date", sa.String(10), nullable=True),  # YYYY-MM-DD, last day; None: none
    sa.Column("until_ts", sa.BigInteger, nullable=True),  # the instant it ends (after that day)
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Index("ix_consents_site_person", "site", "person_id"),
)

exemptions = sa.Table(
    "exemptions",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),  # a category, never a diagnosis
    sa.Column("windows", sa.String(100), nullable=False),  # "HH:MM-HH:MM,HH:MM-HH:MM"
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("review_date", sa.String(10), nullable=False),
    sa.Column("from_date", sa.String(10), nullable=False),
    sa.Column("until_date", sa.String(10), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Index("ix_exemptions_site", "site", "ended_at"),
)

visitors = sa.Table(
    "visitors",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("card_uid", sa.String(14), nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("from_ts", sa.BigInteger, nullable=False),
    sa.Column("until_ts", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_visitors_site_until", "site", "until_ts"),
)

# Who may approve keep-safe consents: the Headteacher and the SLT members an admin names
# (`lockerctl consent approver add`). A row is an approver; removing one deletes its row (the
# trail keeps the history: `consent_approver_add` / `consent_approver_remove` actions).
consent_approvers = sa.Table(
    "consent_approvers",
    S.metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("person_id", sa.String(28), primary_key=True),
    sa.Column("added_by", sa.String(S.MAX_TEXT), nullable=False),  # the actor who named them
    sa.Column("added_at", sa.BigInteger, nullable=False),
)


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
    roster_uids = set(
        conn.execute(sa.select(S.cards.c.uid).where(S.cards.c.site == site)).scalars()
    )
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


S.register_config_extra(config_extra)


def _timezone(conn, site: str) -> str:
    tz = conn.execute(
        sa.select(S.timetables.c.timezone).where(S.timetables.c.site == site)
    ).scalar()
    return tz or "Europe/London"


def _person(conn, site: str, person_id: str):
    return conn.execute(
        sa.select(S.people).where(S.people.c.site == site, S.people.c.person_id == person_id)
    ).first()


def _roles(conn, site: str, person_id: str) -> set[str]:
    return set(
        conn.execute(
            sa.select(S.cards.c.role).where(
                S.cards.c.site == site,
                S.cards.c.person_id == person_id,
                S.cards.c.revoked.is_(False),
            )
        ).scalars()
    )


def _check_approver(conn, site: str, by: str) -> None:
    p = _person(conn, site, by)
    if p is None or not p.active:
        raise S.StoreError(f"--by {by} is not on the roster of site {site}")
    if "slt" not in _roles(conn, site, by):
        raise S.StoreError(f"--by {by} is not an SLT member (no slt card)")


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
        raise S.StoreError(
            f"no one may approve keep-safe consents at site {site} yet: an admin names the "
            f"Headteacher (and any SLT members) with `lockerctl consent approver add {by}`"
        )
    raise S.StoreError(
        f"--by {by} may not approve keep-safe consents (an admin names approvers: "
        f"`lockerctl consent approver add {by}`)"
    )


def _check_person(conn, site: str, person_id: str):
    p = _person(conn, site, person_id)
    if p is None or not p.active:
        raise S.StoreError(f"{person_id} is not on the roster of site {site}")
    return p


# -- consents -----------------------------------------------------------------------------------


def add_consent(
    st,
    site: str,
    person_id: str,
    by: str,
    until: dt.date | None,
    reason: str | None,
    actor: str,
    now: int,
) -> int:
    """The Headteacher's keep-safe consent for a pupil; its id. StoreError (nothing stored) for
    a person who is not a pupil, `by` not a named approver (`add_approver`) with an slt card,
    or a consent already in force."""
    with st._write() as conn:
        st._ensure_site(conn, site)
        _check_person(conn, site, person_id)
        if "pupil" not in _roles(conn, site, person_id):
            raise S.StoreError(f"{person_id} is not a pupil (consent is for pupils' phones)")
        _check_consent_approver(conn, site, by)
        tz = _timezone(conn, site)
        until_ts = day_end(until, tz) if until else None
        if until_ts is not None and until_ts <= now:
            raise S.StoreError(f"--until {until} has already passed")
        held = conn.execute(
            sa.select(consents.c.id).where(
                consents.c.site == site,
                consents.c.person_id == person_id,
                consents.c.ended_at.is_(None),
                sa.or_(consents.c.until_ts.is_(None), consents.c.until_ts > now),
            )
        ).first()
        if held is not None:
            raise S.StoreError(
                f"{person_id} already has consent {held.id} in force "
                f"(lockerctl consent end {person_id} first)"
            )
        cid = conn.execute(
            consents.insert().values(
                site=site,
                person_id=person_id,
                by=by,
                reason=reason,
                until_date=until.isoformat() if until else None,
                until_ts=until_ts,
                created_at=now,
                ended_at=None,
            )
        ).inserted_primary_key[0]
        S._append_action(
            conn,
            site,
            actor,
            "consent_add",
            {
                "id": cid,
                "person": person_id,
                "by": by,
                "until": until.isoformat() if until else None,
                "reason": reason,
            },
        )
        st._bump(conn, site)
    return cid


def end_consent(st, site: str, person_id: str, actor: str, now: int) -> list[int]:
    """Ends the person's consents in force; their ids. StoreError when there is none."""
    with st._write() as conn:
        ids = list(
            conn.execute(
                sa.select(consents.c.id).where(
                    consents.c.site == site,
                    consents.c.person_id == person_id,
                    consents.c.ended_at.is_(None),
                    sa.or_(consents.c.until_ts.is_(None), consents.c.until_ts > now),
                )
            ).scalars()
        )
        if not ids:
            raise S.StoreError(f"{person_id} has no consent in force")
        conn.execute(consents.update().where(consents.c.id.in_(ids)).values(ended_at=now))
        S._append_action(conn, site, actor, "consent_end", {"person": person_id, "ids": ids})
        st._bump(conn, site)
    return ids


def list_consents(st, site: str, include_ended: bool, now: int) -> list:
    q = (
        sa.select(consents, S.people.c.name)
        .select_from(
            consents.outerjoin(
                S.people,
                sa.and_(
                    S.people.c.site == consents.c.site,
                    S.people.c.person_id == consents.c.person_id,
                ),
            )
        )
        .where(consents.c.site == site)
    )
    if not include_ended:
        q = q.where(
            consents.c.ended_at.is_(None),
            sa.or_(consents.c.until_ts.is_(None), consents.c.until_ts > now),
        )
    with st._read() as conn:
        return conn.execute(q.order_by(consents.c.id)).all()


# -- who may approve consents ---------------------------------------------------------------


def add_approver(st, site: str, person_id: str, actor: str, now: int) -> None:
    """Names `person_id` (on the roster with an slt card) an approver of keep-safe consents;
    StoreError (nothing stored) otherwise or when they already are one."""
    with st._write() as conn:
        st._ensure_site(conn, site)
        p = _person(conn, site, person_id)
        if p is None or not p.active:
            raise S.StoreError(f"{person_id} is not on the roster of site {site}")
        if "slt" not in _roles(conn, site, person_id):
            raise S.StoreError(
                f"{person_id} is not an SLT member (no slt card): only the Headteacher or an "
                "SLT member may approve keep-safe consents"
            )
        if _is_approver(conn, site, person_id):
            raise S.StoreError(f"{person_id} already approves keep-safe consents")
        conn.execute(
            consent_approvers.insert().values(
                site=site, person_id=person_id, added_by=actor[: S.MAX_TEXT], added_at=now
            )
        )
        S._append_action(conn, site, actor, "consent_approver_add", {"person": person_id})


def remove_approver(st, site: str, person_id: str, actor: str) -> None:
    """No longer lets `person_id` approve keep-safe consents (the consents they gave stand);
    StoreError when they are not an approver."""
    with st._write() as conn:
        gone = conn.execute(
            consent_approvers.delete().where(
                consent_approvers.c.site == site, consent_approvers.c.person_id == person_id
            )
        ).rowcount
        if not gone:
            raise S.StoreError(
                f"{person_id} is not an approver of keep-safe consents "
                "(lockerctl consent approver list)"
            )
        S._append_action(conn, site, actor, "consent_approver_remove", {"person": person_id})


@dataclass
class Approver:
    person_id: str
    name: str | None
    added_by: str
    added_at: int
    slt: bool  # still on the roster with an slt card (else `consent add` refuses them)


def list_approvers(st, site: str) -> list[Approver]:
    """The site's approvers of keep-safe consents, by name."""
    a, p, c = consent_approvers, S.people, S.cards
    with st._read() as conn:
        rows = conn.execute(
            sa.select(a, p.c.name, p.c.active)
            .select_from(
                a.outerjoin(p, sa.and_(p.c.site == a.c.site, p.c.person_id == a.c.person_id))
            )
            .where(a.c.site == site)
        ).all()
        slt = set(
            conn.execute(
                sa.select(c.c.person_id).where(
                    c.c.site == site, c.c.role == "slt", c.c.revoked.is_(False)
                )
            ).scalars()
        )
    out = [
        Approver(
            r.person_id,
            r.name,
            r.added_by,
            int(r.added_at),
            bool(r.active) and r.person_id in slt,
        )
        for r in rows
    ]
    return sorted(out, key=lambda x: (x.name or "", x.person_id))


def is_approver(st, site: str, person_id: str | None) -> bool:
    """Whether `person_id` may record a keep-safe consent now (named, on the roster, slt)."""
    if not person_id:
        return False
    return any(a.person_id == person_id and a.slt for a in list_approvers(st, site))


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
        st._ensure_site(conn, site)
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
        S._append_action(
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
        st._bump(conn, site)
    return eid


def end_exemption(st, site: str, exemption_id: int, actor: str, now: int) -> str:
    """Ends exemption ID; returns its person. StoreError if there is none or it has ended."""
    with st._write() as conn:
        r = conn.execute(
            sa.select(exemptions).where(exemptions.c.site == site, exemptions.c.id == exemption_id)
        ).first()
        if r is None:
            raise S.StoreError(f"no exemption {exemption_id} at site {site}")
        if r.ended_at is not None:
            raise S.StoreError(f"exemption {exemption_id} has already ended")
        conn.execute(
            exemptions.update().where(exemptions.c.id == exemption_id).values(ended_at=now)
        )
        S._append_action(
            conn, site, actor, "exemption_end", {"id": exemption_id, "person": r.person_id}
        )
        st._bump(conn, site)
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
            sa.select(exemptions, S.people.c.name)
            .select_from(
                exemptions.outerjoin(
                    S.people,
                    sa.and_(
                        S.people.c.site == exemptions.c.site,
                        S.people.c.person_id == exemptions.c.person_id,
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
        st._ensure_site(conn, site)
        p = _person(conn, site, by)
        if p is None or not p.active:
            raise S.StoreError(f"--by {by} is not on the roster of site {site}")
        on_roster = conn.execute(
            sa.select(S.cards.c.person_id).where(S.cards.c.site == site, S.cards.c.uid == uid)
        ).first()
        if on_roster is not None:
            raise S.StoreError(
                f"card {S.mask_uid(uid)} is {on_roster.person_id}'s roster card, not a spare one"
            )
        current = conn.execute(
            sa.select(visitors.c.person_id).where(
                visitors.c.site == site, visitors.c.card_uid == uid, visitors.c.until_ts > now
            )
        ).first()
        if current is not None:
            raise S.StoreError(
                f"card {S.mask_uid(uid)} is still given to {current.person_id} until its end"
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
            S.people.insert().values(
                site=site, person_id=person_id, name=name, role="visitor", active=True
            )
        )
        S._append_action(
            conn,
            site,
            actor,
            "visitor_add",
            {
                "person": person_id,
                "card": S.mask_uid(uid),
                "by": by,
                "until": until_ts,
            },
        )
        st._bump(conn, site)
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
        q = sa.select(S.cards.c.uid, S.cards.c.revoked).where(
            S.cards.c.site == site, S.cards.c.person_id == person_id
        )
        if uid is not None:
            q = q.where(S.cards.c.uid == uid)
        found = conn.execute(q).all()
        if not found:
            if uid is not None:
                raise S.StoreError(f"{person_id} has no card {S.mask_uid(uid)}")
            raise S.StoreError(f"{person_id} has no cards")
        todo = [r.uid for r in found if r.revoked]
        if todo:
            conn.execute(
                S.cards.update()
                .where(S.cards.c.site == site, S.cards.c.uid.in_(todo))
                .values(revoked=False)
            )
            S._append_action(
                conn,
                site,
                actor,
                "card_unrevoke",
                {"person": person_id, "cards": [S.mask_uid(u) for u in todo]},
            )
            st._bump(conn, site)
    return len(todo)


# -- where a person's phone is ---------------------------------------------------------------

# Events that put a phone in a bay or take it out (each carries the holder as `person`).
_BAY_EVENTS = ("deposit", "retrieve", "override", "emergency_open", "released", "cancelled")


def phone_bays(st, site: str, person_id: str) -> list[tuple[str, int]]:
    """[(locker, bay)] where the trail says the person's phone is now: their deposits not
    followed by a retrieval, override, open or release of that bay (a lapsed retrieval leaves
    the phone in; a lapsed deposit takes it out), per locker in the order stored."""
    e = S.events
    with st._read() as conn:
        rows = conn.execute(
            sa.select(e.c.locker_id, e.c.type, e.c.bay, e.c.reason)
            .where(e.c.site == site, e.c.person == person_id, e.c.type.in_(_BAY_EVENTS))
            .order_by(e.c.locker_id, e.c.id)
        ).all()
    held: dict[tuple[str, int], bool] = {}
    last_out: dict[tuple[str, int], bool] = {}
    for r in rows:
        if r.bay is None:
            continue
        key = (r.locker_id, int(r.bay))
        if r.type == "deposit":
            for k in [k for k in held if k[0] == r.locker_id]:
                held.pop(k)  # one phone per person per locker
            held[key] = True
        elif r.type == "cancelled":
            if r.reason == "deposit":
                held.pop(key, None)
            elif r.reason == "retrieve" and last_out.pop(key, False):
                held[key] = True
        else:
            if held.pop(key, None):
                last_out[key] = True
    return sorted(held)


# -- host-side actions as export rows -------------------------------------------------------


@dataclass
class ActionRow:
    """A host action shaped like an event row of `Store.events` (export.py writes both)."""

    ts: int
    received_at: int
    type: str
    person: str | None
    name: str | None
    role: str | None
    by: str
    reason: str
    locker_id: str = ""
    bay: int | None = None
    seq: int | None = None
    jid: str = ""
    unknown_type: bool = False
    time_source: str = "host"

    @property
    def sort_ts(self) -> int:
        return self.ts


def _summary(detail: dict) -> str:
    """An action's detail as `key=value; ...` (the person has a column of its own)."""
    parts = []
    for k, v in detail.items():
        if k == "person" or v is None:
            continue
        text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        parts.append(f"{k}={text}")
    return "; ".join(parts)


def action_rows(
    st, site: str, start: int | None, end: int | None, person: str | None
) -> Iterator[ActionRow]:
    """The site's host-side actions in time order (trail order), as export rows; a redacted
    action is shown as `redacted` with nothing else of it."""
    t, p = S.trail_entries, S.people
    q = sa.select(t.c.content, t.c.at, t.c.redacted).where(
        t.c.site == site, t.c.kind == trail.ACTION
    )
    if start is not None:
        q = q.where(t.c.at >= int(start))
    if end is not None:
        q = q.where(t.c.at < int(end))
    with st._read() as conn:
        rows = conn.execute(q.order_by(t.c.id)).all()
        names = {
            r.person_id: (r.name, r.role)
            for r in conn.execute(
                sa.select(p.c.person_id, p.c.name, p.c.role).where(p.c.site == site)
            )
        }
    for r in rows:
        try:
            content = json.loads(r.content) if r.content else {}
        except ValueError:
            content = {}
        detail = content.get("detail") if isinstance(content, dict) else None
        if not isinstance(detail, dict):
            detail = {}
        who = detail.get("person") if isinstance(detail.get("person"), str) else None
        if person is not None and who != person and detail.get("by") != person:
            continue
        name, role = names.get(who, (None, None)) if who else (None, None)
        yield ActionRow(
            ts=int(r.at),
            received_at=int(r.at),
            type=str(content.get("action") or "redacted"),
            person=who,
            name=name,
            role=role,
            by=str(content.get("actor") or ""),
            reason=_summary(detail),
        )


def search_people(st, site: str, text: str, limit: int = 20) -> list[tuple[str, str, str]]:
    """(person_id, name, role) of the people on the roster (and visitors) whose name or id
    contains `text` (any case), by name; for the office's named release: names appear only in
    these results."""
    text = " ".join(text.split())
    if not text:
        return []
    p = S.people
    like = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with st._read() as conn:
        rows = conn.execute(
            sa.select(p.c.person_id, p.c.name, p.c.role)
            .where(
                p.c.site == site,
                p.c.active.is_(True),
                sa.or_(
                    sa.func.lower(p.c.name).like(like, escape="\\"),
                    sa.func.lower(p.c.person_id).like(like, escape="\\"),
                ),
            )
            .order_by(p.c.name, p.c.person_id)
            .limit(limit)
        ).all()
    return [(r.person_id, r.name, r.role) for r in rows]
