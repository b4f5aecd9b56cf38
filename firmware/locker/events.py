# Locker events: the codes for types and reasons, the compact binary form the journal keeps on
# flash, and the JSON payload of the MQTT `event` topic (docs/protocol.md).
#
# The code of a word is its index in TYPES or REASONS. Codes are on flash: append new words at the
# end, never reorder or remove one. A type or reason that is not in the table (a new word, the
# office's free-text reason for a remote open) is stored as text instead of a code.
#
# Binary event (all integers little-endian):
#   u8  flags: bit0 ts, bit1 bay, bit2 person, bit3 by, bit4 reason present;
#              bit5 reason is text (else a u8 code), bit6 type is text (else a u8 code)
#   u32 seq
#   u32 ts                     (when bit0)
#   u8 type code | text        (text = u8 length + UTF-8 bytes, at most 255)
#   u8 bay                     (when bit1)
#   text person, text by       (when bits 2, 3)
#   u8 reason code | text      (when bit4)
# bit7: the reason is a repeat summary (a `denied_repeated` event, docs/protocol.md), kept as
#   u8 reason code, u32 count, u32 first ts, 4 bytes card tag; the last ts is the event's ts:
#   the reason text "<word> x<count> <first>-<last> <tag as 8 hex>" is rebuilt from them.
# A deposit with ts, bay 3 and person "P0123" takes 17 bytes.

import json
import struct
from binascii import hexlify, unhexlify

from locker import const
from locker.mac import hmac_sha256

TYPES = (
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
    "update_rejected",
    "update_failed",
    "updated",
)

REASONS = (
    "contact_hours",
    "unknown_card",
    "revoked",
    "no_free_bay",
    "clock_unknown",
    "not_holder",
    "override_fob",
    "bad_signature",
    "expired",
    "replayed",
    "malformed",
    "too_large",
    "wrong_locker",
    "no_such_bay",
    "journal_full",
    "deposit",
    "retrieve",
    "staff",
    "pupil",
    "slt",
    "office",
    "truncated",
    "stale",
    "phone_not_allowed",
    "grant",
    "unknown",
    "downgrade",
    "bad_hash",
    "no_room",
)

_TS = const(0x01)
_BAY = const(0x02)
_PERSON = const(0x04)
_BY = const(0x08)
_REASON = const(0x10)
_REASON_TEXT = const(0x20)
_TYPE_TEXT = const(0x40)
_SUMMARY = const(0x80)
_KNOWN = const(0xFF)
_SUMMARY_TEXT = const("{} x{} {}-{} {}")  # word, count, first ts, last ts, card tag

MAX_TEXT = const(255)  # bytes of UTF-8 in one text field
# the largest encoding: flags, seq, ts, type text, bay, person, by, reason text
MAX_ENCODED = const(1 + 4 + 4 + (1 + MAX_TEXT) + 1 + 3 * (1 + MAX_TEXT))  # 1034
_U32 = const(0xFFFFFFFF)


class Event:
    def __init__(self, seq, ts, type, bay=None, person=None, by=None, reason=None):  # noqa: A002
        self.seq = seq
        self.ts = ts
        self.type = type
        self.bay = bay
        self.person = person
        self.by = by
        self.reason = reason

    def __eq__(self, other):
        return isinstance(other, Event) and self.fields() == other.fields()

    def __ne__(self, other):
        return not self.__eq__(other)

    def fields(self):
        return (self.seq, self.ts, self.type, self.bay, self.person, self.by, self.reason)

    def __repr__(self):
        return "Event({!r}, {!r}, {!r}, {!r}, {!r}, {!r}, {!r})".format(*self.fields())


def _text(name, value):
    if not isinstance(value, str):
        raise ValueError("event: {} must be text, not {!r}".format(name, value))
    raw = value.encode("utf-8")
    if len(raw) > MAX_TEXT:
        raise ValueError("event: {} longer than {} bytes".format(name, MAX_TEXT))
    return raw


def _u32(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U32:
        raise ValueError(
            "event: {} must be an integer 0..4294967295, not {!r}".format(name, value)
        )
    return value


def _code(table, word):
    try:
        return table.index(word)
    except ValueError:
        return -1


def encode_into(ev, buf, pos=0):
    """Writes the binary form of ev into buf (a bytearray with room for MAX_ENCODED bytes from
    pos); returns the position after it. Raises ValueError naming the bad field."""
    seq = _u32("seq", ev.seq)
    flags = 0
    if ev.ts is not None:
        _u32("ts", ev.ts)
        flags |= _TS
    type_code = _code(TYPES, ev.type)
    if type_code < 0:
        type_raw = _text("type", ev.type)
        if not type_raw:
            raise ValueError("event: type must not be empty")
        flags |= _TYPE_TEXT
    if ev.bay is not None:
        if not isinstance(ev.bay, int) or isinstance(ev.bay, bool) or not 0 <= ev.bay <= 255:
            raise ValueError("event: bay must be an integer 0..255, not {!r}".format(ev.bay))
        flags |= _BAY
    person = by = reason_raw = None
    if ev.person is not None:
        person = _text("person", ev.person)
        flags |= _PERSON
    if ev.by is not None:
        by = _text("by", ev.by)
        flags |= _BY
    reason_code = -1
    summary = None
    if ev.reason is not None:
        flags |= _REASON
        reason_code = _code(REASONS, ev.reason)
        if reason_code < 0 and ev.type == "denied_repeated" and ev.ts is not None:
            # kept compact when the text comes back exactly from _SUMMARY_TEXT; else as text
            parts = ev.reason.split(" ")
            try:
                times = parts[2].split("-")
                summary = (
                    _code(REASONS, parts[0]),
                    int(parts[1][1:]),
                    int(times[0]),
                    unhexlify(parts[3]),
                )
                text = _SUMMARY_TEXT.format(
                    REASONS[summary[0]],
                    summary[1],
                    summary[2],
                    ev.ts,
                    hexlify(summary[3]).decode(),
                )
            except (ValueError, IndexError):
                summary = text = None
            if (
                text != ev.reason
                or summary[0] < 0
                or len(summary[3]) != 4
                or not 0 <= summary[1] <= _U32
                or not 0 <= summary[2] <= _U32
            ):
                summary = None
        if summary is not None:
            flags |= _SUMMARY
        elif reason_code < 0:
            reason_raw = _text("reason", ev.reason)
            flags |= _REASON_TEXT
    buf[pos] = flags
    struct.pack_into("<I", buf, pos + 1, seq)
    pos += 5
    if flags & _TS:
        struct.pack_into("<I", buf, pos, ev.ts)
        pos += 4
    if flags & _TYPE_TEXT:
        pos = _put_text(buf, pos, type_raw)
    else:
        buf[pos] = type_code
        pos += 1
    if flags & _BAY:
        buf[pos] = ev.bay
        pos += 1
    if person is not None:
        pos = _put_text(buf, pos, person)
    if by is not None:
        pos = _put_text(buf, pos, by)
    if flags & _REASON:
        if summary is not None:
            buf[pos] = summary[0]
            struct.pack_into("<II", buf, pos + 1, summary[1], summary[2])
            buf[pos + 9 : pos + 13] = summary[3]
            pos += 13
        elif reason_raw is not None:
            pos = _put_text(buf, pos, reason_raw)
        else:
            buf[pos] = reason_code
            pos += 1
    return pos


def _put_text(buf, pos, raw):
    n = len(raw)
    buf[pos] = n
    buf[pos + 1 : pos + 1 + n] = raw
    return pos + 1 + n


def encode(ev):
    """The binary form of ev as bytes."""
    buf = bytearray(MAX_ENCODED)
    n = encode_into(ev, buf)
    return bytes(buf[:n])


def decode(buf, start=0, end=None):
    """The Event encoded in buf[start:end]. Raises ValueError when it is not a whole, valid
    encoding (never returns a misread event)."""
    if end is None:
        end = len(buf)
    mv = memoryview(buf)
    try:
        if end - start < 6 or end > len(buf):
            raise IndexError
        flags = mv[start]
        if flags & ~_KNOWN:
            raise ValueError("event: unknown flags")
        seq = struct.unpack_from("<I", mv, start + 1)[0]
        pos = start + 5
        ts = None
        if flags & _TS:
            _need(pos + 4, end)
            ts = struct.unpack_from("<I", mv, pos)[0]
            pos += 4
        if flags & _TYPE_TEXT:
            kind, pos = _get_text(mv, pos, end)
        else:
            kind = TYPES[mv[_need(pos + 1, end) - 1]]
            pos += 1
        bay = person = by = reason = None
        if flags & _BAY:
            bay = mv[_need(pos + 1, end) - 1]
            pos += 1
        if flags & _PERSON:
            person, pos = _get_text(mv, pos, end)
        if flags & _BY:
            by, pos = _get_text(mv, pos, end)
        if flags & _SUMMARY and (flags & (_REASON | _REASON_TEXT) != _REASON or ts is None):
            raise ValueError("event: a summary without its reason code or ts")
        if flags & _SUMMARY:
            _need(pos + 13, end)
            count, first = struct.unpack_from("<II", mv, pos + 1)
            tag = hexlify(bytes(mv[pos + 9 : pos + 13])).decode()
            reason = _SUMMARY_TEXT.format(REASONS[mv[pos]], count, first, ts, tag)
            pos += 13
        elif flags & _REASON:
            if flags & _REASON_TEXT:
                reason, pos = _get_text(mv, pos, end)
            else:
                reason = REASONS[mv[_need(pos + 1, end) - 1]]
                pos += 1
    except (IndexError, UnicodeError):
        raise ValueError("event: truncated, or an unknown code") from None
    if pos != end:
        raise ValueError("event: {} bytes where {} were expected".format(end - start, pos - start))
    return Event(seq, ts, kind, bay, person, by, reason)


def _need(stop, end):
    if stop > end:
        raise IndexError
    return stop


def _get_text(mv, pos, end):
    n = mv[_need(pos + 1, end) - 1]
    stop = _need(pos + 1 + n, end)
    return str(bytes(mv[pos + 1 : stop]), "utf-8"), stop


_JSON = const(
    '{{"seq": {}, "ts": {}, "type": {}, "bay": {}, "person": {}, "by": {}, "reason": {}}}'
)
_SIGNED = const(
    '{{"seq": {}, "ts": {}, "type": {}, "bay": {}, "person": {}, "by": {}, "reason": {}, '
    '"jid": "{}", "mac": "{}"}}'
)
_MAC_TEXT = const("{}|{}|{}|{}|{}|{}|{}|{}")


def to_json(ev, jid=None, key=None):
    """The MQTT `event` payload (docs/protocol.md), keys in the documented order; with the
    journal's id `jid` and the event key `key` (HMAC-SHA256(secret, b"event")), also `jid` and
    `mac`."""
    fields = (
        ev.seq,
        "null" if ev.ts is None else ev.ts,
        json.dumps(ev.type),
        "null" if ev.bay is None else ev.bay,
        json.dumps(ev.person),
        json.dumps(ev.by),
        json.dumps(ev.reason),
    )
    if jid is None:
        return _JSON.format(*fields)
    # the MAC covers seq|ts|type|bay|person|by|reason|jid in UTF-8, integers in decimal, null as
    # the empty string (docs/protocol.md, `event`)
    mac = _MAC_TEXT.format(
        ev.seq,
        "" if ev.ts is None else ev.ts,
        ev.type,
        "" if ev.bay is None else ev.bay,
        "" if ev.person is None else ev.person,
        "" if ev.by is None else ev.by,
        "" if ev.reason is None else ev.reason,
        jid,
    )
    mac = hexlify(hmac_sha256(key, mac.encode())[:16]).decode()
    return _SIGNED.format(*fields, jid, mac)
