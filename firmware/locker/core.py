# The locker: what happens when a card is tapped, a door moves, time passes or the host speaks.
#
# Ties the card registry, the school's rules (policy), the bays and the journal together. The one
# rule this module exists to keep: every event is appended to the journal and committed to flash
# *before* the action it records takes effect (a bay unlocks only after its grant is durable).
# No I/O but through `board` and the journal; no networking (the link calls in).

import gc
import json
from binascii import hexlify, unhexlify

from locker import bays as B
from locker import const, policy, ring, unload
from locker.bays import ticks_add, ticks_diff
from locker.bundle import Bundle, BundleError
from locker.exceptions import Rules, assess
from locker.journal import JournalFull
from locker.mac import CARD, CMD, CONFIG, FIRMWARE, derive, message_keys
from locker.registry import Registry, parse_uid
from locker.timetable import Timetable

_ROLE_OF_FOB = const("slt")
_VERSION = const("0.2.0")  # the firmware's version, in `state` (docs/protocol.md)
_STATE_FIXED = const(512)  # state_json's room for all but the bays (a 28-character locker id)
_STATE_PER_BAY = const(72)  # ... and per bay (a longer holder's id grows the buffer once)
# ... and the host's checkpoint: a note of up to 700 bytes as JSON (a note with many characters
# that JSON escapes grows the buffer once)
_STATE_CHECKPOINT = const(800)
_BAY_JSON = const('{{"bay": {}, "locked": {}, "door": "{}", "holder": {}}}')
_NEXT_BAY_JSON = const(', {{"bay": {}, "locked": {}, "door": "{}", "holder": {}}}')
_MIN_HOST_TIME = const(1704067200)  # 2024-01-01: a host time before this is not believed
_REPEATS_KEPT = const(4)  # cards whose repeated denials are being counted (docs/journal.md)
# What the journal's reserve is kept for (docs/journal.md): any other kind (denials, rejected
# commands and configurations, ...) is not recorded once only the reserve is left.
_ESSENTIAL = const(
    (
        "boot",
        "deposit",
        "retrieve",
        "override",
        "policy_flag",
        "emergency_open",
        "released",
        "cancelled",
        "door_forced",
        "door_left_open",
        "door_closed",
        "uncollected",
        "config_applied",
        "journal_near_full",
        "update_failed",
        "updated",
    )
)


def _mem_free():
    """Free heap in bytes (None under CPython, whose gc does not say)."""
    f = getattr(gc, "mem_free", None)
    return f() if f is not None else None


def _denied(reason):
    return {"result": "denied", "reason": reason}


def _granted(action, bay):
    return {"result": "granted", "action": action, "bay": bay}


class Locker:
    def __init__(self, board, device, settings):
        self.board = board
        self.settings = settings
        self.locker_id = device["locker_id"]
        self.site = device.get("site", "school")
        secret = unhexlify(device["secret"])
        if len(secret) != 32:
            raise ValueError("device.json: secret must be 64 hex digits")
        self.config_key = derive(secret, CONFIG)
        self.cmd_key = derive(secret, CMD)
        # the MAC keys of events (which the link signs as it sends them) and of the host's acks
        # (which the link checks), derived once (docs/protocol.md, Keys)
        self.keys = message_keys(secret)
        self.registry = Registry(derive(secret, CARD))
        self.fw_key = derive(secret, FIRMWARE)  # signed offers (locker/update.py)
        del secret
        # What the boot loader (main.py) says about this boot: slot, version, trial, reset cause
        self.boot = device.get("boot") or {}
        self.version = self.boot.get("version") or _VERSION
        self.updater = None  # locker/update.py's Updater while an offer is handled
        self._up_ms = 0  # uptime, summed tick by tick (ticks_ms wraps)
        self._up_at = board.ticks_ms()
        self._heap_low = None

        self.bays = [B.Bay(n) for n in range(1, board.nbays + 1)]
        self.dir = board.data_dir
        self.bundle = None
        self.timetable = Timetable(None)
        self.grants = ()
        self.rules = None  # the bundle's consents, exemptions and visitors (locker.exceptions)
        self._load_config()
        self._commands = None  # the command counter, read when the first command arrives

        self.override_by = None  # person id of the SLT fob that armed an override
        self.override_until_ms = 0  # a tick: compared with ticks_diff, never `<`
        self.last_fob = None  # (person, tick) of the last SLT fob tap, for the double tap
        self.online = False
        self.state_rev = 0
        # While the clock is unknown the state asks the host for its time with this nonce: drawn
        # at random on each boot, never used again once the clock is set (docs/protocol.md).
        # (Every new name costs heap on a board: docs/memory.md, interned names.)
        self.clock_nonce = None
        if board.now() is None:
            from binascii import hexlify
            from os import urandom

            self.clock_nonce = hexlify(urandom(8)).decode()
        self.on_commit = None  # the link sets this to be woken when events are durable
        self._near_full_raised = False
        self.unrecorded = 0  # events not journaled for want of room, not yet told (tick)
        self._repeats = []  # [card hash, reason, person, window start ms, count, first, last]
        # state_json's buffer, kept (see there): made now, while the heap still has room in one
        # piece (its 3 KB for 24 bays did not fit once the heap was fragmented)
        self._state_buf = bytearray(
            _STATE_FIXED + _STATE_CHECKPOINT + _STATE_PER_BAY * len(self.bays)
        )

        # The journal: a ring of sectors on the board's journal region, or segment files on its
        # filesystem when it has none (docs/journal.md); one from an earlier firmware is carried
        # into the ring once this firmware is no longer on trial.
        region = board.journal_region
        self.journal = ring.select(region, self.dir + "/journal", self._snapshot, settings)
        snapshot, events = self.journal.open()
        self._recover(snapshot, events)
        snapshot = events = None
        self.journal = ring.adopt(self.journal, region, settings, self.boot.get("trial"))
        # The host's latest checkpoint as (its note as JSON text, acked): escaped once, not for
        # every state the locker publishes (interned names are few: docs/memory.md).
        kept = self.journal.checkpoint()
        self.checkpoint = None if kept is None else (json.dumps(kept[0]), kept[1])
        kept = None
        self._record("boot", None, reason=None)
        self._commit()
        if self.boot.get("failed") and not self.boot.get("told", True):
            from locker import update

            update.at_boot(self)

    # -- configuration ------------------------------------------------------------------------

    def _load_config(self):
        if self.bundle is not None:
            self.bundle.close()
            self.bundle = None
        try:
            bundle = Bundle.load(self.dir, self.config_key)
        except BundleError:
            bundle = None  # a damaged config.bin is never trusted; wait for the host's next one
        self.bundle = bundle
        self.registry.use(bundle)
        self.timetable = Timetable(bundle.timetable if bundle else None)
        if bundle is not None and bundle.timetable:
            bundle.timetable.pop("offsets", None)  # the Timetable holds it, compactly
        self.grants = bundle.grants if bundle else ()
        self.rules = Rules(bundle) if bundle is not None and bundle.nrules else None

    @property
    def config_version(self):
        return self.bundle.version if self.bundle else None

    def config_receiver(self, length):
        """A sink for an incoming `config` payload of `length` bytes, or None to discard it."""
        if length > self.settings["max_config_bytes"]:
            self._config_rejected("too_large")
            return None
        return _ConfigSink(self, length)

    def _config_finished(self, receiver, complete):
        if not complete:
            receiver.abort()
            self._config_rejected("truncated")
            return
        if self.bundle is not None:  # config.bin may be replaced under it: close it first
            self.bundle.close()
        try:
            version = receiver.finish()
        except BundleError as e:
            self._load_config()  # the old configuration, untouched
            reason = e.args[0] if e.args else "malformed"
            if reason != "stale":  # a stale one is the retained copy of what we run: no news
                self._config_rejected(reason)
            return
        self._load_config()
        self._record("config_applied", self.board.now(), reason=str(version))
        self._commit()

    def _config_rejected(self, reason):
        self._record("config_rejected", self.board.now(), reason=reason)
        self._commit()

    # -- taps ---------------------------------------------------------------------------------

    def tap_text(self, uid_text):
        """A tap from the control port: UID as 8 or 14 hex digits."""
        return self.tap(parse_uid(uid_text))

    def tap(self, uid):
        if self.journal.full:
            card = self.registry.lookup(uid)
            # not even the reserve is left; an SLT fob still works: its double tap opens every
            # occupied bay, recorded or not (emergency_open); and a card whose bay is already
            # open is told so (nothing to record), never `denied`
            bay = self._bay_of(card.person) if card is not None else None
            if (card is None or card.role != _ROLE_OF_FOB or card.revoked) and (
                bay is None or bay.locked
            ):
                self.unrecorded += 1
                self.board.feedback("alarm")
                return _denied("journal_full")
        try:
            return self._tap(uid)
        except OSError:  # the flash refused the record: nothing was unlocked
            self.board.feedback("alarm")
            return _denied("journal_error")

    def _tap(self, uid):
        now = self.board.now()
        now_ms = self.board.ticks_ms()
        card = self.registry.lookup(uid)
        self._expire_override(now_ms)

        if card is not None and card.role == _ROLE_OF_FOB and not card.revoked:
            return self._fob(card, now, now_ms)
        self.last_fob = None  # a card between two fob taps: they are two overrides, never one

        bay = self._bay_of(card.person) if card is not None else None
        override_by = self.override_by
        if bay is not None and not bay.locked:
            # The bay is already open for this person (their own grant, or an emergency open):
            # the answer says so, whatever the policy would say now. An armed override is spent
            # on this card all the same (it never waits for a later one).
            self.override_by = None
            return _granted("deposit" if bay.state == B.OPEN_DEPOSIT else "retrieve", bay.number)
        approval, allowed, ended = None, False, False
        if card is not None and not card.revoked and card.role != _ROLE_OF_FOB:
            approval, allowed, ended = assess(
                self.rules, self.grants, self.timetable, card, now, bay is not None
            )
        action, reason, flag = policy.decide(
            card,
            now,
            self.timetable,
            bay is not None,
            override_by,
            approval is not None,
            allowed,
            ended,
        )
        if override_by is not None and card is not None:
            self.override_by = None  # the override releases exactly one card
            if action == "deposit":
                action, reason, flag = "denied", "not_holder", None

        if action == "denied":
            self._deny(uid, now, card.person if card else None, reason)
            self.board.feedback("denied", reason)
            return _denied(reason)

        if action == "deposit":
            if bay is None:
                bay = B.choose_free_bay(self.bays, card.person)
            if bay is None:
                self._deny(uid, now, card.person, "no_free_bay")
                self.board.feedback("denied", "no_free_bay")
                return _denied("no_free_bay")
            if bay.state == B.OPEN_DEPOSIT:  # a second tap while the door is still to be opened
                return _granted("deposit", bay.number)
            self._record("deposit", now, bay=bay.number, person=card.person, reason=card.role)
            if flag:
                self._record(
                    flag, now, bay=bay.number, person=card.person, reason="phone_not_allowed"
                )
            self._commit()
            bay.grant_deposit(card.person, card.role, now_ms)
            self._unlock(bay)
            self.board.feedback("granted")
            return _granted("deposit", bay.number)

        # retrieve or override: the person's phone is in `bay`
        if bay.state == B.OPEN_RETRIEVE:
            return _granted(action, bay.number)
        if bay.state == B.OPEN_DEPOSIT:  # tapped again before the door was even opened
            return _granted("deposit", bay.number)
        if action == "override":
            self._record("override", now, bay=bay.number, person=card.person, by=override_by)
        elif approval is not None:  # a grant or an exemption: which, and who approved it
            self._record(
                "retrieve",
                now,
                bay=bay.number,
                person=card.person,
                by=approval[1],
                reason=approval[0],
            )
        else:
            self._record("retrieve", now, bay=bay.number, person=card.person)
        self._commit()
        bay.grant_retrieve(now_ms)
        self._unlock(bay)
        self.board.feedback("override" if action == "override" else "granted")
        return _granted(action, bay.number)

    def _fob(self, card, now, now_ms):
        """An SLT fob (docs/policy.md): arms an override for override_s; the same fob tapped again
        within double_tap_s, with no card tapped in between, opens every occupied bay instead."""
        last = self.last_fob
        if (
            last is not None
            and last[0] == card.person
            and 0 <= ticks_diff(now_ms, last[1]) <= self.settings["double_tap_s"] * 1000
        ):
            self.last_fob = None
            self.override_by = None
            self.emergency_open(self._occupied(), now, card.person, "double_tap")
            return _granted("emergency_open", None)
        self.last_fob = (card.person, now_ms)
        self.override_by = card.person
        self.override_until_ms = ticks_add(now_ms, self.settings["override_s"] * 1000)
        self.board.feedback("override")
        return _granted("override", None)

    def _deny(self, uid, now, person, reason):
        """Journals a denial. The first of a card's denials for one reason within
        denial_window_s is recorded at once; later ones are counted here and recorded as one
        `denied_repeated` event when the window closes (tick) or when another event is recorded
        (docs/journal.md). A count not yet recorded is lost with the power."""
        now_ms = self.board.ticks_ms()
        key = self.registry.card_hash(uid)
        window = self.settings.get("denial_window_s", 60) * 1000
        for rep in self._repeats:
            if rep[0] == key and rep[1] == reason:
                if ticks_diff(now_ms, rep[3]) < window:
                    if not rep[4]:
                        rep[5] = now
                    rep[4] += 1
                    rep[6] = now
                    return
                self._repeated(now_ms)  # its window has closed: its count is recorded
                break
        self._record("denied", now, person=person, reason=reason)  # other counts first
        if len(self._repeats) >= _REPEATS_KEPT:
            self._repeats.pop(0)  # its count was just recorded: only its window ends early
        self._repeats.append([key, reason, person, now_ms, 0, None, None])
        self._commit()

    def _repeated(self, now_ms=None):
        """Records counted denials as `denied_repeated` events (one per card and reason): every
        count when now_ms is None (another event is being recorded; the windows go on), else
        those whose window has closed at now_ms (dropped then). True if it appended any."""
        window = self.settings.get("denial_window_s", 60) * 1000
        before = self.journal.last_seq
        for rep in self._repeats if now_ms is None else self._repeats[:]:
            if now_ms is not None:
                if ticks_diff(now_ms, rep[3]) < window:
                    continue
                self._repeats.remove(rep)
            count = rep[4]
            if not count:
                continue
            rep[4] = 0
            if self.journal.routine_full:
                self.unrecorded += count
                continue
            self._record(
                "denied_repeated",
                rep[6],
                person=rep[2],
                reason="{} x{} {}-{} {}".format(
                    rep[1],
                    count,
                    "?" if rep[5] is None else rep[5],
                    "?" if rep[6] is None else rep[6],
                    hexlify(rep[0][:4]).decode(),
                ),
            )
        return self.journal.last_seq != before

    def _expire_override(self, now_ms):
        """Ends an armed override and a fob's double-tap window once their time is up. Called on
        every tap and tick: a tick difference is only meaningful within half the counter's period
        (about 6 days), so neither is left to be compared with a tick from days later."""
        if self.override_by is not None and ticks_diff(now_ms, self.override_until_ms) >= 0:
            self.override_by = None
        last = self.last_fob
        if last is not None:
            if not 0 <= ticks_diff(now_ms, last[1]) <= self.settings["double_tap_s"] * 1000:
                self.last_fob = None

    def _bay_of(self, person):
        for bay in self.bays:
            if bay.holder == person and (bay.occupied or bay.state == B.OPEN_DEPOSIT):
                return bay
        return None

    def _occupied(self):
        return [bay for bay in self.bays if bay.state == B.OCCUPIED]

    # -- opening bays on someone's authority ----------------------------------------------------

    def emergency_open(self, bays, now, by, reason):
        """Open `bays` (occupied ones) for retrieval: all journaled in one commit, then
        unlocked."""
        if not bays:
            self._record("emergency_open", now, by=by, reason=reason)
            self._commit()
            return []
        for bay in bays:
            self._record(
                "emergency_open", now, bay=bay.number, person=bay.holder, by=by, reason=reason
            )
        try:
            self._commit()
        except OSError:  # the flash failed: an emergency opens all the same, with the alarm
            self.unrecorded += len(bays)
        now_ms = self.board.ticks_ms()
        for bay in bays:
            bay.grant_retrieve(now_ms)
            self._unlock(bay)
        self.board.feedback("emergency_open")  # its own pattern, not an override's
        return [bay.number for bay in bays]

    @property
    def commands(self):
        """The id counter of signed commands (locker.cmdauth.Counter). Commands are rare, so
        their module is imported when the first one arrives, not at boot."""
        if self._commands is None:
            from locker.cmdauth import Counter

            self._commands = Counter(self.dir + "/cmd_counter")
        return self._commands

    def command(self, payload):
        """A signed command from the host (`cmd` topic): `open`, or `time`, the host's answer to
        this locker's clock_nonce: `reason` is "<nonce> <unix seconds>". The host's time is taken
        only while the clock is unknown and only with the nonce this locker is waiting for, so an
        old answer replayed cannot move a clock and a trusted clock is never overruled; the nonce
        makes it fresh, so a time answer neither needs nor uses the command counter (its file is
        not even read: the answer comes at boot, when the heap is at its tightest)."""
        from locker.cmdauth import CommandError, verify

        now = self.board.now()
        cmd = None
        try:
            cmd = verify(payload, self.cmd_key, self.locker_id, 0, None)  # MAC and form
            op = cmd.get("op")
            if op == "time":
                if now is not None:
                    return False  # trusted already (NTP, the RTC, `clock`): a late answer
                nonce, _, text = cmd["reason"].partition(" ")
                if self.clock_nonce is None or nonce != self.clock_nonce:
                    raise CommandError("wrong_nonce")
                try:
                    now = int(text)
                except ValueError:
                    raise CommandError("malformed") from None
                if now < _MIN_HOST_TIME:
                    raise CommandError("malformed")
                self.board.set_clock(now)
                self.clock_set()
                return True
            if op == "checkpoint":  # the host's signed checkpoint: bay 0, by "host", the note
                if cmd.get("bay") != 0 or cmd.get("by") != "host" or not cmd["reason"]:
                    raise CommandError("malformed")
            elif op != "open" and op != "release":
                raise CommandError("malformed")
            if cmd["id"] <= self.commands.last:
                raise CommandError("replayed")
            if now is not None and now > cmd["exp"]:
                raise CommandError("expired")
            if op == "open":
                targets = self._targets(cmd.get("bay"))
            elif op == "release":
                # the office's named release: "<person> <reason>"; only the bay that holds
                # that person's phone opens (the host's view of the bays may be behind)
                person, _, why = cmd["reason"].partition(" ")
                if type(cmd.get("bay")) is not int:  # noqa: E721
                    raise CommandError("malformed")
                targets = self._targets(cmd.get("bay"))
                if not targets or targets[0].holder != person or not person:
                    raise CommandError("not_holder")
        except CommandError as e:
            self.command_rejected(e.args[0] if e.args else "malformed", cmd or payload)
            return False
        finally:
            if self._commands is None:  # no open yet: the checking code goes (docs/memory.md)
                unload("locker.cmdauth")
        if op == "checkpoint":
            # Kept in the journal with the acked mark; not an event (the state reports it). Stored
            # before the counter moves: a crash between lets only this same note in again.
            try:
                acked = self.journal.checkpoint(cmd["reason"])
            except ValueError:  # over 700 bytes
                self.command_rejected("too_large", cmd)
                return False
            except OSError:  # the flash refused: the one before stays
                self.command_rejected("journal_error", cmd)
                return False
            self.commands.advance(cmd["id"])
            self.checkpoint = None  # the old note's bytes go before the new one's come
            self.checkpoint = (json.dumps(cmd["reason"]), acked)
            self.state_rev += 1
            return True
        self.commands.advance(cmd["id"])  # before acting: a replay fails even after a reboot
        if op == "release":
            bay = targets[0]
            self._record("released", now, bay=bay.number, person=person, by=cmd["by"], reason=why)
            self._commit()
            bay.grant_retrieve(self.board.ticks_ms())
            self._unlock(bay)
            self.board.feedback("granted")
            return True
        self.emergency_open(targets, now, cmd.get("by"), cmd.get("reason"))
        return True

    def command_rejected(self, reason, cmd=None):
        """Records a refused command with who sent it (`by`, when it is a person id: 1-28 ASCII
        letters, digits, '.', '_', '-') and which bay it was for (a bay of this locker), as far as
        the payload (`cmd`: the verified dict, or the raw bytes) says."""
        by = bay = None
        if cmd and not isinstance(cmd, dict):
            try:
                cmd = json.loads(cmd)
            except (ValueError, TypeError, UnicodeError):
                cmd = None
        if isinstance(cmd, dict):
            by = cmd.get("by")
            if isinstance(by, str) and 1 <= len(by) <= 28:
                for c in by.encode():
                    if c in b"._-" or 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122:
                        continue
                    by = None
                    break
            else:
                by = None
            bay = cmd.get("bay")
            if type(bay) is not int or not 1 <= bay <= len(self.bays):  # noqa: E721
                bay = None
        self._record("cmd_rejected", self.board.now(), bay=bay, by=by, reason=reason)
        self._commit()

    def _targets(self, which):
        if which == "all":
            return self._occupied()
        if which == "staff":
            return [b for b in self._occupied() if b.holder_role in ("staff", "office")]
        if isinstance(which, int) and not isinstance(which, bool) and 1 <= which <= len(self.bays):
            bay = self.bays[which - 1]
            return [bay] if bay.state == B.OCCUPIED else []
        from locker.cmdauth import CommandError

        raise CommandError("no_such_bay")

    # -- doors and time -------------------------------------------------------------------------

    def door(self, number, reading):
        """The reed switch of bay `number` reads B.OPEN, B.CLOSED or B.UNKNOWN."""
        bay = self.bays[number - 1]
        now_ms = self.board.ticks_ms()
        was_holder = bay.holder
        outcome = bay.door_changed(reading, now_ms)
        if outcome == "door_forced":
            self._record("door_forced", self.board.now(), bay=number, person=was_holder)
            self._commit()
            self.board.feedback("alarm")
        elif outcome == "closed" or (reading == B.OPEN and not bay.locked):
            # Closed after use: relock. Opened under a grant: the bolt has nothing to hold, so the
            # solenoid is released at once (lock solenoids are not rated to stay energised, and a
            # slam latch lets the door close on a released bolt).
            self.board.set_lock(number, False)
        self.state_rev += 1

    def tick(self):
        """Time-driven checks: lapsed grants, doors left open, override expiry, uncollected."""
        now_ms = self.board.ticks_ms()
        now = self.board.now()
        self._up_ms += ticks_diff(now_ms, self._up_at)
        self._up_at = now_ms
        free = _mem_free()
        if free is not None and (self._heap_low is None or free < self._heap_low):
            self._heap_low = free
        if self.boot.get("trial") and self.online:
            from locker import update

            update.confirm(self)  # the new firmware came online: it stays
        if self.updater is not None:
            self.updater.tick()  # switches (and resets) when a checked update is ready
        self._expire_override(now_ms)
        dirty = self._repeated(now_ms)
        lapse_ms = self.settings["grant_lapse_s"] * 1000
        open_ms = self.settings["door_left_open_s"] * 1000
        for bay in self.bays:
            if bay.lapse_due(now_ms, lapse_ms):
                person = bay.holder
                what = bay.lapse()
                self.board.set_lock(bay.number, False)
                if what is not None:
                    self._record("cancelled", now, bay=bay.number, person=person, reason=what)
                    dirty = True
                self.state_rev += 1
            if bay.left_open_due(now_ms, open_ms):
                self._record("door_left_open", now, bay=bay.number, person=bay.holder)
                dirty = True
        if now is not None:
            dirty = self._uncollected(now) or dirty
        if self.journal.near_full and not self._near_full_raised:
            self._near_full_raised = True
            self._record("journal_near_full", now)
            dirty = True
        if self.unrecorded and not self.journal.routine_full:
            lost, self.unrecorded = self.unrecorded, 0
            self._record("unrecorded", now, reason=str(lost))
            dirty = True
        if dirty:
            self._commit()
        # Last, with everything due recorded: flash work for later (the ring erases the sector
        # ahead of its head here, 45 ms on a typical chip, so that no tap waits for it).
        self.journal.idle()

    def _uncollected(self, now):
        due = self.timetable.uncollected_ts(now)
        if due is None or now < due:
            return False
        day = self.timetable.local(now)[0]
        raised = False
        for bay in self.bays:
            if bay.state == B.OCCUPIED and bay.uncollected_day != day:
                bay.uncollected_day = day
                self._record("uncollected", now, bay=bay.number, person=bay.holder)
                raised = True
        return raised

    def clock_set(self):
        """The RTC was set (sim `clock`, NTP, the host's time): nothing to journal, but the state
        changes, and the host's time is no longer wanted."""
        self.clock_nonce = None
        self.state_rev += 1

    def acknowledged(self, seq):
        """The host stored every event up to `seq` (the link checked it was sent)."""
        before = self.journal.acked
        self.journal.ack(seq)
        if self.journal.acked != before:
            self.state_rev += 1

    # -- the journal ----------------------------------------------------------------------------

    def _record(self, kind, ts, bay=None, person=None, by=None, reason=None):
        """Append an event (committed by _commit). When the journal is full nothing more can be
        recorded: taps are refused before they get here (see tap), and what the time-driven
        checks and doors would add is counted as lost and sounded as an alarm instead.
        Counted denials are recorded first (another event closes their count: _deny). Anything
        but the _ESSENTIAL kinds stops short of the journal's reserve and is counted as lost
        (told to the host in an `unrecorded` event once there is room again)."""
        if self._repeats and kind != "denied_repeated":
            self._repeated()
        if kind not in _ESSENTIAL and self.journal.routine_full:
            self.unrecorded += 1
            return
        try:
            self.journal.append(kind, ts, bay, person, by, reason)
        except JournalFull:
            self.unrecorded += 1
            self.board.feedback("alarm")

    def _commit(self):
        self.journal.commit()
        self.state_rev += 1
        if self.on_commit is not None:
            self.on_commit()

    def _unlock(self, bay):
        self.board.set_lock(bay.number, True)

    def _snapshot(self):
        """Bay state for the journal's snapshot record (see _recover)."""
        return json.dumps(
            [[b.holder if b.occupied else None, b.holder_role, b.last_holder] for b in self.bays]
        ).encode()

    def _recover(self, snapshot, events):
        """Rebuild holders from the latest snapshot and the events after it. Every bay comes back
        locked: a grant open at the moment of power loss is taken as used for a retrieval (the
        phone is assumed gone) and as not yet used for a deposit (the bay keeps its holder, who
        can tap again), so no phone is ever recorded as free while it may be in a bay."""
        if snapshot:
            try:
                rows = json.loads(snapshot)
            except ValueError:
                rows = []
            for bay, row in zip(self.bays, rows):
                bay.restore(row[0], row[1], row[2])
        lapsed = {}
        for ev in events:
            if ev.bay is None or not 1 <= ev.bay <= len(self.bays):
                continue
            bay = self.bays[ev.bay - 1]
            kind = ev.type
            if kind == "deposit":
                bay.restore(ev.person, ev.reason, ev.person)
            elif kind in ("retrieve", "override", "emergency_open", "released"):
                lapsed[ev.bay] = (bay.holder, bay.holder_role)
                bay.restore(None, None, bay.last_holder)
            elif kind == "cancelled":
                if ev.reason == "deposit":
                    bay.restore(None, None, bay.last_holder)
                elif ev.bay in lapsed:
                    holder, role = lapsed[ev.bay]
                    bay.restore(holder, role, bay.last_holder)

    # -- what the host and the control port see ---------------------------------------------------

    def state(self):
        state = {
            "locker": self.locker_id,
            "clock_ok": self.board.now() is not None,
            "time": self.board.now(),
            "clock_nonce": None if self.board.now() is not None else self.clock_nonce,
            "online": self.online,
            "pending": self.journal.pending,
            "config": self.config_version,
            "version": self.version,
            "bays": [bay.view() for bay in self.bays],
            "journal_free": self.journal.capacity - self.journal.used_bytes,
            "checkpoint": self.checkpoint
            and json.loads('{{"note": {}, "acked": {}}}'.format(*self.checkpoint)),
        }
        state.update(json.loads("{" + self._health_json()[2:] + "}"))
        return state

    def offer_sink(self, length):
        """A sink for an incoming firmware offer (locker/update.py)."""
        from locker import update

        return update.offer_sink(self, length)

    def _health_json(self):
        """', "uptime_s": ..., "update": {...}': the health fields of the state
        (docs/protocol.md, `state`)."""
        board = self.board
        free = _mem_free()
        heap_max = getattr(board, "heap_max", 0)  # the simulated board samples the live heap
        if heap_max and free is not None:
            low = gc.mem_alloc() + free - heap_max
        else:
            low = self._heap_low if self._heap_low is not None else free
        j = self.journal
        offered = progress = None
        if self.updater is not None:
            offered, progress = self.updater.view()
        return (
            ', "uptime_s": {}, "reset_cause": {}, "heap_free": {}, "heap_low": {}, '
            '"journal_fill": {}, "rssi": {}, "clock_offset_s": {}, '
            '"update": {{"offered": {}, "progress": {}, "failed": {}}}'
        ).format(
            self._up_ms // 1000,
            json.dumps(self.boot.get("cause") or "power_on"),
            json.dumps(free),
            json.dumps(low),
            int(j.used_bytes * 1000 // (j.capacity or 1)) / 1000,
            json.dumps(board.rssi()),
            json.dumps(board.clock_correction),
            json.dumps(offered),
            json.dumps(progress),
            json.dumps(self.boot.get("failed")),
        )

    def state_buffer(self):
        """A new buffer with room for state_json's output (grown there if ever short)."""
        return bytearray(_STATE_FIXED + _STATE_CHECKPOINT + _STATE_PER_BAY * len(self.bays))

    def state_json(self, buf=None):
        """json.dumps(self.state()) written into `buf` (a bytearray, emptied first and grown as
        needed), or into the locker's own buffer, which the next such call reuses: write it out
        before anything else runs. As a dict of one dict per bay, then a str, then bytes, the
        state took 5-7 KB of heap at once for 24 bays, in blocks that a fragmented heap may no
        longer have; it is built on every change (the `state` topic, the control port)."""
        if buf is None:
            buf = self._state_buf
            if buf is None:  # once, early, while the heap still has room in one piece
                buf = self._state_buf = self.state_buffer()
        buf[:] = b""  # the length goes to 0, the block stays
        dumps = json.dumps
        buf += b'{"locker": '
        buf += dumps(self.locker_id).encode()
        now = self.board.now()
        buf += b', "clock_ok": true' if now is not None else b', "clock_ok": false'
        buf += ', "time": {}, "clock_nonce": {}'.format(
            dumps(now), dumps(None if now is not None else self.clock_nonce)
        ).encode()
        buf += b', "online": true' if self.online else b', "online": false'
        buf += ', "pending": {}, "config": {}, "version": {}, "bays": ['.format(
            self.journal.pending, dumps(self.config_version), dumps(self.version)
        ).encode()
        for bay in self.bays:
            fmt = _BAY_JSON if bay.number == 1 else _NEXT_BAY_JSON
            buf += fmt.format(
                bay.number,
                dumps(bay.locked),
                B.DOOR_NAMES[bay.door],
                dumps(bay.holder if bay.occupied or bay.state == B.OPEN_DEPOSIT else None),
            ).encode()
        buf += '], "journal_free": {}, "checkpoint": '.format(
            self.journal.capacity - self.journal.used_bytes
        ).encode()
        if self.checkpoint is None:
            buf += b"null"
        else:
            buf += b'{"note": '
            buf += self.checkpoint[0]  # a str: MicroPython appends its UTF-8 bytes, no copy made
            buf += ', "acked": {}}}'.format(self.checkpoint[1]).encode()
        buf += self._health_json()
        buf += b"}"
        return buf


class _ConfigSink:
    """Streams a `config` payload to flash; the bundle is checked and swapped in on close."""

    def __init__(self, locker, length):
        self.locker = locker
        self.expected = length
        self.received = 0
        from locker.receiver import Receiver  # loaded while a bundle arrives, then dropped

        self.receiver = Receiver(
            locker.dir,
            locker.config_key,
            locker.locker_id,
            locker.config_version or 0,
            locker.settings["max_config_bytes"],
        )

    def write(self, chunk):
        self.received += len(chunk)
        self.receiver.write(chunk)

    def close(self):
        if self.receiver is None:
            return  # aborted already
        try:
            self.locker._config_finished(self.receiver, self.received == self.expected)
        finally:
            self._done()

    def abort(self):
        """The payload was refused mid-stream, or the connection dropped: nothing changes."""
        if self.receiver is None:
            return  # closed or aborted already
        reason = self.receiver.failed or "truncated"
        self.receiver.abort()
        self._done()
        if reason != "stale":  # the retained copy of what already runs: no news
            self.locker._config_rejected(reason)

    def _done(self):
        # Configs are rare: the receiver's code goes with this sink (docs/memory.md).
        self.receiver = None
        unload("locker.receiver")
