"""MQTT ingest: lockers' events into the audit store exactly once, acknowledged after the commit.

`ingestlink.IngestLink` receives and gathers what arrived into a batch (up to `max_batch` messages
or `max_wait` seconds after the first); `Ingestor.write` parses it, checks each event on its own
(its MAC with the locker's key, then what a firmware can send: `check_event`), commits the good
ones with one `Store.ingest_journals` call and only then publishes one MACed `ack` per journal.
What it refuses is counted per locker for an urgent alert (`Store.record_refusals`). Whatever
happens between the commit and the ack (a crash, a lost message) is repaired by the locker
resending: the store counts the resent events as duplicates and the next ack covers them.
The checks of what lockers publish (`check_event`, `parse_state`, ...) are `payloads`'.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from . import keys, topics
from .payloads import (
    JOURNAL_MAX_EVENTS,
    BadPayload,
    Refused,
    _check_usual,
    _is_int,
    _parse_status,
    check_event,
    parse_events,
    parse_state,
    parse_topic,
)

log = logging.getLogger("lockerctl.serve")


class Stats:
    """Counters the service logs on exit (and tests read)."""

    def __init__(self):
        self.queued = 0  # messages received from the broker (the ingest link counts them)
        self.received = 0  # well-formed events handed to the store
        self.bad = 0  # payloads rejected by validation (not JSON, malformed state, ...)
        self.bad_mac = 0  # events refused: journal id or MAC missing or wrong
        self.impossible = 0  # events refused: what no firmware can send
        self.seq_ahead = 0  # events refused: seq beyond what the journal can hold
        self.conflicts = 0  # events kept aside: other content for a stored (locker, jid, seq)
        self.unknown_locker = 0  # events from lockers the store does not know
        self.batches = 0
        self.failed_batches = 0
        self.acks = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


class Ingestor:
    """Parses what the lockers publish and writes it to the store, acknowledging after the commit.

    `store` needs `ingest_journals(site, batch, max_ahead)`, `record_refusals(site, items)`,
    `set_locker_status(site, locker, online=None, state=None)` and `lockers(site)` (rows with
    id, secret and bays). `write(raw)` takes a batch of `(topic, payload)` as they came from the
    broker (`ingestlink.IngestLink` gathers them), checks each event's MAC with its locker's
    secret, and calls `publish_ack(locker, ack)` after the commit for every journal with events
    in the batch, `ack` being the `ack` payload object ({"seq", "jid", "mac"}).
    """

    max_batch = 2000  # a flood commits in big batches: the per-locker cost of a commit is shared
    max_wait = 0.02  # seconds from the first message received to the commit
    retry_delay = 0.5
    bad_log_limit = 20  # bad-payload lines logged per minute
    # One of several workers sharing the stream (`serve --workers N`): each batch through
    # `store.ingest.ingest_shared`, which lets the others write at the same time.
    shared = False

    def __init__(
        self,
        store,
        site: str,
        publish_ack: Callable[[str, dict], None] | None,
        max_batch: int | None = None,
        max_wait: float | None = None,
    ):
        self.store = store
        self.site = site
        self.publish_ack = publish_ack
        if max_batch:
            self.max_batch = max_batch
        if max_wait is not None:
            self.max_wait = max_wait
        self.stats = Stats()
        self._lockers: dict[str, tuple[bytes | None, int | None]] = {}  # id -> (secret, bays)
        self._known_at = 0.0
        self._unknown_warned: dict[str, float] = {}
        self._bad_window = time.monotonic()
        self._bad_logged = self._bad_suppressed = 0
        self._refusals: list[tuple[str, str, str]] = []  # (locker, kind, detail) to record
        self._topics: dict[str, tuple[str, str] | None] = {}  # topic -> parse_topic's answer

    @property
    def _known(self) -> set:
        return set(self._lockers)

    def _parse(self, topic: str, payload: bytes):
        """(kind, locker, value) for a message worth writing, else None (bad ones logged)."""
        # The same few topics again and again (one per locker and kind): read each once.
        if topic in self._topics:
            where = self._topics[topic]
        else:
            where = parse_topic(topic, self.site)
            if len(self._topics) >= 10_000:  # random topics must not fill the memory
                self._topics.clear()
            self._topics[topic] = where
        if where is None:
            return None
        locker, kind = where
        try:
            if kind == "event":
                return ("event", locker, parse_events(payload))
            if kind == "status":
                return ("status", locker, _parse_status(payload))
            if kind == "state":
                return ("state", locker, parse_state(payload, locker))
        except BadPayload as e:
            self.stats.bad += 1
            self._log_bad(kind, topic, e)
        return None

    def _log_bad(self, kind: str, topic: str, e: Exception) -> None:
        """One line per bad payload, at most `bad_log_limit` a minute: a device gone haywire
        must not fill the disk with the same line."""
        now = time.monotonic()
        if now - self._bad_window >= 60:
            if self._bad_suppressed:
                log.warning(
                    "%d more bad payloads in the last minute (not logged)", self._bad_suppressed
                )
            self._bad_window, self._bad_logged, self._bad_suppressed = now, 0, 0
        if self._bad_logged < self.bad_log_limit:
            self._bad_logged += 1
            log.warning("bad %s on %s: %s", kind, topic, e)
        else:
            self._bad_suppressed += 1

    def write(self, raw: list) -> None:
        items = [item for item in (self._parse(t, p) for t, p in raw) if item is not None]
        batch: list = []
        for kind, locker, value in items:
            if kind == "event":
                self._check_into(batch, locker, value)
        if batch:
            self._ingest(batch)
        self._flush_refusals()
        # Status and state after the events: only the latest of each per locker matters.
        latest: dict[tuple[str, str], object] = {}
        for kind, locker, value in items:
            if kind != "event":
                latest[(kind, locker)] = value
        for (kind, locker), value in latest.items():
            if not self._is_known(locker):
                continue
            try:
                if kind == "status":
                    self.store.set_locker_status(self.site, locker, online=value)
                else:
                    self.store.set_locker_status(self.site, locker, state=value)
            except Exception as e:  # the store is down or refused: the next message retries
                log.error("could not record %s of %s: %s", kind, locker, one_line(e))

    def _check_into(self, out: list, locker: str, objs: list) -> None:
        """Appends to `out` the events of one payload whose MAC checks with the locker's key and
        that a firmware could have sent, as (locker, event); the others counted, logged and kept
        for an alert."""
        lockers = self._lockers
        if locker not in lockers and not self._is_known(locker):
            self.stats.unknown_locker += len(objs)
            now = time.monotonic()
            if now - self._unknown_warned.get(locker, -60.0) >= 60:  # a line a minute
                self._unknown_warned[locker] = now
                log.warning(
                    "events from unregistered locker %s on site %s: dropped", locker, self.site
                )
            return
        for obj in objs:
            secret, bays = self._lockers[locker]  # again after each: a refusal may reload them
            if secret is not None:
                ev = _check_usual(obj, keys.event_key(secret), bays)
                if ev is not None:
                    out.append((locker, ev))
                    continue
            try:
                try:
                    ev = check_event(obj, secret, bays)
                except Refused as e:
                    # rekeyed since the last look? Looked again at most once a second: a flood
                    # of forgeries must not become a flood of queries.
                    stale = time.monotonic() - self._known_at > 1.0
                    if e.kind != "bad_mac" or not stale or not self._reload(locker):
                        raise
                    secret, bays = self._lockers[locker]  # rekeyed since the last look?
                    ev = check_event(obj, secret, bays)
            except Refused as e:
                setattr(self.stats, e.kind, getattr(self.stats, e.kind) + 1)
                seq = obj.get("seq") if isinstance(obj, dict) else None
                detail = f"seq {seq!r}: {e}"[:300]
                topic = topics.locker_topic(self.site, locker, "event")
                self._log_bad("event", topic, Refused(e.kind, detail))
                self._refusals.append((locker, e.kind, detail))
                continue
            out.append((locker, ev))

    def _flush_refusals(self) -> None:
        if not self._refusals:
            return
        items, self._refusals = self._refusals, []
        try:
            self.store.record_refusals(self.site, items)
        except Exception as e:
            log.error("could not record %d refused events: %s", len(items), one_line(e))

    def _ingest(self, batch: list) -> None:
        result = self._commit(batch)
        if result is None:
            return
        self.stats.batches += 1
        self.stats.received += len(batch)
        for key, seqs in result.conflicts.items():
            self.stats.conflicts += len(seqs)
            log.error(
                "locker %s journal %s: seq %s stored before with other content: kept aside as"
                " a conflict, not acknowledged",
                key[0],
                key[1],
                ", ".join(str(s) for s in seqs[:5]),
            )
        for locker, jid, seq, kind in result.refused:
            self.stats.seq_ahead += kind == "seq_ahead"
            log.warning("locker %s journal %s seq %s refused: %s", locker, jid, seq, kind)
        log.debug("stored %d events: acks %s", result.stored, result.acks)
        self._send_acks(result)

    def _store_batch(self, batch: list):
        if self.shared:
            from .store.ingest import ingest_shared

            return ingest_shared(self.store, self.site, batch, JOURNAL_MAX_EVENTS)
        return self.store.ingest_journals(self.site, batch, JOURNAL_MAX_EVENTS)

    def _commit(self, batch: list):
        """One transaction; on failure one retry, then event by event so that one event the store
        refuses cannot hold back the others (given up after a few failures in a row: then it is
        the store, not an event). None when nothing could be committed."""
        for attempt in (1, 2):
            try:
                return self._store_batch(batch)
            except Exception as e:
                log.error(
                    "commit of %d events failed (attempt %d): %s",
                    len(batch),
                    attempt,
                    one_line(e),
                )
                time.sleep(self.retry_delay)
        self.stats.failed_batches += 1
        if len(batch) == 1:
            return None
        merged = None
        failures = 0
        for locker, ev in batch:
            try:
                one = self._store_batch([(locker, ev)])
                failures = 0
            except Exception as e:
                log.error("event seq %s of %s not stored: %s", ev["seq"], locker, one_line(e))
                failures += 1
                if failures >= 3:
                    log.error("the store refuses every event: the lockers will send them again")
                    break
                continue
            if merged is None:
                merged = one
            else:
                merged.acks.update(one.acks)
                for key, seqs in one.conflicts.items():
                    merged.conflicts.setdefault(key, []).extend(seqs)
                merged.refused += one.refused
                merged.stored += one.stored
        if merged is not None:  # a journal with a conflict anywhere gets no ack
            for key in merged.conflicts:
                merged.acks.pop(key, None)
        return merged

    def _send_acks(self, result) -> None:
        publish = self.publish_ack
        if publish is None:  # not linked to a broker: no acks to send
            return
        for (locker, jid), seq in sorted(result.acks.items()):
            if not seq or (locker, jid) in result.conflicts:
                continue  # nothing stored from 1 onwards yet, or a conflict: no ack
            secret = self._lockers.get(locker, (None, None))[0]
            if secret is None:
                continue
            ack = {"seq": int(seq), "jid": jid, "mac": keys.ack_mac(secret, int(seq), jid)}
            try:
                publish(locker, ack)
                self.stats.acks += 1
            except Exception as e:
                log.error("ack %s to %s not sent: %s", seq, locker, one_line(e))

    def _reload(self, locker: str | None = None) -> bool:
        """Reads the lockers (id, secret, bays) again; whether `locker` is among them."""
        self._known_at = time.monotonic()
        try:
            self._lockers = {
                row.id: (bytes(row.secret), _valid_bays(row.bays))
                for row in self.store.lockers(self.site)
            }
        except Exception as e:
            log.error("could not list lockers: %s", one_line(e))
        return locker in self._lockers

    def _is_known(self, locker: str) -> bool:
        if locker in self._lockers:
            return True
        if time.monotonic() - self._known_at > 1.0:  # added by another process since?
            return self._reload(locker)
        return False


def _valid_bays(bays) -> int | None:
    return bays if _is_int(bays) and bays > 0 else None


# Tracked objects allocated (net) between two young-generation collections in the ingest
# process; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """The ingest process's garbage collector, once it has started: what it has built so far
    (modules, SQLAlchemy's tables and compiled statements, the store) frozen out of every
    collection, and the young generation collected after `GC_YOUNG_THRESHOLD` new objects, not
    700. A batch makes several containers per event (the parsed and the checked event, the
    rows, the trail entries) that live until its commit, so with the defaults each batch of
    2,000 set off a few dozen collections and now and then a full one that walked the whole
    heap. Measured on the benchmark's batches: the collector took 3.6 µs an event, 0.8 µs
    frozen alone, under 0.1 µs with both. Only the ingest process (`ingestlink`) calls it: a
    process of its own, so nothing else shares these settings."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0] if text else ''}"[:300]
