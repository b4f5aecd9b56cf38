# The school's everyday exceptions at the locker (docs/policy.md): the Headteacher's keep-safe
# consents, exemptions (daily access windows on school days) and visitors' day cards.
#
# They travel in the signed bundle's rule table (docs/protocol.md, `config`), which stays on
# flash like the card table: a tap reads only the records of the person who tapped, found by a
# binary search over records sorted by (person, kind). Nothing per person is held in RAM.
#
# Rule record (96 bytes, integers big-endian):
#   0  u8  length of person_id        1  28 bytes person_id, NUL padded
#   29 u8  kind: 1 consent, 2 exemption, 3 visitor
#   30 u8  category (exemption: 1 medical, 2 send, 3 young_carer, 4 other)
#   31 u8  number of windows (exemption, 1-4)
#   32 u32 from: an exemption's first day (YYYYMMDD)
#   36 u32 until: a consent's or a visitor's end (unix seconds, 0: a consent with no end);
#          an exemption's last day (YYYYMMDD, 0: none)
#   40 4 x (u16 start, u16 end): windows in minutes after local midnight, [start, end)
#   56 u8  length of the approver's person_id   57 28 bytes approver, NUL padded
#   85 u32 the host's id of the consent, exemption or visitor;  89..95 zero
import struct

from locker import const
from locker.bundle import RULE
from locker.policy import grant_covers, may_bring_phone

CONSENT = const(1)
EXEMPTION = const(2)
VISITOR = const(3)
_KEY = const(29)  # length byte + person_id: what the table is sorted on (then the kind)
_HEAD = const(85)  # the bytes a decision reads (the id is the host's)


class Rules:
    """The rule table of the bundle in force (locker.bundle.Bundle), read from flash."""

    def __init__(self, bundle):
        self._bundle = bundle
        self._n = bundle.nrules
        self._rec = bytearray(RULE)
        self._key = bytearray(_KEY)

    def _records(self, person):
        """Yields the (reused) record buffer for each rule of `person`, in kind order."""
        if not self._n:
            return
        key, rec, b = self._key, self._rec, self._bundle
        pid = person.encode()
        key[0] = len(pid)
        key[1:] = pid + bytes(_KEY - 1 - len(pid))
        lo, hi = 0, self._n  # the first record whose key is not below `key`
        while lo < hi:
            mid = (lo + hi) >> 1
            b.read_rule(mid, rec, _KEY)
            if _below(rec, key):
                lo = mid + 1
            else:
                hi = mid
        i = lo
        while i < self._n:
            b.read_rule(i, rec, _HEAD)
            if not _same(rec, key):
                return
            yield rec
            i += 1

    def consent(self, person, now):
        """A keep-safe consent for `person` holds at `now` (unix seconds; None while the clock
        is unknown: a consent the host still sends is taken as holding)."""
        for rec in self._records(person):
            if rec[29] == CONSENT:
                until = _u32(rec, 36)
                if now is None or not until or now < until:
                    return True
        return False

    def exemption(self, person, now, timetable, in_window):
        """The approver of an exemption of `person` in force today (local date between its
        first and last day): with `in_window`, only one whose window holds `now` on a school
        day. None when there is none, or the clock is unknown, or no timetable."""
        if now is None or timetable is None or not timetable.enforced:
            return None
        date, wday, sod, _ = timetable.local(now)
        if in_window and not timetable.is_school_day(now):
            return None
        minute = sod // 60
        for rec in self._records(person):
            if rec[29] != EXEMPTION:
                continue
            first, last = _u32(rec, 32), _u32(rec, 36)
            if date < first or (last and date > last):
                continue
            if in_window:
                inside = False
                for w in range(rec[31]):
                    start, end = struct.unpack_from(">HH", rec, 40 + 4 * w)
                    if start <= minute < end:
                        inside = True
                        break
                if not inside:
                    continue
            return bytes(rec[57 : 57 + rec[56]]).decode()
        return None

    def visitor_ended(self, person, now):
        """A visitor's card whose day has ended (or that the table no longer lists): refused
        except to collect. False while the clock is unknown (the end cannot be told)."""
        if now is None:
            return False
        for rec in self._records(person):
            if rec[29] == VISITOR:
                return now >= _u32(rec, 36)
        return True


def _u32(rec, at):
    return (rec[at] << 24) | (rec[at + 1] << 16) | (rec[at + 2] << 8) | rec[at + 3]


def _below(rec, key):
    # rec's first _KEY bytes < key, in bytes order, without slicing
    for i in range(_KEY):
        d = rec[i] - key[i]
        if d:
            return d < 0
    return False


def _same(rec, key):
    for i in range(_KEY):
        if rec[i] != key[i]:
            return False
    return True


def assess(rules, grants, timetable, card, now, holds):
    """What the exceptions say about this tap: (approval, allowed, ended).

    approval: (reason, by) when a retrieval now is released by an exception grant ("grant",
    its SLT approver) or an exemption's window ("exemption", its approver), else None.
    allowed: a keep-safe consent or an exemption in force lets this pupil bring a phone (a
    deposit raises no policy_flag). ended: this visitor's card is past its end."""
    person = card.person
    approval = None
    if holds and now is not None:
        g = grant_covers(grants, person, now)
        if g is not None:
            approval = ("grant", g.get("by"))
        elif rules is not None:
            by = rules.exemption(person, now, timetable, True)
            if by is not None:
                approval = ("exemption", by)
    allowed = False
    if not holds and rules is not None and not may_bring_phone(card):
        allowed = rules.consent(person, now) or (
            rules.exemption(person, now, timetable, False) is not None
        )
    ended = False
    if card.role == "visitor" and now is not None:
        ended = True if rules is None else rules.visitor_ended(person, now)
    return approval, allowed, ended
