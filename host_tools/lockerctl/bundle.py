"""Builds a locker's signed configuration bundle (docs/protocol.md, `config`).

The byte format is shared with the firmware's `locker/bundle.py`, which reads it from flash;
tests/host/test_bundle_cross.py checks the two against each other under CPython and MicroPython.
"""

import json
import struct
from collections.abc import Iterable

from . import keys

MAGIC = b"CLCF"
FORMAT = 1  # cards only
FORMAT_RULES = 2  # cards, then the rule table (consents, exemptions, visitors)
RECORD = 48
RULE = 96  # a rule record (firmware/locker/exceptions.py reads them)
MAX_RULES = 65535  # the fixed header's u16
MAX_WINDOWS = 4  # an exemption's daily windows in one rule record
FIXED = 20
MAC_LEN = 32
PERSON_MAX = 28
MAX_HEADER = 16384  # the firmware's Receiver.MAX_HEADER: the header JSON is parsed in RAM
# The most bytes (whole payload, MAC included) a locker takes: the firmware's `max_config_bytes`.
# The one place the host names it: changes that would make a bundle larger are refused where
# they are made (`check_size`), and `build_bundle` never makes one.
MAX_BUNDLE = 524288
FLAG_WALK_HOME = 1
FLAG_REVOKED = 2
ROLE_CODES = {"pupil": 1, "staff": 2, "slt": 3, "office": 4, "visitor": 5}
RULE_KINDS = {"consent": 1, "exemption": 2, "visitor": 3}
CATEGORIES = {"medical": 1, "send": 2, "young_carer": 3, "other": 4}
ROLE_NAMES = {v: k for k, v in ROLE_CODES.items()}
_FIXED_FMT = ">4sBBHIII"


def _card_fields(card) -> tuple:
    """A card as (uid_hex, person_id, role, year, walk_home, revoked)."""
    if not isinstance(card, (tuple, list)) or len(card) != 6:
        raise ValueError(
            f"card row {card!r}: expected 6 fields "
            "(uid_hex, person_id, role, year, walk_home, revoked)"
        )
    return tuple(card)


def _flag(value) -> bool:
    if isinstance(value, str):
        if value.lower() in ("yes", "true", "1"):
            return True
        if value.lower() in ("no", "false", "0", ""):
            return False
        raise ValueError(f"expected yes/no, got {value!r}")
    return bool(value)


def card_record(ckey: bytes, card) -> bytes:
    """The 48-byte record of one card: hash, role, year, flags, person_id length, person_id."""
    uid, person, role, year, walk_home, revoked = _card_fields(card)
    who = f"card of person {person!r}"
    if not isinstance(person, str) or not person:
        raise ValueError(f"{who}: person_id must be a non-empty string")
    pid = person.encode("utf-8")
    if len(pid) > PERSON_MAX:
        raise ValueError(f"{who}: person_id is {len(pid)} bytes in UTF-8, at most {PERSON_MAX}")
    if role not in ROLE_CODES:
        raise ValueError(f"{who}: role {role!r} is not one of {', '.join(ROLE_CODES)}")
    year = 0 if year in (None, "") else int(year)
    if not 0 <= year <= 255:
        raise ValueError(f"{who}: year {year} out of range")
    try:
        raw_uid = bytes.fromhex(keys.normalise_uid(uid))
    except (ValueError, TypeError):
        raise ValueError(f"{who}: card UID must be 8 or 14 hex digits") from None
    flags = (FLAG_WALK_HOME if _flag(walk_home) else 0) | (FLAG_REVOKED if _flag(revoked) else 0)
    digest = keys.hmac_sha256(ckey, raw_uid)[: keys.CARD_HASH_BYTES]
    return digest + bytes((ROLE_CODES[role], year, flags, len(pid))) + pid.ljust(PERSON_MAX, b"\0")


def build_bundle(
    secret: bytes,
    locker_id: str,
    site: str,
    version: int,
    issued: int,
    timetable: dict | None,
    cards: Iterable,
    grants: list | None,
    rules: Iterable[dict] | None = None,
) -> bytes:
    """The whole signed bundle for one locker; ValueError naming the bad card or field.
    `rules`: consents, exemptions and visitors as `rule_record` takes them."""
    if not 0 < version < 2**32:
        raise ValueError(f"bundle version {version} out of range 1..2^32-1")
    ckey = keys.card_key(secret)
    records = sorted(card_record(ckey, c) for c in cards)
    for a, b in zip(records, records[1:], strict=False):
        if a[:16] == b[:16]:
            raise ValueError(f"card listed twice (persons {_person(a)!r} and {_person(b)!r})")
    table = sorted(rule_record(r) for r in rules or ())
    if len(table) > MAX_RULES:
        raise ValueError(f"{len(table)} consents, exemptions and visitors: at most {MAX_RULES}")
    hjson = bundle_header(locker_id, site, version, issued, timetable, grants)
    check_size(locker_id, len(hjson), len(records), len(table))
    # format 1 while there is no rule table: what firmware from before rules reads
    fmt = FORMAT_RULES if table else FORMAT
    body = b"".join(
        [
            struct.pack(
                _FIXED_FMT, MAGIC, fmt, RECORD, len(table), version, len(records), len(hjson)
            ),
            hjson,
            *records,
            *table,
        ]
    )
    return body + keys.hmac_sha256(keys.config_key(secret), body)


def bundle_header(
    locker_id: str, site: str, version: int, issued: int, timetable, grants
) -> bytes:
    """The bundle's header JSON, as the bundle carries it."""
    header = {
        "locker": locker_id,
        "site": site,
        "version": version,
        "issued": int(issued),
        "timetable": timetable,
        "grants": list(grants or []),
    }
    return json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def bundle_size(header_len: int, ncards: int, nrules: int = 0) -> int:
    """Bytes of a bundle with a header of `header_len` bytes, `ncards` cards and `nrules`
    rule records."""
    return FIXED + header_len + ncards * RECORD + nrules * RULE + MAC_LEN


def card_capacity(header_len: int, nrules: int = 0) -> int:
    """How many cards fit in a bundle next to a header of `header_len` bytes (and rules)."""
    return max(0, (MAX_BUNDLE - FIXED - MAC_LEN - header_len - nrules * RULE) // RECORD)


def check_size(locker_id: str, header_len: int, ncards: int, nrules: int = 0) -> int:
    """The bundle's size; ValueError with a one-line reason naming the limit when a locker
    could not take it."""
    if header_len > MAX_HEADER:
        raise ValueError(
            f"the configuration header for {locker_id} would be {header_len:,} bytes; a locker "
            f"takes at most {MAX_HEADER:,} (too many exception grants?)"
        )
    size = bundle_size(header_len, ncards, nrules)
    if size > MAX_BUNDLE or nrules > MAX_RULES:
        rules = f", {nrules:,} consents, exemptions and visitors" if nrules else ""
        raise ValueError(
            f"the configuration for {locker_id} would be {size:,} bytes ({ncards:,} cards"
            f"{rules}); a locker takes at most {MAX_BUNDLE:,} (about "
            f"{card_capacity(header_len, nrules):,} cards)"
        )
    return size


def _pid_field(value, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty person id")
    raw = value.encode("utf-8")
    if len(raw) > PERSON_MAX:
        raise ValueError(f"{what} {value!r} is {len(raw)} bytes in UTF-8, at most {PERSON_MAX}")
    return bytes((len(raw),)) + raw.ljust(PERSON_MAX, b"\0")


def _u32(value, what: str) -> int:
    value = int(value or 0)
    if not 0 <= value < 2**32:
        raise ValueError(f"{what} {value} out of range")
    return value


def rule_record(rule: dict) -> bytes:
    """The 96-byte rule record of a consent, exemption or visitor (docs/protocol.md):

    {"kind": "consent", "person", "by", "until": unix seconds or 0, "id"}
    {"kind": "exemption", "person", "by", "category", "from": YYYYMMDD, "until": YYYYMMDD or 0,
     "windows": [[start_minute, end_minute], ...] (1-4), "id"}
    {"kind": "visitor", "person", "by", "until": unix seconds, "id"}
    """
    kind = rule.get("kind")
    if kind not in RULE_KINDS:
        raise ValueError(f"rule kind {kind!r} is not one of {', '.join(RULE_KINDS)}")
    who = f"{kind} of {rule.get('person')!r}"
    person = _pid_field(rule.get("person"), f"{who}: person")
    by = _pid_field(rule.get("by"), f"{who}: by")
    category = 0
    windows: list = []
    first = 0
    if kind == "exemption":
        if rule.get("category") not in CATEGORIES:
            raise ValueError(f"{who}: category must be one of {', '.join(CATEGORIES)}")
        category = CATEGORIES[rule["category"]]
        windows = list(rule.get("windows") or [])
        if not 1 <= len(windows) <= MAX_WINDOWS:
            raise ValueError(f"{who}: 1 to {MAX_WINDOWS} windows, not {len(windows)}")
        for start, end in windows:
            if not 0 <= start < end <= 1440:
                raise ValueError(f"{who}: window {start}-{end} minutes is not within a day")
        first = _u32(rule.get("from"), f"{who}: from")
    elif kind == "visitor" and not rule.get("until"):
        raise ValueError(f"{who}: a visitor's card needs its end")
    until = _u32(rule.get("until"), f"{who}: until")
    packed = b"".join(struct.pack(">HH", s, e) for s, e in windows).ljust(16, b"\0")
    return (
        person
        + bytes((RULE_KINDS[kind], category, len(windows)))
        + struct.pack(">II", first, until)
        + packed
        + by
        + struct.pack(">I", _u32(rule.get("id"), f"{who}: id"))
        + bytes(7)
    )


def read_rule(rec: bytes) -> dict:
    """A rule record back as the dict `rule_record` takes (for tests and diagnostics)."""
    kinds = {v: k for k, v in RULE_KINDS.items()}
    cats = {v: k for k, v in CATEGORIES.items()}
    first, until = struct.unpack_from(">II", rec, 32)
    out = {
        "kind": kinds[rec[29]],
        "person": rec[1 : 1 + rec[0]].decode("utf-8"),
        "by": rec[57 : 57 + rec[56]].decode("utf-8"),
        "until": until,
        "id": struct.unpack_from(">I", rec, 85)[0],
    }
    if out["kind"] == "exemption":
        out["category"] = cats[rec[30]]
        out["from"] = first
        out["windows"] = [list(struct.unpack_from(">HH", rec, 40 + 4 * i)) for i in range(rec[31])]
    return out


def _person(rec: bytes) -> str:
    return rec[20 : 20 + rec[19]].decode("utf-8")


def read_bundle(secret: bytes, data: bytes) -> dict:
    """Verifies and decodes a bundle (for tests and diagnostics); ValueError when it is bad.

    Returns {"version", "header", "cards": [{"hash", "person_id", "role", "year", "walk_home",
    "revoked"}], "rules": [rule dicts, as `rule_record` takes them]}.
    """
    if len(data) < FIXED + MAC_LEN:
        raise ValueError("bundle truncated")
    body, tag = data[:-MAC_LEN], data[-MAC_LEN:]
    if not keys.equal(keys.hmac_sha256(keys.config_key(secret), body), tag):
        raise ValueError("bundle signature does not match")
    magic, fmt, rsize, nrules, version, ncards, hlen = struct.unpack_from(_FIXED_FMT, body)
    size = FIXED + hlen + ncards * RECORD + nrules * RULE
    if (magic, rsize) != (MAGIC, RECORD) or fmt not in (FORMAT, FORMAT_RULES):
        raise ValueError("bundle malformed")
    if len(body) != size or (fmt == FORMAT and nrules):
        raise ValueError("bundle malformed")
    header = json.loads(body[FIXED : FIXED + hlen].decode("utf-8"))
    cards = []
    for i in range(ncards):
        rec = body[FIXED + hlen + i * RECORD : FIXED + hlen + (i + 1) * RECORD]
        cards.append(
            {
                "hash": rec[:16],
                "person_id": _person(rec),
                "role": ROLE_NAMES[rec[16]],
                "year": rec[17],
                "walk_home": bool(rec[18] & FLAG_WALK_HOME),
                "revoked": bool(rec[18] & FLAG_REVOKED),
            }
        )
    at = FIXED + hlen + ncards * RECORD
    rules = [read_rule(body[at + i * RULE : at + (i + 1) * RULE]) for i in range(nrules)]
    return {"version": version, "header": header, "cards": cards, "rules": rules}
