"""The store's side of alerts, their e-mail, SLT's daily review and the policy report (migration
`0011_alerts_mail`).

Tables:
- `alert_notes` (site, alert, note): the note given when an alert was acknowledged (the
  acknowledgement itself is `alert_acks`; both are in the trail as `alert_ack`).
- `mail_outbox`: one row per e-mail to send (`mailer.py`): its fold key (kind, locker, bay),
  the alert's key, subject, body, recipients, when it was queued, when to try next, how many
  tries, when it was sent, the last error, and `repeats` (alerts folded into it: the same
  kind, locker and bay within `FOLD_SECONDS` send no second message).
- `mail_marks` (site, name, value): how far the mailer has looked (`looked_at`: the time of its
  last look; `review_day`: the last day whose review was queued; `event_id`, `refusal_id`:
  the marks of versions that went by ids, no longer read), written in the same transaction as
  the messages, so a restart neither loses nor repeats one.
- `mail_seen` (site, alert, at) (migration `0016_mail_seen`): the urgent events and refusals
  the mailer has already turned into messages (or found there when it first started), by alert
  key (`event:<id>`, `refused:<id>`), with the time the host received them. Each look reads
  every urgent event received since `SCAN_BEHIND` seconds before its previous look and not in
  this table: with several ingest workers ids are not committed in order (a transaction that
  took id 7 may commit after the one that took id 8), so "the ids above the last one mailed"
  would skip an alert. Rows older than the window are pruned.
- `mail_conditions` (site, alert, since): the condition alerts (offline, clock) already
  mailed while they last; a condition that clears and comes back is mailed again.
Also an index on `events (site, received_at)`: alerts, the review and the report list events
by the time the host received them.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from . import store as store_mod
from .accounts import alert_acks
from .store import events, metadata

MAX_NOTE = 200
FOLD_SECONDS = 600

alert_notes = sa.Table(
    "alert_notes",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("note", sa.String(MAX_NOTE), nullable=False),
)

mail_outbox = sa.Table(
    "mail_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("fold_key", sa.String(200), nullable=False),  # kind|locker|bay, review|date
    sa.Column("alert", sa.String(120), nullable=False),  # the alert's key ("" for a review)
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=True),
    sa.Column("bay", sa.Integer, nullable=True),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("recipients", sa.String(2000), nullable=False),  # comma-separated
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("next_try_at", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("sent_at", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.String(300), nullable=True),
    sa.Column("repeats", sa.Integer, nullable=False, default=0),
    sa.Index("ix_mail_outbox_due", "site", "sent_at", "next_try_at"),
    sa.Index("ix_mail_outbox_fold", "site", "fold_key", "created_at"),
)

mail_marks = sa.Table(
    "mail_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

mail_conditions = sa.Table(
    "mail_conditions",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("since", sa.BigInteger, nullable=False),
)

SCAN_BEHIND = 600  # seconds: how far behind its previous look the mailer looks again

mail_seen = sa.Table(
    "mail_seen",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("at", sa.BigInteger, nullable=False),  # when the host received it
    sa.Index("ix_mail_seen_at", "site", "at"),
)

RECEIVED_INDEX = sa.Index("ix_events_site_received", events.c.site, events.c.received_at)


# -- acknowledgements with a note ------------------------------------------------------------


def acknowledge(store, site: str, found: list, username: str, note: str = "") -> int:
    """Acknowledges the alerts `found` (alerts.Alert) as `username`, with an optional note (up
    to MAX_NOTE characters, no control characters: ValueError); returns how many were not
    acknowledged before. One `alert_ack` action per alert in the trail, with the note."""
    from .bounds import check_text

    note = (note or "").strip()
    if note:
        check_text(note, "the note", MAX_NOTE)
    now = int(time.time())
    count = 0
    with store._write() as conn:
        done = set(
            conn.execute(
                sa.select(alert_acks.c.alert).where(
                    alert_acks.c.site == site, alert_acks.c.alert.in_([a.key for a in found])
                )
            ).scalars()
        )
        for a in found:
            if a.key in done:
                continue
            done.add(a.key)
            conn.execute(alert_acks.insert().values(site=site, alert=a.key, by=username, at=now))
            if note:
                n = alert_notes
                conn.execute(n.delete().where(n.c.site == site, n.c.alert == a.key))
                conn.execute(alert_notes.insert().values(site=site, alert=a.key, note=note))
            detail = {"alert": a.key, "locker": a.locker, "kind": a.kind, "bay": a.bay}
            if note:
                detail["note"] = note
            store_mod._append_action(conn, site, f"web:{username}", "alert_ack", detail)
            count += 1
    return count


def notes(store, site: str) -> dict[str, str]:
    """{alert key: the note given with its acknowledgement}."""
    with store._read() as conn:
        rows = conn.execute(
            sa.select(alert_notes.c.alert, alert_notes.c.note).where(alert_notes.c.site == site)
        )
        return {r.alert: r.note for r in rows}


def forget_notes(store, site: str, keys) -> None:
    keys = list(keys)
    if keys:
        with store._write() as conn:
            conn.execute(
                alert_notes.delete().where(
                    alert_notes.c.site == site, alert_notes.c.alert.in_(keys)
                )
            )


# -- the mail queue --------------------------------------------------------------------------


def marks(conn, site: str) -> dict[str, int]:
    rows = conn.execute(
        sa.select(mail_marks.c.name, mail_marks.c.value).where(mail_marks.c.site == site)
    )
    return {r.name: int(r.value) for r in rows}


def set_mark(conn, site: str, name: str, value: int) -> None:
    m = mail_marks
    if (
        conn.execute(
            m.update().where(m.c.site == site, m.c.name == name).values(value=int(value))
        ).rowcount
        == 0
    ):
        conn.execute(m.insert().values(site=site, name=name, value=int(value)))


def enqueue(conn, site: str, message: dict, now: int) -> int | None:
    """Queues `message` (fold_key, alert, kind, locker_id, bay, subject, body, recipients)
    unless a message with the same fold key was queued in the last FOLD_SECONDS: then that
    one's `repeats` grows and None is returned; else the new row's id."""
    o = mail_outbox
    earlier = conn.execute(
        sa.select(o.c.id)
        .where(
            o.c.site == site,
            o.c.fold_key == message["fold_key"],
            o.c.created_at > now - FOLD_SECONDS,
        )
        .order_by(o.c.id.desc())
        .limit(1)
    ).scalar()
    if earlier is not None:
        conn.execute(o.update().where(o.c.id == earlier).values(repeats=o.c.repeats + 1))
        return None
    return conn.execute(
        o.insert().values(
            site=site,
            created_at=now,
            next_try_at=now,
            attempts=0,
            repeats=0,
            **message,
        )
    ).inserted_primary_key[0]


def due(store, site: str, now: int, limit: int = 20) -> list:
    o = mail_outbox
    with store._read() as conn:
        return conn.execute(
            sa.select(o)
            .where(o.c.site == site, o.c.sent_at.is_(None), o.c.next_try_at <= now)
            .order_by(o.c.id)
            .limit(limit)
        ).all()


def mark_sent(store, message_id: int, now: int) -> None:
    with store._write() as conn:
        conn.execute(
            mail_outbox.update()
            .where(mail_outbox.c.id == message_id)
            .values(sent_at=now, last_error=None)
        )


def mark_failed(store, message_id: int, error: str, next_try_at: int) -> None:
    o = mail_outbox
    with store._write() as conn:
        conn.execute(
            o.update()
            .where(o.c.id == message_id)
            .values(attempts=o.c.attempts + 1, last_error=error[:300], next_try_at=next_try_at)
        )


def outbox(store, site: str, limit: int = 100) -> list:
    """The latest messages, newest first (sent or not)."""
    o = mail_outbox
    with store._read() as conn:
        return conn.execute(
            sa.select(o).where(o.c.site == site).order_by(o.c.id.desc()).limit(limit)
        ).all()


def mail_status(store, site: str) -> dict:
    """What the dashboard shows about e-mail: {"queued": messages not yet sent, "oldest": when
    the oldest of them was queued, "failing": True when the latest try failed, "error": its
    error, "attempts": tries of the oldest, "last_sent": when a message last went out}."""
    o = mail_outbox
    with store._read() as conn:
        waiting = conn.execute(
            sa.select(o.c.id, o.c.created_at, o.c.attempts, o.c.last_error)
            .where(o.c.site == site, o.c.sent_at.is_(None))
            .order_by(o.c.id)
        ).all()
        last_sent = conn.execute(
            sa.select(sa.func.max(o.c.sent_at)).where(o.c.site == site)
        ).scalar()
    failing = [w for w in waiting if w.last_error]
    return {
        "queued": len(waiting),
        "oldest": waiting[0].created_at if waiting else None,
        "failing": bool(failing),
        "error": failing[0].last_error if failing else None,
        "attempts": waiting[0].attempts if waiting else 0,
        "last_sent": last_sent,
    }


def unseen_events(conn, site: str, since: int, types, limit: int) -> list:
    """Events of these types received at or after `since` that `mail_seen` does not hold, oldest
    received first, with the holder's name and role."""
    from .store import people

    e, p = events, people
    key = sa.literal("event:") + sa.cast(e.c.id, sa.String)
    seen = sa.select(mail_seen.c.alert).where(mail_seen.c.site == site, mail_seen.c.alert == key)
    return conn.execute(
        sa.select(
            e.c.id, e.c.locker_id, e.c.ts, e.c.sort_ts, e.c.type, e.c.bay, e.c.person,
            e.c.reason, e.c.received_at, p.c.name, p.c.role,
        )
        .select_from(e.outerjoin(p, sa.and_(p.c.site == e.c.site, p.c.person_id == e.c.person)))
        .where(
            e.c.site == site,
            e.c.received_at >= int(since),
            e.c.type.in_(list(types)),
            ~sa.exists(seen),
        )
        .order_by(e.c.received_at, e.c.id)
        .limit(limit)
    ).all()  # fmt: skip


def unseen_refusals(conn, site: str, since: int, limit: int) -> list:
    """`ingest_refusals` rows begun at or after `since` that `mail_seen` does not hold."""
    from .store import ingest_refusals as r

    key = sa.literal("refused:") + sa.cast(r.c.id, sa.String)
    seen = sa.select(mail_seen.c.alert).where(mail_seen.c.site == site, mail_seen.c.alert == key)
    return conn.execute(
        sa.select(r)
        .where(r.c.site == site, r.c.first_at >= int(since), ~sa.exists(seen))
        .order_by(r.c.first_at, r.c.id)
        .limit(limit)
    ).all()


def mark_seen(conn, site: str, items) -> None:
    """Records (alert key, received at) pairs in `mail_seen`."""
    rows = [{"site": site, "alert": k, "at": int(at)} for k, at in items]
    if rows:
        conn.execute(mail_seen.insert(), rows)


def prune_seen(conn, site: str, before: int) -> None:
    conn.execute(mail_seen.delete().where(mail_seen.c.site == site, mail_seen.c.at < int(before)))


def mail_counts(store, site: str) -> dict:
    """The mail queue's figures for /metrics: {"queued": messages not yet sent, "sent": messages
    sent, "failed": tries that failed (of every message, sent or not), "failing": 1 when a
    waiting message's latest try failed, "oldest": when the oldest waiting one was queued}."""
    o = mail_outbox
    waiting = sa.and_(o.c.site == site, o.c.sent_at.is_(None))
    with store._read() as conn:
        row = conn.execute(
            sa.select(
                sa.func.count().filter(o.c.sent_at.is_(None)).label("queued"),
                sa.func.count().filter(o.c.sent_at.is_not(None)).label("sent"),
                sa.func.coalesce(sa.func.sum(o.c.attempts), 0).label("failed"),
                sa.func.min(o.c.created_at).filter(o.c.sent_at.is_(None)).label("oldest"),
            ).where(o.c.site == site)
        ).one()
        failing = conn.execute(
            sa.select(o.c.id).where(waiting, o.c.last_error.is_not(None)).limit(1)
        ).first()
    return {
        "queued": int(row.queued or 0),
        "sent": int(row.sent or 0),
        "failed": int(row.failed or 0),
        "failing": 1 if failing is not None else 0,
        "oldest": row.oldest,
    }


def conditions_mailed(conn, site: str) -> set[str]:
    return set(
        conn.execute(
            sa.select(mail_conditions.c.alert).where(mail_conditions.c.site == site)
        ).scalars()
    )


def set_conditions_mailed(conn, site: str, add, remove, now: int) -> None:
    c = mail_conditions
    remove = list(remove)
    if remove:
        conn.execute(c.delete().where(c.c.site == site, c.c.alert.in_(remove)))
    for key in add:
        conn.execute(c.insert().values(site=site, alert=key, since=now))


# -- queries of the daily review and the report ---------------------------------------------


def day_events(store, site: str, start: int, end: int, types) -> list:
    """The site's events of these types that happened in [start, end) (`sort_ts`: the
    locker's time, or the receipt time when its clock was not set), with the person's and the
    `by`'s names and roles, in the order the host received them."""
    from .store import people

    e = events
    holder = people.alias("holder")
    by = people.alias("by_person")
    with store._read() as conn:
        return conn.execute(
            sa.select(
                e.c.id, e.c.locker_id, e.c.ts, e.c.sort_ts, e.c.received_at, e.c.type,
                e.c.bay, e.c.person, e.c.by, e.c.reason,
                holder.c.name.label("name"), holder.c.role.label("role"),
                by.c.name.label("by_name"),
            )
            .select_from(
                e.outerjoin(
                    holder, sa.and_(holder.c.site == e.c.site, holder.c.person_id == e.c.person)
                ).outerjoin(by, sa.and_(by.c.site == e.c.site, by.c.person_id == e.c.by))
            )
            .where(
                e.c.site == site,
                e.c.sort_ts >= int(start),
                e.c.sort_ts < int(end),
                e.c.type.in_(list(types)),
            )
            .order_by(e.c.received_at, e.c.id)
        ).all()  # fmt: skip


def years(store, site: str) -> dict[str, int]:
    """{person_id: year group} of every pupil on the roster (the highest year of their cards)."""
    from .store import cards

    with store._read() as conn:
        rows = conn.execute(
            sa.select(cards.c.person_id, sa.func.max(cards.c.year).label("year"))
            .where(cards.c.site == site)
            .group_by(cards.c.person_id)
        )
        return {r.person_id: int(r.year or 0) for r in rows}


def people_roles(store, site: str) -> dict[str, tuple[str, str]]:
    """{person_id: (name, role)} of everyone the store knows (active or not)."""
    from .store import people

    with store._read() as conn:
        rows = conn.execute(
            sa.select(people.c.person_id, people.c.name, people.c.role).where(
                people.c.site == site
            )
        )
        return {r.person_id: (r.name, r.role) for r in rows}


def refusal_counts_by_locker(store, site: str, start: int, end: int) -> dict[str, int]:
    """{locker: refused events} whose alert began in [start, end)."""
    from .store import ingest_refusals as r

    with store._read() as conn:
        rows = conn.execute(
            sa.select(r.c.locker_id, sa.func.sum(r.c.count).label("n"))
            .where(r.c.site == site, r.c.first_at >= int(start), r.c.first_at < int(end))
            .group_by(r.c.locker_id)
        )
        return {row.locker_id: int(row.n) for row in rows}
