"""What lockers publish, checked: `event` payloads (each event's MAC with the locker's key and
what a firmware can send), `status` and `state` (their shapes), and the topics they come on.
`ingest.Ingestor` runs these on every message; each answers a well-formed value or raises
`BadPayload` (a payload dropped) or `Refused` (one event refused, counted for an alert).
"""

from __future__ import annotations

import json
import re
from json.scanner import make_scanner
from typing import TypeGuard

from . import keys, topics

# The fields of an `event` payload (docs/protocol.md, `event`). `seq`, `ts`, `type`, `jid` and
# `mac` must be present; the others may be absent, which means null.
REQUIRED_FIELDS = ("seq", "ts", "type")
OPTIONAL_FIELDS = ("bay", "person", "by", "reason")
_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_LOCKER_RE = re.compile(r"[A-Za-z0-9._-]{1,28}\Z")
_JID_RE = re.compile(r"[0-9a-f]{16}\Z")
_MAC_RE = re.compile(r"[0-9a-fA-F]{32}\Z")

# What no firmware can send (firmware/locker/events.py): seq and ts are u32 on flash, a text
# field at most 255 bytes of UTF-8.
U32_MAX = 2**32 - 1
MAX_SEQ = U32_MAX
MAX_TS = U32_MAX
MAX_TEXT_BYTES = 255
MAX_BATCH_EVENTS = 256  # events in one `event` payload (the firmware sends at most 256 in one)
MAX_STATE_BYTES = 64 * 1024

# How far ahead of its journal's watermark a seq can be: the journal's flash budget
# (firmware/locker/journal.py `DEFAULT_CAPACITY`, 96 blocks of 4 KiB) over the smallest event
# record it can write (6 bytes of record header, 1 of kind, 1 of flags, a u32 seq, a type
# code; the ring pads every record to a 32-byte slot, so it holds fewer): 393216 // 13 = 30247
# events. A locker cannot hold more unacknowledged than that, so
# a seq further ahead was not written by it. tests/host/test_event_auth.py rederives it.
JOURNAL_BYTES = 393216
SMALLEST_EVENT_RECORD = 6 + 1 + 1 + 4 + 1
JOURNAL_MAX_EVENTS = JOURNAL_BYTES // SMALLEST_EVENT_RECORD

# Event types some firmware sends (firmware/locker/events.py TYPES, and the update outcomes).
# Any other well-formed type is stored, marked `unknown_type` (pages and exports show it).
KNOWN_TYPES = frozenset(
    (
        "boot",
        "deposit",
        "retrieve",
        "override",
        "denied",
        "policy_flag",
        "uncollected",
        "door_forced",
        "door_left_open",
        "door_closed",
        "emergency_open",
        "cmd_rejected",
        "cancelled",
        "config_applied",
        "config_rejected",
        "journal_near_full",
        "clock_set",
        "denied_repeated",
        "unrecorded",
        "released",
        "update_rejected",
        "update_failed",
        "updated",
    )
)
# What a locker answers a signed `open` with (firmware/locker/core.py): the bays it opened, or
# the command refused.
OPEN_ANSWERS = ("emergency_open", "cmd_rejected")
# ... and a signed `release`: the bay released to its holder, or the command refused.
RELEASE_ANSWERS = ("released", "cmd_rejected")


class BadPayload(ValueError):
    """A payload that is not well-formed (not JSON, not an object or array): logged, counted,
    dropped."""


class Refused(ValueError):
    """One event refused: `kind` is a `store.REFUSALS` word (bad_mac, impossible)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _is_int(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# json's C scanner, called as `json.loads` ends up calling it: measured, 1.3 µs for an event
# payload where `json.loads` takes 2.3 µs (its Python layers: whitespace matched by regular
# expressions before and after, the decoder's checks). Anything it does not take whole (leading
# or trailing whitespace, an error) goes to `json.loads`, which answers as always.
_scan_json = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # (typeshed: a class)


def _load(payload: bytes):
    try:
        text = payload.decode("utf-8")
        try:
            obj, end = _scan_json(text, 0)
        except Exception:  # noqa: BLE001 - json.loads below raises what it raises
            end = -1
        if end != len(text):
            return json.loads(text)
        return obj
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # nested 1000 deep: Recursion
        raise BadPayload(f"not JSON ({e.__class__.__name__})") from None


def parse_events(payload: bytes) -> list:
    """The objects of an `event` payload: one JSON object, or an array of them (a batch), each
    to be checked on its own (`check_event`). BadPayload for anything else."""
    obj = _load(payload)
    if isinstance(obj, dict):
        return [obj]
    if isinstance(obj, list):
        if not obj:
            raise BadPayload("an empty batch")
        if len(obj) > MAX_BATCH_EVENTS:
            raise BadPayload(f"a batch of {len(obj)} events (at most {MAX_BATCH_EVENTS})")
        return obj
    raise BadPayload("not a JSON object or array")


def check_event(obj, secret: bytes | None = None, bays: int | None = None) -> dict:
    """The event `obj` (one member of an `event` payload) as a dict with the protocol's fields and
    `jid`, `mac`, `unknown_type`, or Refused: `bad_mac` when its journal id or MAC is missing
    or the MAC does not check with `secret` (None: not checked), `impossible` when it holds
    what no firmware can send (a seq or ts beyond u32 or negative, a bay outside 1..`bays`, a
    text longer than the firmware's, a field of the wrong type)."""
    if not isinstance(obj, dict):
        raise Refused("impossible", "not a JSON object")
    jid, mac = obj.get("jid"), obj.get("mac")
    if not isinstance(jid, str) or not _JID_RE.match(jid):
        raise Refused("bad_mac", "no journal id (jid: 16 lower-case hex digits)")
    if not isinstance(mac, str) or not _MAC_RE.match(mac):
        raise Refused("bad_mac", "no MAC (mac: 32 hex digits)")
    if secret is not None and not keys.event_mac_ok(secret, obj):
        raise Refused("bad_mac", "MAC does not check with the locker's key")
    event = _check_fields(obj, bays)
    unknown = event.pop("unknown_type")
    event.update(jid=jid, mac=mac.lower(), unknown_type=unknown)
    return event


def _check_fields(obj: dict, bays: int | None) -> dict:
    for name in REQUIRED_FIELDS:
        if name not in obj:
            raise Refused("impossible", f"missing field {name!r}")
    seq, ts, etype = obj["seq"], obj["ts"], obj["type"]
    if not _is_int(seq) or not 1 <= seq <= MAX_SEQ:
        raise Refused("impossible", f"seq must be an integer 1..{MAX_SEQ}, not {seq!r}")
    if ts is not None and not (_is_int(ts) and 0 <= ts <= MAX_TS):
        raise Refused("impossible", f"ts must be unix seconds 0..{MAX_TS} or null, not {ts!r}")
    if not isinstance(etype, str) or not _TYPE_RE.match(etype):
        raise Refused("impossible", f"type must be an event word, not {etype!r}"[:200])
    event = {"seq": seq, "ts": ts, "type": etype}
    bay = obj.get("bay")
    top = bays if bays is not None else 255
    if bay is not None and not (_is_int(bay) and 1 <= bay <= top):
        raise Refused("impossible", f"bay must be a bay number 1..{top} or null, not {bay!r}")
    event["bay"] = bay
    for name in ("person", "by", "reason"):
        value = obj.get(name)
        if value is not None and not (isinstance(value, str) and _fits(value)):
            raise Refused(
                "impossible", f"{name} must be text of at most {MAX_TEXT_BYTES} bytes or null"
            )
        event[name] = value
    event["unknown_type"] = etype not in KNOWN_TYPES
    return event


def _check_usual(obj, key: keys.MacKey, bays: int | None) -> dict | None:
    """`check_event(obj, secret, bays)` of an event as lockers send it (every field of the
    protocol's type, a known type, ASCII text) whose MAC checks with `key` (the locker's event
    key): the same dict. None for anything else (another shape, a wrong MAC), for
    `check_event` to decide and explain. Written out for ingest, which checks every event:
    measured on the benchmark's events, 2.8 µs an event, MAC included, where `check_event`
    takes 5.9 µs (its helpers, three regular expressions, a derived key looked up and a
    one-shot HMAC per event)."""
    if type(obj) is not dict:
        return None
    g = obj.get
    jid, mac, seq, ts, etype = g("jid"), g("mac"), g("seq"), g("ts"), g("type")
    bay, person, by, reason = g("bay"), g("person"), g("by"), g("reason")
    int_, str_ = int, str
    # ASCII text of at most MAX_TEXT_BYTES characters is at most that many bytes of UTF-8.
    if not (
        type(seq) is int_
        and 1 <= seq <= MAX_SEQ
        and ((type(ts) is int_ and 0 <= ts <= MAX_TS) or (ts is None and "ts" in obj))
        and type(etype) is str_
        and etype in KNOWN_TYPES
        and (bay is None or (type(bay) is int_ and 1 <= bay <= (255 if bays is None else bays)))
        and (person is None or (type(person) is str_ and person.isascii()))
        and (by is None or (type(by) is str_ and by.isascii()))
        and (reason is None or (type(reason) is str_ and reason.isascii()))
        and type(jid) is str_
        and type(mac) is str_
        and len(mac) == 32
        and _JID_RE.match(jid)
    ):
        return None
    if (
        (person is not None and len(person) > MAX_TEXT_BYTES)
        or (by is not None and len(by) > MAX_TEXT_BYTES)
        or (reason is not None and len(reason) > MAX_TEXT_BYTES)
    ):
        return None
    try:
        # 32 characters give 16 bytes only if each is a hex digit (fromhex skips whitespace)
        got = bytes.fromhex(mac)
    except ValueError:
        return None
    if len(got) != 16:
        return None
    # keys.event_mac's message: integers in decimal, null as the empty string
    msg = (
        f"{seq}|{'' if ts is None else ts}|{etype}|{'' if bay is None else bay}|"
        f"{person or ''}|{by or ''}|{reason or ''}|{jid}"
    )
    if not keys.equal(key.digest(msg.encode())[: keys.MAC_BYTES], got):
        return None
    return {
        "seq": seq,
        "ts": ts,
        "type": etype,
        "bay": bay,
        "person": person,
        "by": by,
        "reason": reason,
        "jid": jid,
        "mac": mac.lower(),
        "unknown_type": False,
    }


def _fits(text: str) -> bool:
    try:
        return len(text.encode("utf-8")) <= MAX_TEXT_BYTES
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8, no firmware writes it
        return False


def parse_event(payload: bytes, secret: bytes | None = None, bays: int | None = None) -> dict:
    """The one event in `payload` (`check_event`); BadPayload for anything else."""
    objs = parse_events(payload)
    if len(objs) != 1:
        raise BadPayload("a batch, not one event")
    try:
        return check_event(objs[0], secret, bays)
    except Refused as e:
        raise BadPayload(str(e)) from None


def parse_topic(topic: str, site: str) -> tuple[str, str] | None:
    """`lockers/<site>/<locker>/<kind>` -> (locker, kind), or None for any other topic or a
    locker id no locker can have."""
    where = topics.parse(topic, site)
    if where is None or not _LOCKER_RE.match(where[0]):
        return None
    return where


def _parse_status(payload: bytes) -> bool:
    word = payload.decode("utf-8", "replace").strip()
    if word == "online":
        return True
    if word == "offline":
        return False
    raise BadPayload(f"status must be online or offline, not {word[:40]!r}")


_DOOR_WORDS = ("closed", "open", "unknown")


def parse_state(payload: bytes, locker: str | None = None) -> dict:
    """A locker's retained `state`, checked against its shape (docs/protocol.md, `state`):
    `locker` (this locker's id), `clock_ok`, `online`, `pending`, `config`, `bays` (each
    {bay, locked, door, holder}), optional `version`, `checkpoint` ({note, acked} or null) and
    any further fields. BadPayload for anything else: the last good state is kept."""
    if len(payload) > MAX_STATE_BYTES:
        raise BadPayload(f"state of {len(payload)} bytes (at most {MAX_STATE_BYTES})")
    obj = _load(payload)
    if not isinstance(obj, dict):
        raise BadPayload("state is not a JSON object")
    if not isinstance(obj.get("locker"), str) or (locker is not None and obj["locker"] != locker):
        raise BadPayload(f"state names locker {obj.get('locker')!r}, not {locker!r}"[:200])
    for name in ("clock_ok", "online"):
        if not isinstance(obj.get(name), bool):
            raise BadPayload(f"state {name} must be true or false")
    if not (_is_int(obj.get("pending")) and obj["pending"] >= 0):
        raise BadPayload("state pending must be a count")
    config = obj.get("config")
    if config is not None and not (_is_int(config) and config >= 0):
        raise BadPayload("state config must be a version number or null")
    bays = obj.get("bays")
    if not isinstance(bays, list) or len(bays) > 255:
        raise BadPayload("state bays must be a list of bays")
    for b in bays:
        if not isinstance(b, dict):
            raise BadPayload("a bay in state is not an object")
        if not (_is_int(b.get("bay")) and 1 <= b["bay"] <= 255):
            raise BadPayload("a bay in state has no bay number")
        if not isinstance(b.get("locked"), bool):
            raise BadPayload("a bay's locked must be true or false")
        if b.get("door") not in _DOOR_WORDS:
            raise BadPayload(f"a bay's door must be one of {', '.join(_DOOR_WORDS)}")
        holder = b.get("holder")
        if holder is not None and not (isinstance(holder, str) and _fits(holder)):
            raise BadPayload("a bay's holder must be a person id or null")
    version = obj.get("version")
    if version is not None and not (isinstance(version, str) and len(version) <= 64):
        raise BadPayload("state version must be text")
    checkpoint = obj.get("checkpoint")
    if checkpoint is not None and not (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("note"), str)
        and len(checkpoint["note"]) <= 1000
        and _is_int(checkpoint.get("acked"))
        and checkpoint["acked"] >= 0
    ):
        raise BadPayload("state checkpoint must be {note, acked} or null")
    return obj
