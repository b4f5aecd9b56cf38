"""The tamper-evident audit trail: a hash chain over every locker event and every host action.

Each trail entry has

    content_hash = SHA-256(canonical(content))          (hex)
    hash         = SHA-256(bytes(prev_hash) || bytes(content_hash))   (hex; raw 32 + 32 bytes in)

where `prev_hash` is the previous entry's `hash` (64 zeros before the first entry) and
`canonical(obj)` is the JSON text of `obj` with sorted keys, no spaces (`,` and `:` separators),
non-ASCII characters kept as they are, encoded as UTF-8. Content values are strings, integers,
booleans, null, lists and objects only (no floats), so every implementation encodes them alike.

The content of an event entry is rebuilt from its row in the `events` table (so editing what an
export shows breaks the chain); the content of an action entry is stored with the entry.

The link is made over the content *hash*, not the content: a retention job may blank the personal
fields of old entries and mark them `redacted`. `verify` cannot recompute the content hash of a
redacted entry but still checks every link, so the chain stays verifiable after redaction while
any other edit, deletion or reordering is found. What remains of a redacted entry (an event's
site, locker, seq, times, type and bay; an action's site, time, actor and action) stays
tamper-evident too: before blanking anything, the retention job checks each entry against its
content hash, records the hash of its *public content* (`public_content`: the content without
the personal fields) in a `redactions` row, and appends a `redact` action whose detail holds the
number of entries and `RedactionDigest` over (entry id, public hash) of all of them, in id order.
`verify` recomputes each redacted entry's public hash and each `redact` action's digest.

This module is pure logic; the SQL lives in `store.py`.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring as _quote

GENESIS = "0" * 64

EVENT = "event"
ACTION = "action"


def canonical(obj) -> bytes:
    """The canonical encoding described above."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def link(prev_hash: str, chash: str) -> str:
    """The entry's `hash` from the previous entry's hash and this entry's content hash."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(chash)).hexdigest()


# `canonical` of an event's content when every value is a str, an int or None (always, for what
# ingest stores): the same bytes, written without building and sorting a dict. Keys in sorted
# order; `encode_basestring` is what `json.dumps(..., ensure_ascii=False)` quotes strings with
# and `int.__repr__` what it writes integers with.
_EVENT_TEMPLATE = (
    '{{"bay":{},"by":{},"kind":"event","locker":{},"person":{},"reason":{},'
    '"received_at":{},"seq":{},"site":{},"ts":{},"type":{}}}'
)
_int_repr = int.__repr__


def _plain(value) -> str | None:
    """The JSON text of a str, int or None as `canonical` writes it; None for any other type."""
    t = type(value)
    if t is str:
        return _quote(value)
    if t is int:
        return _int_repr(value)
    if value is None:
        return "null"
    return None


# Content format 2 (events stored since migration 0005, `events.hash_v` = 2): also the journal
# id, the locker's MAC, `sort_ts` (what pages and exports order and filter by: covered, whatever
# rule derived it) and the unknown-type mark, so that no column deciding what is shown escapes
# the hash. Format 0 (older rows) has none of them; `verify` recomputes their `sort_ts`.
EVENT_V2 = 2


def event_content(
    site,
    locker,
    seq,
    ts,
    type,  # noqa: A002
    bay,
    person,
    by,
    reason,
    received_at,
    v=0,
    jid="",
    mac=None,
    sort_ts=None,
    unknown_type=False,
) -> bytes:
    """The canonical content of a locker event's entry (fields as stored in `events`); `v` is
    the row's content format (`events.hash_v`): 0 before migration 0005, else 2."""
    if v:
        return event_content_v2(
            site,
            locker,
            seq,
            ts,
            type,
            bay,
            person,
            by,
            reason,
            received_at,
            jid,
            mac,
            sort_ts,
            unknown_type,
        )
    parts = (
        _plain(bay),
        _plain(by),
        _plain(locker),
        _plain(person),
        _plain(reason),
        _plain(received_at),
        _plain(seq),
        _plain(site),
        _plain(ts),
        _plain(type),
    )
    if None not in parts:
        return _EVENT_TEMPLATE.format(*parts).encode()
    return canonical(
        {
            "kind": EVENT,
            "site": site,
            "locker": locker,
            "seq": seq,
            "ts": ts,
            "type": type,
            "bay": bay,
            "person": person,
            "by": by,
            "reason": reason,
            "received_at": received_at,
        }
    )


def event_content_v2(
    site, locker, seq, ts, etype, bay, person, by, reason, received_at, jid, mac, sort_ts, unknown
) -> bytes:
    """`event_content` of a row of content format 2, its fields in this order."""
    # The common case written inline (verify runs this for every event of the trail): every
    # value of the type ingest stores. `format(int)` is `int.__repr__`; bool is not int here.
    int_, str_, none, q = int, str, None, _quote
    if (
        type(seq) is int_
        and type(received_at) is int_
        and type(sort_ts) is int_
        and (ts is none or type(ts) is int_)
        and (bay is none or type(bay) is int_)
        and type(site) is str_
        and type(locker) is str_
        and type(etype) is str_
        and type(jid) is str_
        and (person is none or type(person) is str_)
        and (by is none or type(by) is str_)
        and (reason is none or type(reason) is str_)
        and (mac is none or type(mac) is str_)
        and (unknown is True or unknown is False)
    ):
        return (
            f'{{"bay":{"null" if bay is none else bay},'
            f'"by":{"null" if by is none else q(by)},"jid":{q(jid)},"kind":"event",'
            f'"locker":{q(locker)},"mac":{"null" if mac is none else q(mac)},'
            f'"person":{"null" if person is none else q(person)},'
            f'"reason":{"null" if reason is none else q(reason)},'
            f'"received_at":{received_at},"seq":{seq},"site":{q(site)},"sort_ts":{sort_ts},'
            f'"ts":{"null" if ts is none else ts},"type":{q(etype)},'
            f'"unknown_type":{"true" if unknown else "false"},"v":2}}'
        ).encode()
    return canonical(
        {
            "kind": EVENT,
            "site": site,
            "locker": locker,
            "jid": jid,
            "seq": seq,
            "ts": ts,
            "type": etype,
            "bay": bay,
            "person": person,
            "by": by,
            "reason": reason,
            "received_at": received_at,
            "sort_ts": sort_ts,
            "mac": mac,
            "unknown_type": unknown,
            "v": EVENT_V2,
        }
    )


# The fields retention blanks: an event's who, by whom and why; an action's detail.
# An event's MAC goes too: keyed with the locker's secret, it would let the key's holder test
# guesses of the blanked fields.
PERSONAL = {EVENT: ("person", "by", "reason", "mac"), ACTION: ("detail",)}


def public_content(content: bytes) -> bytes:
    """The canonical content without its personal fields: what stays of a redacted entry."""
    return split_personal(content)[0]


def split_personal(content: bytes) -> tuple[bytes, bool]:
    """(`public_content(content)`, whether any personal field holds a value)."""
    obj = json.loads(content)
    held = False
    for name in PERSONAL.get(obj.get("kind"), ()):
        held = obj.pop(name, None) is not None or held
    return canonical(obj), held


class RedactionDigest:
    """SHA-256 over `"<entry id> <public hash>\n"` of every entry one `redact` action covers,
    in entry id order (streamed: a retention run over millions of entries stays small)."""

    def __init__(self):
        self._h = hashlib.sha256()
        self.count = 0

    def add(self, entry_id: int, public_hash: str) -> None:
        self._h.update(f"{entry_id} {public_hash}\n".encode())
        self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def action_content(site, at, actor, action, detail) -> bytes:
    """The canonical content of a host action's entry."""
    return canonical(
        {
            "kind": ACTION,
            "site": site,
            "at": at,
            "actor": actor,
            "action": action,
            "detail": detail,
        }
    )


class Chain:
    """The head of the chain while appending: hands out the next id and hash."""

    def __init__(self, last_id: int = 0, head: str = GENESIS):
        self.last_id = last_id
        self.head = head

    def append(self, content: bytes) -> tuple[int, str, str]:
        """(id, content_hash, hash) of a new entry holding `content`."""
        chash = content_hash(content)
        self.last_id += 1
        self.head = link(self.head, chash)
        return self.last_id, chash, self.head


class Broken(Exception):
    """The first bad entry found by `Verifier`."""

    def __init__(self, entry_id, what: str):
        super().__init__(f"entry {entry_id}: {what}")
        self.entry_id = entry_id
        self.what = what


class Verifier:
    """Checks entries fed in id order, one at a time (so a walk over millions stays small).

    `feed` raises `Broken` at the first entry that was edited, is missing (a gap in the ids, a
    deleted event row) or is out of place (a broken link); `finish` checks the recorded head.
    """

    def __init__(self):
        self.count = 0
        self.last_id = 0
        self.head = GENESIS

    def feed(
        self,
        entry_id: int,
        stored_chash: str,
        stored_hash: str,
        content: bytes | None,
        redacted: bool = False,
        missing: str | None = None,
    ) -> None:
        if entry_id != self.last_id + 1:
            if entry_id <= self.last_id:
                raise Broken(entry_id, f"out of order after entry {self.last_id}")
            first = self.last_id + 1
            gone = f"{first}" if entry_id == first + 1 else f"{first}..{entry_id - 1}"
            raise Broken(first, f"missing (entries {gone} deleted; next present is {entry_id})")
        if missing:
            raise Broken(entry_id, missing)
        if not redacted:
            if content is None:
                raise Broken(entry_id, "content missing")
            if content_hash(content) != stored_chash:
                raise Broken(entry_id, "content does not match its hash (edited)")
        try:
            expected = link(self.head, stored_chash)
        except ValueError:
            raise Broken(entry_id, "content hash is not hex (edited)") from None
        if expected != stored_hash:
            raise Broken(
                entry_id, "does not link to the entry before it (edited, deleted or reordered)"
            )
        self.last_id = entry_id
        self.head = stored_hash
        self.count += 1

    def finish(self, head_id: int | None, head_hash: str | None) -> None:
        """Compare with the head recorded at the last append: catches a truncated tail."""
        if head_id is None:
            head_id, head_hash = 0, GENESIS
        if head_id > self.last_id:
            raise Broken(
                self.last_id + 1,
                f"missing (trail ends at entry {self.last_id}, "
                f"but {head_id} entries were written)",
            )
        if head_id != self.last_id or head_hash != self.head:
            raise Broken(self.last_id, "chain head does not match the recorded head")
