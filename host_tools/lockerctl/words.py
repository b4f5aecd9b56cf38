"""Plain English for every word the lockers and the host store: event types, reasons, alert
kinds. The one table pages, e-mails, reports and exports' display use, so that a reader never
meets `contact_hours` or `phone_not_allowed`.

A word not in the tables (a free-text reason such as the office's own reason for an open, a
type some future firmware sends) is shown as it is: `event_words`, `reason_words` never fail.
Exports keep the stored words in their `event` and `reason` columns (they are the record); a
display of an export (the report, a page) goes through here.
"""

from __future__ import annotations

# Every event type of firmware/locker/events.py TYPES, and the ones later rounds add.
EVENTS = {
    "boot": "Locker started",
    "deposit": "Phone deposited",
    "retrieve": "Phone collected",
    "override": "Opened with an SLT fob",
    "denied": "Card refused",
    "policy_flag": "Phone brought by a pupil who may not bring one",
    "uncollected": "Phone not collected",
    "door_forced": "Door forced open",
    "door_left_open": "Door left open",
    "door_closed": "Door closed",
    "emergency_open": "Emergency open",
    "cmd_rejected": "Remote command refused by the locker",
    "cancelled": "Tap not followed by a door (timed out)",
    "config_applied": "New settings in force",
    "config_rejected": "New settings refused by the locker",
    "journal_near_full": "Locker's memory nearly full",
    "clock_set": "Locker's clock set",
    "denied_repeated": "Card refused again (repeats counted)",
    "unrecorded": "Events the locker could not record",
    "update_rejected": "Software update refused",
    "update_failed": "Software update failed (rolled back)",
    "updated": "Software updated",
    "released": "Phone released by the office",
}

# Every reason of firmware/locker/events.py REASONS, and the host's own.
REASONS = {
    "contact_hours": "during lessons (phones stay locked until home time)",
    "unknown_card": "card not on the roster",
    "revoked": "card cancelled",
    "no_free_bay": "no free bay",
    "clock_unknown": "the locker's clock was not set",
    "not_holder": "not the card that deposited this phone",
    "override_fob": "SLT fob",
    "bad_signature": "signature did not check (forged or corrupted)",
    "expired": "the command had expired",
    "replayed": "the command had already been used",
    "malformed": "unreadable",
    "too_large": "too large",
    "wrong_locker": "meant for another locker",
    "no_such_bay": "no such bay",
    "journal_full": "the locker's memory is full",
    "deposit": "deposit",
    "retrieve": "collection",
    "staff": "staff",
    "pupil": "pupil",
    "slt": "senior leader",
    "office": "office",
    "truncated": "cut short (the connection dropped)",
    "stale": "older than the settings in force",
    "phone_not_allowed": "this pupil may not bring a phone",
    "grant": "under an exception grant",
    "unknown": "reason not known",
    "double_tap": "SLT fob tapped twice",
    "downgrade": "older than the running version",
    "bad_hash": "a file did not match its checksum",
    "no_room": "not enough room on the locker",
    "exemption": "under an exemption",
    "visitor": "visitor",
}

# Alert kinds (lockerctl/alerts.py): what the alert's title says.
ALERTS = {
    "door_forced": "Door forced open",
    "door_left_open": "Door left open",
    "emergency_open": "Emergency open",
    "cmd_rejected": "Remote command refused by the locker",
    "journal_near_full": "Locker's memory nearly full",
    "uncollected": "Phone not collected",
    "config_rejected": "New settings refused by the locker",
    "config_behind": "New settings not applied",
    "clock": "Locker's clock not set",
    "offline": "Locker offline in school hours",
    "refused_bad_mac": "Forged or corrupted event refused",
    "refused_conflict": "Event that contradicts the stored one",
    "refused_seq_ahead": "Event numbered beyond what the locker can hold",
    "refused_impossible": "Impossible event refused (no firmware can send it)",
    "refused_checkpoint": "Trail behind a checkpoint a locker holds",
}

ROLES = {
    "pupil": "a pupil",
    "staff": "a staff member",
    "slt": "a staff member",
    "office": "a staff member",
    "visitor": "a visitor",
}


def event_words(kind: str | None) -> str:
    """An event type in plain English (an unknown type as it is)."""
    if kind is None:
        return ""
    return EVENTS.get(kind, kind)


def reason_words(reason: str | None) -> str:
    """A reason in plain English; a repeat summary (`denied_repeated`: "<word> x<n> ...") as
    "<word in English>, <n> more times"; a free-text reason as it is."""
    if not reason:
        return ""
    if reason in REASONS:
        return REASONS[reason]
    word, _, rest = reason.partition(" x")
    if word in REASONS and rest[:1].isdigit():
        count = rest.split(" ", 1)[0]
        return f"{REASONS[word]}, {count} more times" if count.isdigit() else REASONS[word]
    return reason


def alert_words(kind: str) -> str:
    return ALERTS.get(kind) or EVENTS.get(kind) or kind.replace("_", " ").capitalize()


def describe(kind: str | None, reason: str | None) -> str:
    """ "Card refused: during lessons (...)": an event's type and reason in one phrase."""
    what, why = event_words(kind), reason_words(reason)
    return f"{what}: {why}" if why else what


def someone(role: str | None) -> str:
    """Who, for a reader who may not see names: "a pupil", "a staff member", "someone"."""
    return ROLES.get(role or "", "someone")
