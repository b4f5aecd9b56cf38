"""Builds a locker's signed configuration bundle (docs/protocol.md, `config`).

The byte format is shared with the firmware's `locker/bundle.py`, which reads it from flash;
tests/host/test_bundle_cross.py checks the two against each other under CPython and MicroPython.
"""

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from . import keys

MAGIC = b"CLCF"
FORMAT = 1
RECORD = 48
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
ROLE_CODES = {"pupil": 1, "staff": 2, "slt": 3, "office": 4}
ROLE_NAMES = {v: k for k, v in ROLE_CODES.items()}
_FIXED_FMT = ">4sBBHIII"


@dataclass(frozen=True)
class BundleCard:
    """One roster card as a bundle carries it (the input rows may be tuples of the same order)."""

    uid_hex: str
    person_id: str
    role: str
    year: int | None = None
    walk_home: bool = False
    revoked: bool = False


def _card_fields(card) -> tuple:
    if isinstance(card, (tuple, list)):
        if len(card) != 6:
            raise ValueError(
                f"card row {card!r}: expected 6 fields "
                "(uid_hex, person_id, role, year, walk_home, revoked)"
            )
        return tuple(card)
    uid = next(
        (getattr(card, n) for n in ("uid_hex", "card_uid", "uid") if hasattr(card, n)), None
    )
    return (
        uid,
        card.person_id,
        card.role,
        getattr(card, "year", None),
        getattr(card, "walk_home", False),
        getattr(card, "revoked", False),
    )


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
) -> bytes:
    """The whole signed bundle for one locker; ValueError naming the bad card or field."""
    if not 0 < version < 2**32:
        raise ValueError(f"bundle version {version} out of range 1..2^32-1")
    ckey = keys.card_key(secret)
    records = sorted(card_record(ckey, c) for c in cards)
    for a, b in zip(records, records[1:], strict=False):
        if a[:16] == b[:16]:
            raise ValueError(f"card listed twice (persons {_person(a)!r} and {_person(b)!r})")
    hjson = bundle_header(locker_id, site, version, issued, timetable, grants)
    check_size(locker_id, len(hjson), len(records))
    body = b"".join(
        [
            struct.pack(_FIXED_FMT, MAGIC, FORMAT, RECORD, 0, version, len(records), len(hjson)),
            hjson,
            *records,
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


def bundle_size(header_len: int, ncards: int) -> int:
    """Bytes of a bundle with a header of `header_len` bytes and `ncards` cards."""
    return FIXED + header_len + ncards * RECORD + MAC_LEN


def card_capacity(header_len: int) -> int:
    """How many cards fit in a bundle next to a header of `header_len` bytes."""
    return max(0, (MAX_BUNDLE - FIXED - MAC_LEN - header_len) // RECORD)


def check_size(locker_id: str, header_len: int, ncards: int) -> int:
    """The bundle's size; ValueError with a one-line reason naming the limit when a locker
    could not take it."""
    if header_len > MAX_HEADER:
        raise ValueError(
            f"the configuration header for {locker_id} would be {header_len:,} bytes; a locker "
            f"takes at most {MAX_HEADER:,} (too many exception grants?)"
        )
    size = bundle_size(header_len, ncards)
    if size > MAX_BUNDLE:
        raise ValueError(
            f"the configuration for {locker_id} would be {size:,} bytes ({ncards:,} cards); "
            f"a locker takes at most {MAX_BUNDLE:,} (about {card_capacity(header_len):,} cards)"
        )
    return size


def _person(rec: bytes) -> str:
    return rec[20 : 20 + rec[19]].decode("utf-8")


def read_bundle(secret: bytes, data: bytes) -> dict:
    """Verifies and decodes a bundle (for tests and diagnostics); ValueError when it is bad.

    Returns {"version", "header", "cards": [{"hash", "person_id", "role", "year", "walk_home",
    "revoked"}]}.
    """
    if len(data) < FIXED + MAC_LEN:
        raise ValueError("bundle truncated")
    body, tag = data[:-MAC_LEN], data[-MAC_LEN:]
    if not keys.equal(keys.hmac_sha256(keys.config_key(secret), body), tag):
        raise ValueError("bundle signature does not match")
    magic, fmt, rsize, _, version, ncards, hlen = struct.unpack_from(_FIXED_FMT, body)
    size = FIXED + hlen + ncards * RECORD
    if (magic, fmt, rsize) != (MAGIC, FORMAT, RECORD) or len(body) != size:
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
    return {"version": version, "header": header, "cards": cards}
