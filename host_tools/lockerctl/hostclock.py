"""The host's clock for the lockers (docs/protocol.md, "Host time"; docs/architecture.md, "Time").

`lockerctl serve` reads every locker's `state`. A locker whose clock is unknown puts a fresh random
`clock_nonce` (16 hex digits) in its state; the host answers on that locker's `cmd` topic with a
signed command, `op` "time", `bay` 0, `by` "host", `reason` "<clock_nonce> <unix seconds>", signed
with the locker's command key like every command. The locker takes it only while its clock is
unknown and only with the nonce it is waiting for, so an old answer replayed cannot move a clock.

A live (not retained) `state` also carries the locker's own `time`: the host records how far it is
from the host's clock at arrival (`Store.set_clock_offset`), which the dashboard shows.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable

from . import topics
from .commands import sign_command

log = logging.getLogger("lockerctl.serve")

NONCE_RE = re.compile(r"[0-9a-f]{16}\Z")
ANSWER_EXPIRES_S = 60  # a time answer is good for this long (when the locker can tell at all)
REANSWER_S = 5.0  # the same nonce seen again after this: answered again (the first was lost)
MAX_STATE_BYTES = 65536
OFFSET_REWRITE_S = 60.0  # an unchanged offset is written again at most this often ...
OFFSET_CHANGE_S = 1.0  # ... unless it moved by at least this much


class HostClock:
    """Answers clock nonces and measures clock offsets. `publish(topic, payload)` sends a command;
    `store_factory()` opens the store this object uses from the thread that calls `on_state`."""

    def __init__(
        self,
        site: str,
        store_factory: Callable,
        publish: Callable[[str, bytes], None],
        clock: Callable[[], float] = time.time,
    ):
        self.site = site
        self._store_factory = store_factory
        self._store = None
        self.publish = publish
        self.clock = clock
        self._answered: dict[str, tuple[str, float]] = {}
        self._written: dict[str, tuple[float, float]] = {}  # locker -> (offset, monotonic)
        self._lock = threading.Lock()
        self.answers = 0  # time answers sent (for tests and the log)

    @property
    def store(self):
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def topic_filter(self) -> str:
        return topics.locker_topic(self.site, topics.ANY, "state")

    def locker_of(self, topic: str) -> str | None:
        where = topics.parse(topic, self.site)
        return where[0] if where is not None and where[1] == "state" else None

    def on_state(self, topic: str, payload: bytes, retained: bool) -> None:
        """One `state` message. Never raises for a bad payload (a locker may be hostile)."""
        received = self.clock()
        locker = self.locker_of(topic)
        if locker is None or len(payload) > MAX_STATE_BYTES:
            return
        try:
            state = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return
        if not isinstance(state, dict):
            return
        try:
            self._offset(locker, state, retained, received)
            self._answer(locker, state)
        except Exception as e:  # the store is down, the locker unknown: the next state retries
            log.warning("clock of locker %s: %s", locker[:28], str(e).splitlines()[0][:200])

    def _offset(self, locker: str, state: dict, retained: bool, received: float) -> None:
        t = state.get("time")
        if retained or type(t) is not int or not 0 < t < 2**32:
            return  # a retained state's time is from whenever it was sent
        offset = t - received
        now = time.monotonic()
        last = self._written.get(locker)
        if (
            last is not None
            and abs(offset - last[0]) < OFFSET_CHANGE_S
            and now - last[1] < OFFSET_REWRITE_S
        ):
            return  # a state is sent on every tap: the store is not written for each
        self.store.set_clock_offset(self.site, locker, offset, received)
        self._written[locker] = (offset, now)

    def _answer(self, locker: str, state: dict) -> None:
        nonce = state.get("clock_nonce")
        if not isinstance(nonce, str) or not NONCE_RE.match(nonce) or state.get("clock_ok"):
            return
        now = time.monotonic()
        with self._lock:
            last = self._answered.get(locker)
            if last is not None and last[0] == nonce and now - last[1] < REANSWER_S:
                return
            self._answered[locker] = (nonce, now)
        row = self.store.locker(self.site, locker)
        if row is None:
            return  # not a locker of this site
        cmd_id = self.store.next_command_id(self.site, locker)
        t = int(self.clock())
        payload = sign_command(
            bytes(row.secret), locker, cmd_id, "time", 0, "host", f"{nonce} {t}",
            t + ANSWER_EXPIRES_S,
        )  # fmt: skip
        self.publish(topics.locker_topic(self.site, locker, "cmd"), payload)
        self.answers += 1
        log.info("locker %s has no clock: sent it the host's time", locker)
