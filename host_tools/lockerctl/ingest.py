"""MQTT ingest: lockers' events into the audit store exactly once, acknowledged after the commit.

`ingestlink.IngestLink` receives and gathers what arrived into a batch (up to `max_batch` messages
or `max_wait` seconds after the first); `Ingestor.write` parses it, commits its events with one
`Store.ingest` call and only then publishes each locker's `ack`. Whatever happens between the
commit and the ack (a crash, a lost message) is repaired by the locker resending: the store counts
the resent events as duplicates and the next ack covers them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from . import keys

log = logging.getLogger("lockerctl.serve")

# The fields of an `event` payload (CONTRACT §4). `seq`, `ts` and `type` must be present; the
# others may be absent, which means null.
REQUIRED_FIELDS = ("seq", "ts", "type")
OPTIONAL_FIELDS = ("bay", "person", "by", "reason")
MAX_TEXT = 200  # longest person/by/reason accepted (reasons are free text typed by the office)
_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_LOCKER_RE = re.compile(r"[A-Za-z0-9._-]{1,28}\Z")
_JID_RE = re.compile(r"[0-9a-f]{16}\Z")
MAX_SEQ = 2**63 - 1
MAX_TS = 2**40  # far beyond any real clock; catches garbage without a calendar check


class BadPayload(ValueError):
    """An event payload that is not a well-formed CONTRACT §4 event: logged, counted, dropped."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_event(payload: bytes) -> dict:
    """The event in `payload` as a dict with exactly the seven CONTRACT fields; BadPayload if the
    payload is not JSON, not an object, lacks a required field or has a wrong type."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # nested 1000 deep: Recursion
        raise BadPayload(f"not JSON ({e.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise BadPayload("not a JSON object")
    for name in REQUIRED_FIELDS:
        if name not in obj:
            raise BadPayload(f"missing field {name!r}")
    seq, ts, etype = obj["seq"], obj["ts"], obj["type"]
    if not _is_int(seq) or not 1 <= seq <= MAX_SEQ:
        raise BadPayload(f"seq must be a positive integer, not {seq!r}")
    if ts is not None and not (_is_int(ts) and 0 <= ts < MAX_TS):
        raise BadPayload(f"ts must be unix seconds or null, not {ts!r}")
    if not isinstance(etype, str) or not _TYPE_RE.match(etype):
        raise BadPayload(f"type must be an event word, not {etype!r}")
    event = {"seq": seq, "ts": ts, "type": etype}
    bay = obj.get("bay")
    if bay is not None and not (_is_int(bay) and 1 <= bay <= 255):
        raise BadPayload(f"bay must be a bay number or null, not {bay!r}")
    event["bay"] = bay
    for name in ("person", "by", "reason"):
        value = obj.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_TEXT):
            raise BadPayload(f"{name} must be a string of at most {MAX_TEXT} characters or null")
        event[name] = value
    jid = obj.get("jid")  # the locker's journal id, echoed in the ack (docs/protocol.md)
    if isinstance(jid, str) and _JID_RE.match(jid):
        event["jid"] = jid
    return event


def ack_mac(secret: bytes, seq: int, jid: str) -> str:
    """The MAC a locker checks on an ack (docs/protocol.md, `ack`): the first 16 bytes of
    HMAC-SHA256(HMAC-SHA256(secret, "ack"), "<seq>|<jid>"), in hex."""
    return keys.hmac_sha256(keys.derive(secret, b"ack"), f"{seq}|{jid}".encode())[:16].hex()


def parse_topic(topic: str, site: str) -> tuple[str, str] | None:
    """`lockers/<site>/<locker>/<kind>` -> (locker, kind), or None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "lockers" or parts[1] != site:
        return None
    if not _LOCKER_RE.match(parts[2]):
        return None
    return parts[2], parts[3]


class Stats:
    """Counters the service logs on exit (and tests read)."""

    def __init__(self):
        self.queued = 0  # messages received from the broker (the ingest link counts them)
        self.received = 0  # well-formed events handed to the store
        self.bad = 0  # payloads rejected by validation
        self.unknown_locker = 0  # events from lockers the store does not know
        self.batches = 0
        self.failed_batches = 0
        self.acks = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


class Ingestor:
    """Parses what the lockers publish and writes it to the store, acknowledging after the commit.

    `store` needs `ingest(site, batch) -> {locker: ack_seq}`, `set_locker_status(site, locker,
    online=None, state=None)` and `lockers(site)`. `write(raw)` takes a batch of `(topic,
    payload)` as they came from the broker (`ingestlink.IngestLink` gathers them) and calls
    `publish_ack(locker, seq, jid, mac)` after the commit for every locker with events in the
    batch (jid and mac None when the events named no journal or the locker's secret is unknown).
    """

    max_batch = 2000  # a flood commits in big batches: the per-locker cost of a commit is shared
    max_wait = 0.02  # seconds from the first message received to the commit
    retry_delay = 0.5
    bad_log_limit = 20  # bad-payload lines logged per minute

    def __init__(
        self,
        store,
        site: str,
        publish_ack: Callable[[str, int], None] | None,
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
        self._known: set[str] = set()
        self._secrets: dict[str, bytes] = {}
        self._known_at = 0.0
        self._unknown_warned: dict[str, float] = {}
        self._bad_window = time.monotonic()
        self._bad_logged = self._bad_suppressed = 0

    def _parse(self, topic: str, payload: bytes):
        """(kind, locker, value) for a message worth writing, else None (bad ones logged)."""
        where = parse_topic(topic, self.site)
        if where is None:
            return None
        locker, kind = where
        try:
            if kind == "event":
                return ("event", locker, parse_event(payload))
            if kind == "status":
                return ("status", locker, _parse_status(payload))
            if kind == "state":
                return ("state", locker, _parse_state(payload))
        except BadPayload as e:
            self.stats.bad += 1
            self._log_bad(kind, topic, e)
        return None

    def _log_bad(self, kind: str, topic: str, e: BadPayload) -> None:
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
        batch = [(locker, ev) for kind, locker, ev in items if kind == "event"]
        if batch:
            self._ingest(batch)
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

    def _ingest(self, batch: list) -> None:
        known = []
        for locker, ev in batch:
            if self._is_known(locker):
                known.append((locker, ev))
            else:
                self.stats.unknown_locker += 1
                now = time.monotonic()
                if now - self._unknown_warned.get(locker, -60.0) >= 60:  # a line a minute
                    self._unknown_warned[locker] = now
                    log.warning(
                        "events from unregistered locker %s on site %s (seq %s): dropped",
                        locker,
                        self.site,
                        ev["seq"],
                    )
        if not known:
            return
        acks = self._commit(known)
        if acks is None:
            return
        self.stats.batches += 1
        self.stats.received += len(known)
        log.debug("stored %d events: acks %s", len(known), acks)
        jids = {locker: ev["jid"] for locker, ev in known if "jid" in ev}
        self._send_acks(acks, {locker for locker, _ in known}, jids)

    def _commit(self, batch: list) -> dict | None:
        """One transaction; on failure one retry, then event by event so that one event the store
        refuses cannot hold back the others (given up after a few failures in a row: then it is
        the store, not an event). None when nothing could be committed."""
        for attempt in (1, 2):
            try:
                return self.store.ingest(self.site, batch)
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
        acks: dict[str, int] = {}
        failures = 0
        for locker, ev in batch:
            try:
                acks.update(self.store.ingest(self.site, [(locker, ev)]))
                failures = 0
            except Exception as e:
                log.error("event seq %s of %s not stored: %s", ev["seq"], locker, one_line(e))
                failures += 1
                if failures >= 3:
                    log.error("the store refuses every event: the lockers will send them again")
                    break
        return acks or None

    def _send_acks(self, acks: dict, lockers: set, jids: dict | None = None) -> None:
        for locker in sorted(lockers):
            seq = acks.get(locker)
            if not seq:  # nothing stored from 1 onwards yet: there is nothing to acknowledge
                continue
            jid = (jids or {}).get(locker)
            secret = self._secrets.get(locker) if self._is_known(locker) else None
            mac = ack_mac(secret, int(seq), jid) if jid and secret else None
            try:
                self.publish_ack(locker, int(seq), jid, mac)
                self.stats.acks += 1
            except Exception as e:
                log.error("ack %s to %s not sent: %s", seq, locker, one_line(e))

    def _is_known(self, locker: str) -> bool:
        now = time.monotonic()
        if locker in self._known and now - self._known_at <= 5.0:  # a rekey: a new secret
            return True
        if now - self._known_at > 1.0:  # a locker added by another process since the last look
            self._known_at = now
            try:
                rows = self.store.lockers(self.site)
                self._known = {_row_id(row) for row in rows}
                self._secrets = {_row_id(row): _row_secret(row) for row in rows}
            except Exception as e:
                log.error("could not list lockers: %s", one_line(e))
        return locker in self._known


def _row_id(row) -> str:
    if isinstance(row, dict):
        return row["id"]
    return getattr(row, "id", None) or row[0]


def _row_secret(row) -> bytes | None:
    secret = row.get("secret") if isinstance(row, dict) else getattr(row, "secret", None)
    if isinstance(secret, str):
        return bytes.fromhex(secret)
    return bytes(secret) if secret else None


def _parse_status(payload: bytes) -> bool:
    word = payload.decode("utf-8", "replace").strip()
    if word == "online":
        return True
    if word == "offline":
        return False
    raise BadPayload(f"status must be online or offline, not {word[:40]!r}")


def _parse_state(payload: bytes) -> dict:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # nested 1000 deep: Recursion
        raise BadPayload(f"not JSON ({e.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise BadPayload("not a JSON object")
    return obj


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0] if text else ''}"[:300]
