"""Each locker's signed configuration bundle, and the service's thread that publishes it.

`build_locker_bundle` turns what the store holds for one locker (cards, timetable, grants,
consents, exemptions and visitors) into the bundle `bundle.build_bundle` signs with the locker's
key (docs/protocol.md `config`). `ConfigPublisher` publishes every locker's bundle, retained,
whenever the site's configuration version changes.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from . import topics
from .ingest import one_line

log = logging.getLogger("lockerctl.serve")


def card_tuple(row) -> tuple:
    """A store card row (`Store.config_inputs`) as the (uid_hex, person_id, role, year,
    walk_home, revoked) tuple `build_bundle` takes."""
    return (
        row.uid,
        row.person_id,
        row.role,
        row.year or 0,
        bool(row.walk_home),
        bool(row.revoked),
    )


def grant_dict(row) -> dict:
    """A store grant row (`Store.config_inputs`) as the bundle header's grant object
    (docs/protocol.md)."""
    return {
        "id": row.id,
        "person": row.person_id,
        "from": int(row.from_ts),
        "until": int(row.until_ts),
        "by": row.by,
    }


def build_locker_bundle(
    store, site: str, locker_row, version: int, now: int, compiled: dict | None = None
) -> bytes:
    """The signed config bundle for one locker (a `Store.lockers` row) at this version.
    `compiled` caches compiled timetables between lockers (keyed by the timetable's JSON)."""
    from .bundle import build_bundle
    from .timetable import compile_timetable

    locker_id = locker_row.id
    cards, timetable, grants = store.config_inputs(site, locker_id)
    extra_cards, rules = store.config_extras(site, locker_id)
    tt = None
    if timetable:
        key = json.dumps(timetable, sort_keys=True, default=str)
        cache = compiled if compiled is not None else {}
        if key not in cache:
            cache[key] = compile_timetable(timetable, now)
        tt = cache[key]
    return build_bundle(
        bytes(locker_row.secret),
        locker_id,
        site,
        version,
        now,
        tt,
        [card_tuple(c) for c in cards] + list(extra_cards),
        [grant_dict(g) for g in grants],
        rules,
    )


class ConfigPublisher:
    """Publishes each locker's bundle, retained, whenever the site's configuration changes."""

    poll_interval = 1.0

    def __init__(self, store, site: str, publish, poll_interval: float | None = None, ready=None):
        self.store = store
        self.ready = ready or (lambda: True)  # publish only while connected (else: queued twice)
        self.site = site
        self.publish = publish  # publish(topic, payload: bytes) -> None (retained, QoS 1)
        if poll_interval:
            self.poll_interval = poll_interval
        self.published_version: int | None = None
        self.published: dict[str, int] = {}  # locker -> version of its last published bundle
        self._raised_for: int | None = None  # a reported version a raise was refused for
        self._force = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def republish(self) -> None:
        """Publish everything again at the next poll (after a reconnect: the broker may have
        restarted and lost its retained messages)."""
        self._force = True
        self._wake.set()

    def start(self) -> ConfigPublisher:
        self._thread = threading.Thread(target=self._run, name="config-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.ready():
                    self.poll_once()
            except Exception as e:
                log.error("config publishing failed: %s", one_line(e))
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _keep_ahead(self) -> None:
        """A locker that reports running a later version than the site's (a database restored
        from a backup) would ignore what is published as `stale`: the site's version is
        raised above it first, so the lockers take the configuration the database holds."""
        from .store import StoreError

        version = int(self.store.config_version(self.site))
        reported = self.store.reported_config_version(self.site)
        if reported <= version or reported == self._raised_for:
            return
        try:
            new = self.store.raise_config_version(self.site, actor="serve")
        except StoreError as e:
            self._raised_for = reported  # said once; the next change tries again
            log.error("configuration version not raised: %s", one_line(e))
            return
        log.warning(
            "a locker reports configuration v%d, above this database's v%d (restored from a "
            "backup?): now v%d",
            reported,
            version,
            new,
        )

    def poll_once(self) -> int:
        """Publishes what changed; returns how many bundles were published."""
        force, self._force = self._force, False
        try:
            self._keep_ahead()
            version = int(self.store.config_version(self.site))
            lockers = list(self.store.lockers(self.site))
        except Exception:
            self._force = self._force or force  # the store is busy or down: try again later
            raise
        ids = {row.id for row in lockers}
        if version <= 0:  # nothing configured yet (a bundle's version is at least 1)
            return 0
        if not force and version == self.published_version and ids <= set(self.published):
            return 0
        now = int(time.time())
        compiled: dict = {}
        count = 0
        for row in lockers:
            if not force and self.published.get(row.id) == version:
                continue
            try:
                payload = build_locker_bundle(self.store, self.site, row, version, now, compiled)
            except Exception as e:  # one locker's bad data must not hold back the others
                log.error("config v%d for %s not built: %s", version, row.id, one_line(e))
                self.published[row.id] = version  # retried at the next change
                continue
            self.publish(topics.locker_topic(self.site, row.id, "config"), payload)
            self.published[row.id] = version
            count += 1
        if count:
            log.info("published config v%d to %d locker(s)", version, count)
        self.published_version = version
        return count
