"""The office's named release (`lockerctl release`, the dashboard's release form): find the one
bay that holds a person's phone, send that locker a signed `release` command and wait for its
answer (docs/protocol.md, `cmd` op `release`).

The locker opens the bay only if that person's phone is in it (the host's view of the bays can
be behind the locker's journal), journals `released` (bay, holder, `by` the office person,
`reason` the reason) and unlocks; otherwise it rejects the command (`cmd_rejected`,
`not_holder`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

from . import topics
from .clibase import Site

# The reasons the office picks from; anything else is recorded as given ("other" with text).
REASONS = ("appointment", "illness", "collected by parent", "emergency", "other")
MAX_REASON = 200
DEFAULT_WAIT = 15.0


def check_reason(text: str | None) -> str:
    """The reason as recorded: a word of REASONS (any case, `_` or `-` for a space) or free
    text; ValueError for none, for `other` without its text, or control characters."""
    from .bounds import BoundError, check_text

    reason = " ".join((text or "").split())
    if not reason:
        raise ValueError(f"a reason is required ({', '.join(REASONS)} or other: TEXT)")
    word = reason.lower().replace("_", " ").replace("-", " ")
    if word in REASONS:
        if word == "other":
            raise ValueError("--reason other needs its text (other: TEXT)")
        return word
    try:
        check_text(reason, "the reason", MAX_REASON)
    except BoundError as e:
        raise ValueError(str(e)) from None
    return reason


@dataclass
class Release:
    """What `prepare` decided: where the phone is and the signed command."""

    person: str
    locker: str
    bay: int
    by: str
    reason: str
    cmd_id: int
    topic: str
    payload: bytes


def find_bay(store, site: str, person_id: str) -> tuple[str, int]:
    """(locker, bay) of the one bay holding the person's phone; ValueError otherwise."""
    from .store.lookup import phone_bays

    bays = phone_bays(store, site, person_id)
    if not bays:
        raise ValueError(f"{person_id} holds no phone in any locker")
    if len(bays) > 1:
        where = ", ".join(f"{lk} bay {b}" for lk, b in bays)
        raise ValueError(
            f"{person_id} has phones in {where}: open the one meant with lockerctl open LOCKER BAY"
        )
    return bays[0]


def prepare(
    store, site: str, person_id: str, by: str, reason: str, expires: int = 60, now=None
) -> Release:
    """Validates the release and signs its command (nothing recorded yet); ValueError."""
    from .commands import sign_command

    reason = check_reason(reason)
    if store.person(site, person_id, include_inactive=True) is None:
        raise ValueError(f"{person_id} is not on the roster of site {site}")
    if store.person(site, by) is None:
        raise ValueError(f"--by {by} is not on the roster of site {site}")
    locker_id, bay = find_bay(store, site, person_id)
    row = store.locker(site, locker_id)
    if row is None:
        raise ValueError(f"{person_id}'s phone is in {locker_id}, which is not registered")
    now = int(time.time()) if now is None else now
    cmd_id = store.next_command_id(site, locker_id)
    payload = sign_command(
        bytes(row.secret),
        locker_id,
        cmd_id,
        "release",
        bay,
        by,
        f"{person_id} {reason}",
        now + expires,
    )
    return Release(
        person_id,
        locker_id,
        bay,
        by,
        reason,
        cmd_id,
        topics.locker_topic(site, locker_id, "cmd"),
        payload,
    )


def record(store, site: str, rel: Release, actor: str, action: str = "release") -> None:
    """The release in the trail, before the command goes (the locker's answer is its own
    event: `released` or `cmd_rejected`)."""
    store.record_action(
        site,
        actor,
        action,
        {
            "person": rel.person,
            "locker": rel.locker,
            "bay": rel.bay,
            "by": rel.by,
            "reason": rel.reason,
            "cmd_id": rel.cmd_id,
        },
    )


def answer_of(rel: Release, payload: bytes) -> str | None:
    """`opened`, or the locker's refusal, if this `event` payload (one event or a batch)
    answers the release; else None."""
    try:
        got = json.loads(payload)
    except ValueError:
        return None
    for ev in got if isinstance(got, list) else [got]:
        if not isinstance(ev, dict) or ev.get("bay") != rel.bay:
            continue
        if ev.get("type") == "released" and ev.get("person") == rel.person:
            return "opened"
        if ev.get("type") == "cmd_rejected" and ev.get("by") == rel.by:
            return str(ev.get("reason") or "rejected")
    return None


def send_release(
    site: Site,
    store,
    person_id: str,
    by: str,
    reason: str,
    actor: str,
    wait: float = DEFAULT_WAIT,
    timeout: float = 10.0,
) -> tuple[Release, str | None]:
    """`lockerctl release`: (release, answer): `opened`, the locker's refusal reason, or None
    when no answer came within `wait`. ValueError for a bad request and OSError when the
    broker cannot be reached, both before anything is sent or recorded."""
    from . import brokerclient

    rel = prepare(store, site.site, person_id, by, reason)
    answers: list[str] = []
    got = threading.Event()

    def on_event(msg) -> None:
        answer = answer_of(rel, msg.payload)
        if answer is not None:
            answers.append(answer)
            got.set()

    events = topics.locker_topic(site.site, rel.locker, "event")
    with brokerclient.session(site, store, "release", events, on_event, timeout) as client:
        record(store, site.site, rel, actor)
        info = client.publish(rel.topic, rel.payload, qos=1, retain=False)
        if not brokerclient.published(info, timeout):
            record(store, site.site, rel, actor, "release_failed")
            raise OSError("the broker did not accept the command")
        got.wait(wait)
        return rel, (answers[0] if answers else None)
