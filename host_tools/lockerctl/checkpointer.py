"""The service's checkpointer: every `--checkpoint-every` seconds a signed checkpoint of the
trail (`checkpoint.py`) goes to every locker as a signed `cmd`."""

from __future__ import annotations

import logging
import threading
import time

from .ingest import one_line

log = logging.getLogger("lockerctl.serve")


class Checkpointer:
    """Signs a checkpoint of the trail (`checkpoint.py`) every `every` seconds and sends it to
    every locker as a signed `cmd` (op `checkpoint`, bay 0, by `host`, the note as reason).

    A round signs and sends when the trail's head moved since the last note sent, and to any
    locker whose reported state does not hold the latest note (a new or wiped board, one that
    was offline): a quiet site costs no flash writes at the lockers, and no locker holds a note
    more than one round old. Before signing, the head is compared with the checkpoint each
    locker holds: a store that no longer has that locker's entry (restored from an old backup,
    its tail cut) would otherwise get a smaller checkpoint signed over the evidence. Then
    nothing is signed or sent, and an urgent alert (`checkpoint`) says so.
    """

    every = 600.0
    expires = 120  # seconds a checkpoint command stays valid

    def __init__(self, store, site: str, publish, every: float | None = None, ready=None):
        self.store = store
        self.site = site
        self.publish = publish  # publish(locker, payload) on its `cmd` topic
        self.ready = ready or (lambda: True)
        if every:
            self.every = every
        self.last: tuple[int, str] | None = None
        self.note: str | None = None
        self.sent = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Checkpointer:
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.every
            try:
                if self.ready():
                    self.round()
                else:
                    delay = 1.0  # not connected yet: try again soon
            except Exception as e:
                log.error("checkpoint round failed: %s", one_line(e))
                delay = min(self.every, 30.0)
            self._wake.wait(delay)
            self._wake.clear()

    def round(self, now: int | None = None) -> int:
        """One round; returns the number of lockers sent a checkpoint."""
        from . import checkpoint
        from .commands import sign_command

        head = self.store.trail_head()
        lockers = list(self.store.lockers(self.site))
        problem = self._inconsistent(head, lockers)
        if problem:
            log.error("no checkpoint signed: %s", problem)
            self.store.record_refusals(self.site, [("-", "checkpoint", problem)])
            return 0
        if head != self.last or self.note is None:
            self.note = checkpoint.make(self.store, self.site).note
            self.last = head
            targets = lockers
        else:
            targets = [row for row in lockers if _held_note(row) != self.note]
        now = int(time.time()) if now is None else now
        count = 0
        for row in targets:
            locker_id = row.id
            try:
                cmd_id = self.store.next_command_id(self.site, locker_id)
                payload = sign_command(
                    bytes(row.secret),
                    locker_id,
                    cmd_id,
                    "checkpoint",
                    0,
                    "host",
                    self.note,
                    now + self.expires,
                )
                self.publish(locker_id, payload)
                count += 1
            except Exception as e:  # one locker must not hold back the others
                log.error("checkpoint to %s not sent: %s", locker_id, one_line(e))
        if count:
            self.sent += count
            log.info("checkpoint of %d entries sent to %d locker(s)", head[0], count)
        return count

    def _inconsistent(self, head: tuple[int, str], lockers) -> str | None:
        from . import checkpoint

        public = self.store.host_public_key(checkpoint.KEY)
        if public is None:
            return None
        for row in lockers:
            note = _held_note(row)
            if not note:
                continue
            try:
                held = checkpoint.verify(note, public)
            except checkpoint.CheckpointError:
                continue  # not ours: nothing it says counts
            if held.size > head[0] or self.store.trail_hash_at(held.size) != held.head:
                return (
                    f"locker {row.id} holds a checkpoint of {held.size} entries that"
                    f" the store (head at {head[0]}) does not match: run `lockerctl audit verify`"
                )
        return None


def _held_note(row) -> str | None:
    state = row.state
    cp = state.get("checkpoint") if isinstance(state, dict) else None
    return cp.get("note") if isinstance(cp, dict) else None
