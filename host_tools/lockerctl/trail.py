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

This module is pure logic; the SQL lives in the store (`store/chain.py`).
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

    def extend(self, contents: list[bytes]) -> list[tuple[str, str]]:
        """(content_hash, hash) of new entries holding `contents`, in order: `append` for a
        batch, the same hashes (ids follow on from `last_id`). The links are made over the raw
        digests, not hex decoded again for each: measured, 1.1 µs an entry where `append`
        takes 1.6 µs, and ingest appends one entry per event."""
        if not contents:
            return []
        sha = hashlib.sha256
        prev = bytes.fromhex(self.head)
        out: list[tuple[str, str]] = []
        add = out.append
        for content in contents:
            c = sha(content).digest()
            prev = sha(prev + c).digest()
            add((c.hex(), prev.hex()))
        self.last_id += len(out)
        self.head = out[-1][1]
        return out


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


# -- redaction's checks (what `verify` and the store's redaction look at; no SQL) ---------------

REDACT_WORD = '"action":"redact"'  # how a redact action's canonical content says what it is


def is_redact_action(content: bytes | None) -> dict | None:
    """The detail of a `redact` action's content ({} if blank), else None."""
    if content is None or REDACT_WORD.encode() not in content:
        return None
    try:
        obj = json.loads(content)
    except ValueError:
        raise ValueError("content is not valid JSON") from None
    if not isinstance(obj, dict) or obj.get("kind") != ACTION:
        return None
    if obj.get("action") != "redact":
        return None
    detail = obj.get("detail")
    return detail if isinstance(detail, dict) else {}


def entry_content(r) -> bytes | None:
    """The canonical content of a trail row joined with its event row (None: the row is gone)."""
    if r.kind == EVENT:
        if r.e_id is None:
            return None
        return event_content(
            r.e_site,
            r.locker_id,
            r.seq,
            r.ts,
            r.type,
            r.bay,
            r.person,
            r.by,
            r.reason,
            r.received_at,
            r.hash_v,
            r.jid,
            r.mac,
            r.sort_ts,
            r.unknown_type,
        )
    return r.content.encode() if r.content is not None else None


# The columns of the store's joined trail rows that `event_content_v2` takes, in its order.
V2_FIELDS = (
    "e_site",
    "locker_id",
    "seq",
    "ts",
    "type",
    "bay",
    "person",
    "by",
    "reason",
    "received_at",
    "jid",
    "mac",
    "sort_ts",
    "unknown_type",
)


def legacy_row_edited(r) -> str | None:
    """What is wrong with an event row of content format 0 (stored before 0005) in the columns
    its content does not hold: `sort_ts` must be what ingest derived then, the 0005 columns
    their defaults."""
    want = r.ts if r.ts is not None else r.received_at
    if r.sort_ts != want:
        return f"sort_ts {r.sort_ts} is not the event's time {want} (edited)"
    if r.jid != "" or r.mac is not None or r.unknown_type:
        return "journal id, MAC or type mark set on an event stored without them (edited)"
    if r.hash_v != 0:
        return f"unknown content format {r.hash_v} (edited)"
    return None


class RedactionCheck:
    """What `Store.verify_trail` checks of redaction, entry by entry in id order (O(sites) memory):

    - a redacted entry has its record, blank personal fields, and what stays of it matches the
      recorded public hash; an entry that is not redacted has no record;
    - a `redact` action's count and digest are those of the records that name it, and it left no
      older entry of its site unredacted (retention redacts all of them): a `redact` action
      appended by someone to dress up a recent edit would have to redact everything before it.
    """

    def __init__(self):
        self.digests: dict[int, RedactionDigest] = {}
        self.oldest_kept: dict[str, int] = {}  # per site: the oldest `at` not redacted so far

    def entry(self, r, content: bytes | None) -> str | None:
        try:
            if r.redacted:
                return self._redacted(r, content)
            if r.r_public is not None:
                return "a redaction record for an entry that is not redacted (edited)"
            if r.kind == ACTION:
                detail = is_redact_action(content)
                if detail is not None:
                    return self._redact_action(r, detail)
                json_kind(content, ACTION)
            if r.at < self.oldest_kept.get(r.site, r.at + 1):
                self.oldest_kept[r.site] = r.at
        except ValueError as e:
            return f"{e} (edited)"
        return None

    def _redacted(self, r, content: bytes | None) -> str | None:
        if r.r_public is None:
            return "marked redacted without a redaction record (edited)"
        if content is None:
            return "content missing"
        json_kind(content, r.kind)
        public, held = split_personal(content)
        if held:
            return "edited after its redaction (personal fields written back)"
        if content_hash(public) != r.r_public:
            return "edited after its redaction (what stays of it does not match its record)"
        self.digests.setdefault(r.r_action, RedactionDigest()).add(r.id, r.r_public)
        return None

    def _redact_action(self, r, detail: dict) -> str | None:
        got = self.digests.pop(r.id, None) or RedactionDigest()
        if "digest" not in detail:
            return None if got.count == 0 else "a redaction without a digest names records"
        if got.count != detail.get("entries") or got.hexdigest() != detail["digest"]:
            return (
                f"the {detail.get('entries')} entries this redaction covers do not match their"
                f" records ({got.count} found): a redaction record was edited, deleted or added"
            )
        before = detail.get("before")
        if isinstance(before, int) and self.oldest_kept.get(r.site, before) < before:
            return (
                "a redaction that left older entries of its site unredacted: not made by"
                " retention (appended to hide an edit?)"
            )
        return None


def json_kind(content: bytes | None, kind: str) -> None:
    """ValueError unless `content` is a JSON object of this kind."""
    if content is None:
        return
    try:
        obj = json.loads(content)
    except ValueError:
        raise ValueError("content is not valid JSON") from None
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise ValueError(f"content of another kind than the entry's {kind!r}")
