# runs-on: cpython
"""The locker as a state machine (hypothesis `RuleBasedStateMachine`).

The firmware's real `locker.core.Locker`, on the tests' fake board (its millisecond counter wraps
at 2^30, as an ESP32's does, and starts near the wrap), is driven through random sequences of:
pupils (Year 6 walk-home or not), staff, office and SLT fobs, unknown and revoked cards; doors
opening, closing, forced and failing; time moving (within a day, across home time, across the
counter's wrap, across a clock change); the clock set; an exception grant; signed commands (good,
forged, expired, replayed, for no such bay); restarts from the journal. The test keeps its own
model of the school's policy (docs/policy.md, written here from the policy's text, not from the
firmware) and after every step checks:

- a bay is unlocked only while a named rule allows it: a deposit into a bay that was free, a
  retrieval the policy allows now, one override for one holder within 20 s of one fob tap, an
  emergency open by a fob double tap (no card between, within 3 s) or by a valid command; and an
  unopened grant relocks after 30 s;
- every unlock was journaled first (the fake board refuses an unlock before the journal's commit)
  and the journal has the matching event for that bay;
- after a restart every bay is locked, holders kept;
- each reply agrees with what the bays did (a denial unlocks nothing, a grant names the bay it
  unlocked, a reply never says `denied` for a bay that is open).

`make test` runs a few hundred examples; `--hypothesis-profile=long` (tests/conftest.py) many more.
"""

import shutil
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import make_fixtures
from fakeboard import TICKS_PERIOD, FakeBoard
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from locker import bays as B
from locker import settings as locker_settings
from locker.core import Locker
from lockerctl.commands import sign_command

# -- the school, as the fixture bundle describes it (tests/firmware/make_fixtures.py) -------------

LONDON = ZoneInfo("Europe/London")
TERMS = [(date(2026, 9, 3), date(2026, 10, 23)), (date(2026, 11, 2), date(2026, 12, 18))]
CLOSED = {date(2026, 11, 2)}
CONTACT = [(8 * 3600 + 45 * 60, 10 * 3600 + 30 * 60), (10 * 3600 + 45 * 60, 12 * 3600),
           (13 * 3600, 15 * 3600 + 15 * 60)]  # fmt: skip
HOME = 15 * 3600 + 15 * 60
Y6_EARLY = 10 * 60
GRANTS = make_fixtures.GRANTS
SECRET = make_fixtures.SECRET
LOCKER_ID = make_fixtures.LOCKER
FAR = make_fixtures.FAR

CARDS = {uid: (person, role, year, walk, revoked)
         for uid, person, role, year, walk, revoked in make_fixtures.CARDS}  # fmt: skip
UNKNOWN = "DEADBEEF"
FOB = "04A10006"
TAPPABLE = sorted(CARDS) + [UNKNOWN]

OVERRIDE_MS = 20_000
DOUBLE_TAP_MS = 3_000
LAPSE_MS = 30_000
TICK_MS = 2_000  # the ticker runs at least this often (docs/protocol.md)


def _local(d: date, hh: int, mm: int, ss: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, hh, mm, ss, tzinfo=LONDON).timestamp())


def _instants():
    """Moments worth landing on: the edges of every rule, on a winter and a summer school day, a
    closed day, a Saturday and the night the clocks go back."""
    days = [date(2026, 11, 24), date(2026, 10, 13), date(2026, 11, 2), date(2026, 11, 28)]
    times = [(7, 50), (8, 44, 59), (8, 45), (10, 29, 59), (10, 30), (10, 45), (11, 20), (12, 0),
             (12, 59, 59), (13, 0), (13, 30), (13, 59, 59), (14, 0), (15, 4, 59), (15, 5),
             (15, 14, 59), (15, 15), (16, 15), (16, 15, 1)]  # fmt: skip
    out = [_local(d, *t) for d in days for t in times]
    change = int(datetime(2026, 10, 25, 1, 0, tzinfo=timezone.utc).timestamp())
    out += [change - 2, change + 1, change + 3600]  # the clocks go back at 01:00 UTC
    return sorted(set(out))


INSTANTS = _instants()


def is_school_day(now: int) -> bool:
    d = datetime.fromtimestamp(now, LONDON).date()
    return d.weekday() < 5 and d not in CLOSED and any(a <= d <= b for a, b in TERMS)


def may_retrieve(person, role, year, walk, now) -> bool:
    """The policy's answer for a card whose phone is in a bay, with the clock known."""
    for g in GRANTS:
        if g["person"] == person and g["from"] <= now < g["until"]:
            return True
    if not is_school_day(now):
        return True
    t = datetime.fromtimestamp(now, LONDON)
    sod = t.hour * 3600 + t.minute * 60 + t.second
    if role == "pupil":
        return sod >= HOME - (Y6_EARLY if year == 6 and walk else 0)
    return not any(a <= sod < b for a, b in CONTACT)


_FIXTURES = None


def _fixtures() -> Path:
    global _FIXTURES
    if _FIXTURES is None:
        _FIXTURES = Path(tempfile.mkdtemp(prefix="sm-fixtures-"))
        make_fixtures.main(_FIXTURES)
    return _FIXTURES


class Allowance:
    """Why a bay may be unlocked, since when (the board's unwrapped ms), and whether its door has
    been opened since."""

    def __init__(self, rule, ms, opened):
        self.rule = rule
        self.ms = ms
        self.opened = opened


class LockerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="sm-locker-")
        self.locker = None
        self.last_cmd = 0  # the id of the last command the locker accepted (model)
        self.next_cmd = 1
        self.sent = []  # command payloads sent so far (for replays)
        self.sent_times = []  # host time answers sent so far
        self.allow = {}  # bay -> Allowance
        self.armed = None  # (person, until_ms): an armed override
        self.last_fob = None  # (person, ms): the last fob tap, no card since
        self.doors = {}

    def teardown(self):
        if self.locker is not None:
            self.locker.journal.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the locker ----------------------------------------------------------------------------

    def _boot(self, clock, ticks_start):
        shutil.copy(_fixtures() / "bundle-v1.bin", self.dir + "/config.bin")
        board = FakeBoard(self.dir, 4, ticks_start)
        board.clock = clock
        device = {"locker_id": LOCKER_ID, "site": "school", "bays": 4, "secret": SECRET.hex()}
        locker = Locker(board, device, locker_settings.load(device))
        board.locker = locker
        board.committed = locker.journal.last_seq
        commit = locker.journal.commit

        def tracked():
            commit()
            board.committed = locker.journal.last_seq

        locker.journal.commit = tracked
        self.board, self.locker = board, locker
        self.doors = {n: B.CLOSED for n in range(1, 5)}
        self.allow = {}
        self.armed = self.last_fob = None

    @initialize(
        clock=st.one_of(st.none(), st.sampled_from(INSTANTS)),
        before_wrap=st.integers(0, 40_000),
    )
    def boot(self, clock, before_wrap):
        self._boot(clock, TICKS_PERIOD - before_wrap)

    def _snapshot(self):
        return [(b.state, b.holder, b.holder_role) for b in self.locker.bays]

    def _events_since(self, seq):
        """The events journaled after `seq`, less the counts of repeated denials that any event
        flushes first (`denied_repeated`: docs/journal.md), which unlock nothing."""
        return [
            e
            for e in self.locker.journal.unacked(0)
            if e.seq > seq and e.type != "denied_repeated"
        ]

    def _check_unlocks(self, new_unlocks, new_events, kinds):
        for bay in new_unlocks:
            assert any(e.bay == bay and e.type in kinds for e in new_events), (
                bay,
                kinds,
                [(e.type, e.bay) for e in new_events],
            )

    def _grant(self, bay, why):
        self.allow[bay] = Allowance(why, self.board.ms, self.doors[bay] == B.OPEN)

    # -- taps ----------------------------------------------------------------------------------

    @rule(uid=st.sampled_from(TAPPABLE))
    def tap(self, uid):
        self._tap(uid)

    @rule(gap=st.sampled_from([0.5, 1.6, 2.9, 3.0, 3.1, 5.0]))
    def fob_twice(self, gap):
        self._tap(FOB)
        self._advance(gap)
        self._tap(FOB)

    def _tap(self, uid):
        locker, board = self.locker, self.board
        pre = self._snapshot()
        seq = locker.journal.last_seq
        n_unlocks = len(board.unlocks)
        ms, now = board.ms, board.clock
        if self.armed is not None and ms >= self.armed[1]:
            self.armed = None
        reply = locker.tap_text(uid)
        new_events = self._events_since(seq)
        new_unlocks = board.unlocks[n_unlocks:]
        card = CARDS.get(uid)

        if card is not None and card[1] == "slt":
            last = self.last_fob
            if last is not None and last[0] == card[0] and 0 <= ms - last[1] <= DOUBLE_TAP_MS:
                occupied = [i + 1 for i, (s, _, _) in enumerate(pre) if s == B.OCCUPIED]
                assert reply == {"result": "granted", "action": "emergency_open", "bay": None}
                assert sorted(new_unlocks) == occupied
                self._check_unlocks(new_unlocks, new_events, ("emergency_open",))
                for bay in occupied:
                    self._grant(bay, "emergency_open")
                self.armed = self.last_fob = None
            else:
                assert reply == {"result": "granted", "action": "override", "bay": None}, reply
                assert new_unlocks == []
                self.armed = (card[0], ms + OVERRIDE_MS)
                self.last_fob = (card[0], ms)
            return

        self.last_fob = None  # a card between two fob taps
        assert reply.get("action") not in ("emergency_open",), reply
        if card is None:
            assert reply == {"result": "denied", "reason": "unknown_card"}, reply
            assert new_unlocks == []
            return
        person, role, year, walk, revoked = card
        held = [i + 1 for i, (s, h, _) in enumerate(pre) if h == person and s != B.FREE]
        bay = held[0] if held else None
        state = pre[bay - 1][0] if bay else None
        armed = self.armed is not None
        if armed:
            self.armed = None  # the override releases exactly one card

        if state in (B.OPEN_DEPOSIT, B.OPEN_RETRIEVE):
            action = "deposit" if state == B.OPEN_DEPOSIT else "retrieve"
            assert reply == {"result": "granted", "action": action, "bay": bay}, reply
            assert new_unlocks == [] and new_events == []
            return
        if armed:
            if state == B.OCCUPIED:
                assert reply == {"result": "granted", "action": "override", "bay": bay}, reply
                assert new_unlocks == [bay]
                self._check_unlocks(new_unlocks, new_events, ("override",))
                self._grant(bay, "override")
            else:
                reason = "revoked" if revoked else "not_holder"
                assert reply == {"result": "denied", "reason": reason}, reply
                assert new_unlocks == []
            return
        if revoked:
            assert reply == {"result": "denied", "reason": "revoked"}, reply
            assert new_unlocks == []
            return
        if bay is None:
            free = [i + 1 for i, (s, _, _) in enumerate(pre) if s == B.FREE]
            if not free:
                assert reply == {"result": "denied", "reason": "no_free_bay"}, reply
                assert new_unlocks == []
                return
            assert reply["result"] == "granted" and reply["action"] == "deposit", reply
            assert reply["bay"] in free and new_unlocks == [reply["bay"]]
            self._check_unlocks(new_unlocks, new_events, ("deposit",))
            self._grant(reply["bay"], "deposit")
            return
        # the phone is in `bay`, locked
        if now is None:
            assert reply == {"result": "denied", "reason": "clock_unknown"}, reply
            assert new_unlocks == []
        elif may_retrieve(person, role, year, walk, now):
            assert reply == {"result": "granted", "action": "retrieve", "bay": bay}, (reply, now)
            assert new_unlocks == [bay]
            self._check_unlocks(new_unlocks, new_events, ("retrieve",))
            self._grant(bay, "retrieve")
        else:
            assert reply == {"result": "denied", "reason": "contact_hours"}, (reply, now)
            assert new_unlocks == []

    # -- doors ---------------------------------------------------------------------------------

    @rule(
        bay=st.integers(1, 4),
        reading=st.sampled_from([B.OPEN, B.CLOSED, B.OPEN, B.CLOSED, B.UNKNOWN]),
    )
    def door(self, bay, reading):
        locker, board = self.locker, self.board
        was_locked = locker.bays[bay - 1].locked
        was_door = self.doors[bay]
        seq = locker.journal.last_seq
        n_unlocks = len(board.unlocks)
        locker.door(bay, reading)
        self.doors[bay] = reading
        assert board.unlocks[n_unlocks:] == []  # a door never unlocks anything
        kinds = [e.type for e in self._events_since(seq)]
        if reading == B.OPEN and was_door != B.OPEN and was_locked:
            assert kinds == ["door_forced"], kinds
            assert locker.bays[bay - 1].locked
        if reading == B.OPEN and bay in self.allow:
            self.allow[bay].opened = True

    # -- time ----------------------------------------------------------------------------------

    def _lapse_pending(self):
        return any(not a.opened for a in self.allow.values())

    def _advance(self, seconds):
        """Time passes as on the board: the ticker runs at least every 2 s while a grant may
        lapse (further jumps only when nothing is waiting on the time)."""
        remaining = seconds
        while remaining > 0:
            step = min(remaining, TICK_MS / 1000) if self._lapse_pending() else remaining
            self.board.advance(step)
            remaining -= step
            self.locker.tick()
            self._forget_locked()
            for bay, a in self.allow.items():
                if not a.opened and self.board.ms - a.ms >= LAPSE_MS + TICK_MS:
                    raise AssertionError(f"bay {bay}: unopened {a.rule} grant past 30 s")

    @rule(seconds=st.sampled_from([0.3, 1, 1.6, 2.5, 3.1, 19, 21, 29, 31, 59, 61, 600, 3600]))
    def advance(self, seconds):
        self._advance(seconds)

    @rule(hours=st.integers(1, 20))
    def advance_hours(self, hours):
        self._advance(hours * 3600)

    @precondition(lambda self: not self.allow and self.armed is None and self.last_fob is None)
    @rule(before=st.integers(0, 5_000))
    def near_the_wrap(self, before):
        """The board has been up for nearly 12.4 days: its counter is about to wrap."""
        b = self.board
        b.ms += (TICKS_PERIOD - b.ms % TICKS_PERIOD - before) % TICKS_PERIOD

    @rule(instant=st.sampled_from(INSTANTS))
    def set_clock(self, instant):
        """NTP, the host or `clock` sets the real-time clock (it may go back)."""
        self.board.clock = instant
        self.locker.clock_set()

    # -- signed commands -----------------------------------------------------------------------

    @rule(
        kind=st.sampled_from(["good", "good", "forged", "expired", "replay"]),
        bay=st.sampled_from([1, 2, 3, 4, "all", "staff", 9]),
        skip=st.integers(0, 2),
    )
    def command(self, kind, bay, skip):
        locker, board = self.locker, self.board
        now = board.clock
        if kind == "replay":
            if not self.sent:
                return
            cmd_id, target, exp, payload, genuine = self.sent[-1 - skip % len(self.sent)]
        else:
            cmd_id = self.next_cmd + skip
            self.next_cmd = cmd_id + 1
            target = bay
            exp = (now - 1 if now else 1000) if kind == "expired" else (now or FAR) + 60
            key = bytes(32) if kind == "forged" else SECRET
            payload = sign_command(key, LOCKER_ID, cmd_id, "open", target, "O1", "drill", exp)
            genuine = kind != "forged"
            self.sent.append((cmd_id, target, exp, payload, genuine))
        pre = self._snapshot()
        seq = locker.journal.last_seq
        n_unlocks = len(board.unlocks)
        ok = locker.command(payload)
        new_events = self._events_since(seq)
        new_unlocks = board.unlocks[n_unlocks:]
        valid = (
            genuine
            and cmd_id > self.last_cmd
            and (now is None or now <= exp)
            and target in (1, 2, 3, 4, "all", "staff")
        )
        assert ok is valid, (ok, kind, cmd_id, self.last_cmd, now, exp, target)
        if not valid:
            assert new_unlocks == []
            assert [e.type for e in new_events] == ["cmd_rejected"]
            return
        self.last_cmd = cmd_id
        occupied = [i + 1 for i, (s, _, _) in enumerate(pre) if s == B.OCCUPIED]
        if target == "all":
            expected = occupied
        elif target == "staff":
            expected = [b for b in occupied if pre[b - 1][2] in ("staff", "office")]
        else:
            expected = [target] if target in occupied else []
        assert sorted(new_unlocks) == expected
        self._check_unlocks(new_unlocks, new_events, ("emergency_open",))
        for b in expected:
            self._grant(b, "command")

    @rule(
        kind=st.sampled_from(["good", "good", "old_nonce", "forged", "replay"]),
        instant=st.sampled_from(INSTANTS),
    )
    def host_time(self, kind, instant):
        """The host answers the locker's clock_nonce with its time (signed `time` command)."""
        locker, board = self.locker, self.board
        nonce = locker.state()["clock_nonce"]
        assert (nonce is None) == (board.clock is not None)
        if kind == "replay":
            if not self.sent_times:
                return
            cmd_id, payload, genuine, sent_nonce, t = self.sent_times[-1]
        else:
            cmd_id = self.next_cmd
            self.next_cmd += 1
            sent_nonce = nonce if kind in ("good", "forged") else "00ff00ff00ff00ff"
            sent_nonce = sent_nonce or "0123456789abcdef"
            t = instant
            key = bytes(32) if kind == "forged" else SECRET
            payload = sign_command(
                key, LOCKER_ID, cmd_id, "time", 0, "host", f"{sent_nonce} {t}", FAR
            )
            genuine = kind != "forged"
            self.sent_times.append((cmd_id, payload, genuine, sent_nonce, t))
        n_unlocks = len(board.unlocks)
        before = board.clock
        ok = locker.command(payload)
        assert board.unlocks[n_unlocks:] == []
        # the nonce makes an answer fresh: its id is neither checked nor recorded by the locker
        valid = genuine and before is None and sent_nonce == nonce
        assert ok is valid, (ok, kind, cmd_id, before, nonce, sent_nonce)
        if valid:
            assert board.clock == t and locker.state()["clock_nonce"] is None
        else:
            assert board.clock == before  # an old or forged answer, or a trusted clock

    # -- restarts ------------------------------------------------------------------------------

    @rule(keep_clock=st.booleans(), before_wrap=st.integers(0, 40_000))
    def restart(self, keep_clock, before_wrap):
        """Power lost and back: a new board (its counter starts again), the same flash."""
        pre = self._snapshot()
        clock = self.board.clock if keep_clock else None
        self.locker.journal.close()
        self._boot(clock, TICKS_PERIOD - before_wrap)
        assert self.board.locks == [False] * 4 and self.board.unlocks == []
        for bay, (state, holder, _) in zip(self.locker.bays, pre, strict=True):
            assert bay.locked, bay.number
            if state in (B.OCCUPIED, B.OPEN_DEPOSIT):  # a deposit never seen done is kept
                assert bay.state == B.OCCUPIED and bay.holder == holder, (bay.number, state)
            else:
                assert bay.state == B.FREE, (bay.number, state)

    # -- after every step ----------------------------------------------------------------------

    def _forget_locked(self):
        for bay in [b for b in self.allow if self.locker.bays[b - 1].locked]:
            del self.allow[bay]

    @invariant()
    def a_bay_is_unlocked_only_while_a_rule_allows_it(self):
        if self.locker is None:
            return
        self._forget_locked()
        for bay in self.locker.bays:
            if not bay.locked:
                assert bay.number in self.allow, (bay.number, B.STATE_NAMES[bay.state])
            if self.board.locks[bay.number - 1]:
                assert not bay.locked, bay.number  # the solenoid is energised only for a grant

    @invariant()
    def the_state_says_what_the_bays_are(self):
        if self.locker is None:
            return
        for view, bay in zip(self.locker.state()["bays"], self.locker.bays, strict=True):
            assert view["locked"] == bay.locked


def _max_examples():
    """A few hundred under the default profile; the profile's own number when it asks for more
    (`--hypothesis-profile=long`)."""
    return max(250, settings.default.max_examples)


LockerMachine.TestCase.settings = settings(
    max_examples=_max_examples(),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLockerMachine = LockerMachine.TestCase


def test_the_oracle_knows_the_school_day():
    """The model's own reading of the timetable, on instants whose answers are known."""
    tue = date(2026, 11, 24)
    assert may_retrieve("S1", "staff", 0, False, _local(tue, 10, 35))
    assert not may_retrieve("S1", "staff", 0, False, _local(tue, 11, 20))
    assert not may_retrieve("P6W", "pupil", 6, True, _local(tue, 15, 4, 59))
    assert may_retrieve("P6W", "pupil", 6, True, _local(tue, 15, 5))
    assert not may_retrieve("P6N", "pupil", 6, False, _local(tue, 15, 5))
    assert may_retrieve("S2", "staff", 0, False, _local(tue, 13, 30))  # the grant
    assert may_retrieve("P3", "pupil", 3, False, _local(date(2026, 11, 28), 11, 0))  # Saturday
    summer = _local(date(2026, 10, 13), 15, 5)  # BST: 14:05 UTC
    assert datetime.fromtimestamp(summer, timezone.utc).hour == 14
    assert may_retrieve("P6W", "pupil", 6, True, summer)
    assert not may_retrieve("P6W", "pupil", 6, True, summer - 1)
    assert timedelta(seconds=INSTANTS[-1] - INSTANTS[0]) > timedelta(days=30)


# -- shrunk failures, kept (each found by this machine on the firmware before issue 11) ----------


def _replay(*steps):
    """Runs `steps` ((rule name, kwargs), ...) on a fresh machine, checking the invariants after
    each, as hypothesis does."""
    machine = LockerMachine()
    try:
        for name, kwargs in steps:
            getattr(machine, name)(**kwargs)
            machine.a_bay_is_unlocked_only_while_a_rule_allows_it()
            machine.the_state_says_what_the_bays_are()
    finally:
        machine.teardown()


def test_found_fob_before_and_after_the_wrap_is_no_double_tap():
    """The fob's tick was subtracted: a tap before the wrap and one 3.1 s later, after it, looked
    like a double tap and opened the occupied bay."""
    _replay(
        ("boot", {"clock": None, "before_wrap": 0}),
        ("tap", {"uid": "04A10001"}),
        ("restart", {"before_wrap": 1, "keep_clock": False}),
        ("fob_twice", {"gap": 3.1}),
    )


def test_found_override_armed_before_the_wrap_expires_after_it():
    """The override's end was compared by subtraction: armed before the wrap, it never expired,
    and the next card (here one with no phone in the locker) was taken as released."""
    _replay(
        ("boot", {"clock": None, "before_wrap": 1}),
        ("tap", {"uid": "04A10006"}),
        ("advance", {"seconds": 21}),
        ("tap", {"uid": "04A10001"}),
    )


def test_found_fob_card_fob_is_two_overrides():
    _replay(
        ("boot", {"clock": INSTANTS[10], "before_wrap": 40_000}),
        ("tap", {"uid": "04A10001"}),
        ("door", {"bay": 1, "reading": B.OPEN}),
        ("door", {"bay": 1, "reading": B.CLOSED}),
        ("tap", {"uid": "04A10003"}),
        ("door", {"bay": 2, "reading": B.OPEN}),
        ("door", {"bay": 2, "reading": B.CLOSED}),
        ("tap", {"uid": "04A10006"}),
        ("advance", {"seconds": 1}),
        ("tap", {"uid": "04A10001"}),
        ("advance", {"seconds": 0.3}),
        ("tap", {"uid": "04A10006"}),
    )


def test_found_unused_grant_lapses_across_the_wrap():
    _replay(
        ("boot", {"clock": INSTANTS[0], "before_wrap": 10_000}),
        ("tap", {"uid": "04A10004"}),
        ("advance", {"seconds": 31}),
        ("advance", {"seconds": 3.1}),
    )


def test_found_a_time_answer_does_not_spend_a_command_id():
    """A time answer's id is neither checked nor recorded: an open command with a lower id, first
    refused as expired, is taken when replayed later with the clock set back (found by this
    machine when its model had time answers advancing the counter)."""
    _replay(
        ("boot", {"clock": None, "before_wrap": 0}),
        ("host_time", {"instant": 1_791_877_499, "kind": "good"}),
        ("command", {"bay": 1, "kind": "expired", "skip": 0}),
        ("restart", {"before_wrap": 0, "keep_clock": False}),
        ("host_time", {"instant": 1_791_874_200, "kind": "good"}),
        ("command", {"bay": 1, "kind": "replay", "skip": 0}),
    )
