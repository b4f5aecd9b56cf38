"""The fleet's tables (docs/fleet.md): the firmware offered to each locker.

`firmware_offers` holds, per locker, the latest offer `lockerctl firmware publish` made (its
version, how many files and bytes, when and by whom); what the locker runs and how far it has
fetched comes from its retained `state`. Migration `0012_firmware_offers`.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from . import store as store_mod
from .store import metadata

firmware_offers = sa.Table(
    "firmware_offers",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(40), nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("offered_at", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(120), nullable=False),
)


def record_offers(
    store, site: str, lockers: list[str], version: str, files: int, nbytes: int, actor: str
) -> None:
    """Notes the offer made to each of `lockers` (one transaction) with its trail entry."""
    now = int(time.time())
    t = firmware_offers
    with store._write() as conn:
        for locker_id in lockers:
            conn.execute(t.delete().where(t.c.site == site, t.c.locker_id == locker_id))
            conn.execute(
                t.insert().values(
                    site=site,
                    locker_id=locker_id,
                    version=version,
                    files=files,
                    bytes=nbytes,
                    offered_at=now,
                    actor=actor,
                )
            )
    store.record_action(
        site,
        actor,
        "firmware_publish",
        {"version": version, "lockers": lockers, "files": files, "bytes": nbytes},
    )


def offers(store, site: str) -> dict[str, sa.Row]:
    """The latest offer per locker id."""
    t = firmware_offers
    with store._read() as conn:
        rows = conn.execute(sa.select(t).where(t.c.site == site)).all()
    return {r.locker_id: r for r in rows}


def recent_boots(store, site: str, since: int) -> dict[str, int]:
    """`boot` events per locker received since unix second `since` (a reset loop shows here)."""
    ev = store_mod.events
    with store._read() as conn:
        rows = conn.execute(
            sa.select(ev.c.locker_id, sa.func.count())
            .where(ev.c.site == site, ev.c.type == "boot", ev.c.received_at >= since)
            .group_by(ev.c.locker_id)
        ).all()
    return {r[0]: int(r[1]) for r in rows}
