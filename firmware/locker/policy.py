# The school's rules in one place (docs/policy.md; the table a school reads is docs/policy.md).
#
# decide() answers one question: this card was tapped at this time; the person's phone is (or is
# not) in the locker; may the locker deposit, retrieve, arm an override, or must it refuse?
# Bays (`no_free_bay`, `not_holder`), journaling and the override's 20-second window are the
# caller's job (locker/core.py); this module imports no hardware and keeps no state.
# The words are private constants: compiled in, not one more global and interned name each.

from locker import const

# What the caller does.
_DEPOSIT = const("deposit")
_RETRIEVE = const("retrieve")
_OVERRIDE = const("override")  # an armed SLT override releases this card's phone now
_ARM = const("arm")  # the SLT fob: arm an override (or, tapped twice, emergency open)
_DENIED = const("denied")

# Why it refuses (docs/protocol.md reasons).
_UNKNOWN_CARD = const("unknown_card")
_REVOKED = const("revoked")
_CONTACT_HOURS = const("contact_hours")
_CLOCK_UNKNOWN = const("clock_unknown")

# A deposit that is allowed but reported.
_POLICY_FLAG = const("policy_flag")

_ROLES = const(("pupil", "staff", "slt", "office"))


def may_bring_phone(card):
    """Only Year 6 pupils who walk home may bring a phone; staff and office always may."""
    if card.role != "pupil":
        return True
    return card.year == 6 and bool(card.walk_home)


def released_early(card):
    """A Year 6 walk-home pupil's phone comes out y6_release_minutes before home time."""
    return card.role == "pupil" and card.year == 6 and bool(card.walk_home)


def decide(card, now, timetable, holds, override_by=None, granted=False):
    """(action, reason, flag) for a tap.

    card: object with person, role, year, walk_home, revoked; None when the card is unknown.
    now: unix seconds UTC, or None while the locker's clock is not trusted.
    timetable: a locker.timetable.Timetable, or None when the site has none.
    holds: True when this person's phone is in a bay of this locker.
    override_by: the SLT person whose armed override this tap consumes, or None.
    granted: True when an exception grant covers this person now (see grant_covers).
    """
    if card is None:
        return (_DENIED, _UNKNOWN_CARD, None)
    if card.revoked:
        # SLT can still hand a revoked card's phone back through an override; a revoked card
        # never deposits and never retrieves on its own.
        if holds and override_by is not None:
            return (_OVERRIDE, None, None)
        return (_DENIED, _REVOKED, None)
    role = card.role
    if role == "slt":
        return (_ARM, None, None)
    if role not in _ROLES:
        return (_DENIED, _UNKNOWN_CARD, None)
    if not holds:
        # Depositing is always allowed (with the clock unknown too): a phone that may not be in
        # school must still be locked away; the locker reports it.
        return (_DEPOSIT, None, None if may_bring_phone(card) else _POLICY_FLAG)
    if override_by is not None:
        return (_OVERRIDE, None, None)
    if now is None:
        return (_DENIED, _CLOCK_UNKNOWN, None)
    if granted or timetable is None or not timetable.is_school_day(now):
        return (_RETRIEVE, None, None)
    if role == "pupil":
        release = timetable.pupil_release_ts(now, released_early(card))
        if release is not None and now < release:
            return (_DENIED, _CONTACT_HOURS, None)
        return (_RETRIEVE, None, None)
    # staff and office: only contact periods are locked; breaks and lunch are open.
    if timetable.in_contact(now):
        return (_DENIED, _CONTACT_HOURS, None)
    return (_RETRIEVE, None, None)


def grant_covers(grants, person, now):
    """The exception grant (header `grants` entry) covering `person` at `now`, or None.

    A grant covers [from, until): from its start up to, not including, its end. With the clock
    unknown (now None) no grant applies."""
    if now is None or not grants:
        return None
    for g in grants:
        if g.get("person") == person and g.get("from", 0) <= now < g.get("until", 0):
            return g
    return None
