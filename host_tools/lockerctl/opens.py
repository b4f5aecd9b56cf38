"""Office emergency opens: checked, recorded in the trail, signed with the locker's key and its
next command id (`prepare_open`, which the dashboard publishes through the service), or sent by
`lockerctl open` on a connection of its own, waiting for the locker's answer (`send_open`)."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt

from . import brokerclient, topics
from .clibase import Site
from .payloads import OPEN_ANSWERS

DEFAULT_EXPIRES = 60
MAX_REASON = 200
MAX_EXPIRES = 366 * 86400


def parse_bay(value: str, bays: int) -> int | str:
    """`all`, `staff` or a bay number 1..bays; ValueError with the reason otherwise."""
    word = str(value).strip().lower()
    if word in ("all", "staff"):
        return word
    try:
        bay = int(word)
    except ValueError:
        raise ValueError(f"bay must be a number 1-{bays} or 'all', not {value!r}") from None
    if not 1 <= bay <= bays:
        raise ValueError(f"bay {bay} does not exist (the locker has bays 1-{bays})")
    return bay


def check_open(store, site: str, locker_id: str, bay, by: str, reason: str, expires: int):
    """Validates an office open without side effects: (locker row, bay, reason). ValueError with
    a one-line reason for a bad request."""
    from .bounds import check_text

    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required (--reason TEXT)")
    check_text(reason, "the reason", MAX_REASON)
    if not 0 < expires <= MAX_EXPIRES:
        raise ValueError(f"--expires must be 1 to {MAX_EXPIRES} seconds (a year), not {expires}")
    row = store.locker(site, locker_id)
    if row is None:
        raise ValueError(f"no locker {locker_id!r} on site {site!r}")
    target = parse_bay(bay, int(row.bays))
    if not by or store.person(site, by) is None:
        raise ValueError(f"--by {by!r} is not a person on the roster of site {site!r}")
    return row, target, reason


def prepare_open(
    store,
    site: str,
    locker_id: str,
    bay,
    by: str,
    reason: str,
    expires: int = DEFAULT_EXPIRES,
    actor: str | None = None,
    now: int | None = None,
) -> tuple[str, bytes, dict]:
    """Validates an office open, records it in the trail and signs it with the locker's key and
    its next command id: (topic, payload, detail). ValueError (nothing recorded) for a bad
    request. The dashboard calls this, then `Service.publish_command(locker, payload)`."""
    from .commands import sign_command

    row, target, reason = check_open(store, site, locker_id, bay, by, reason, expires)
    now = int(time.time()) if now is None else now
    cmd_id = store.next_command_id(site, locker_id)
    exp = now + int(expires)
    payload = sign_command(bytes(row.secret), locker_id, cmd_id, "open", target, by, reason, exp)
    detail = {
        "locker": locker_id,
        "bay": target,
        "by": by,
        "reason": reason,
        "cmd_id": cmd_id,
        "exp": exp,
    }
    store.record_action(site, actor or by, "open", detail)
    return topics.locker_topic(site, locker_id, "cmd"), payload, detail


def open_outcomes(payload: bytes | bytearray, by: str) -> list[dict]:
    """The events of an `event` payload (one event, or a batch of them: a locker with events
    waiting sends arrays, docs/protocol.md) that may answer an open sent by `by`."""
    try:
        got = json.loads(payload)
    except ValueError:
        return []
    out = []
    for ev in got if isinstance(got, list) else [got]:
        if not isinstance(ev, dict) or ev.get("type") not in OPEN_ANSWERS:
            continue
        if ev.get("type") != "cmd_rejected" and ev.get("by") not in (None, by):
            continue
        out.append(ev)
    return out


class _Answers:
    """The locker's answers to an open sent by `by`, gathered as they arrive (paho's thread):
    the bays it opened for `by`, or its refusal of the command."""

    def __init__(self, by: str):
        self.by = by
        self.events: list[dict] = []
        self._got = threading.Event()

    def take(self, msg: mqtt.MQTTMessage) -> None:
        found = open_outcomes(msg.payload, self.by)
        if found:
            self.events.extend(found)
            self._got.set()

    def wait(self, seconds: float) -> None:
        self._got.wait(seconds)
        if self._got.is_set():
            time.sleep(0.5)  # `all` opens several bays: gather their events too


def send_open(
    site: Site,
    store,
    locker_id: str,
    bay,
    by: str,
    reason: str,
    expires: int = DEFAULT_EXPIRES,
    wait: float = 0.0,
    timeout: float = 10.0,
):
    """`lockerctl open`: (detail, outcomes). Validates, connects to the broker, then records and
    signs the command and publishes it; with `wait`, the outcome events (list of event dicts,
    empty when none arrived). ValueError for a bad request and OSError when the broker cannot be
    reached, both before anything is recorded."""
    check_open(store, site.site, locker_id, bay, by, reason, expires)
    answers = _Answers(by)
    events = topics.locker_topic(site.site, locker_id, "event") if wait else None
    with brokerclient.session(site, store, "open", events, answers.take, timeout) as client:
        topic_name, payload, detail = prepare_open(
            store, site.site, locker_id, bay, by, reason, expires
        )
        info = client.publish(topic_name, payload, qos=1, retain=False)
        if not brokerclient.published(info, timeout):
            store.record_action(site.site, by, "open_failed", {**detail, "error": "not sent"})
            raise OSError("the broker did not accept the command")
        if wait:
            answers.wait(wait)
        return detail, list(answers.events)
