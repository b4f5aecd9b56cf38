# One state machine per bay, and the door reed switch that drives it.
#
#   FREE --grant deposit--> OPEN_DEPOSIT --door opened, closed--> OCCUPIED (locked)
#   OCCUPIED --grant retrieve--> OPEN_RETRIEVE --door opened, closed--> FREE
#   OPEN_* --door not opened within grant_lapse_s--> back where it was (the grant is `cancelled`)
#
# Every bay is locked except while a grant is open. The Bay does no I/O: it says what to do
# (lock, unlock, which event) and the Locker journals and drives the outputs.

from locker import const

# -- millisecond ticks that wrap, as on the board: every duration in the firmware uses these
#
# An ESP32's `time.ticks_ms()` (any 32-bit port's) wraps at 2^30 ms, about every 12.4 days, so two
# tick values are never subtracted or ordered directly: ticks_diff(a, b) is how far a is after b
# (negative when before; meaningful within half the period), ticks_add(t, ms) the tick ms after t
# (ticks_add(n, 0): any count of milliseconds as a tick). The simulated board's counter wraps at
# 2^30 too, while a 64-bit port's `time.ticks_*` use a far longer period and CPython's `time` has
# none: there (and in the tests on CPython) the same arithmetic is done here. They live in this
# module, which the locker loads anyway, because every module and global name costs heap on a
# board (docs/memory.md); tests/test_firmware_ticks.py checks that nothing else subtracts ticks.

_MASK = const(0x3FFFFFFF)  # the period is 2^30
_HALF = const(0x20000000)


def ticks_diff(a, b):
    """a - b for tick values, in -2^29 .. 2^29 - 1 (as time.ticks_diff)."""
    return ((a - b + _HALF) & _MASK) - _HALF


def ticks_add(t, ms):
    """The tick `ms` milliseconds after t (as time.ticks_add)."""
    return (t + ms) & _MASK


try:  # a port whose own ticks wrap at 2^30 (the ESP32): its native functions, same results
    import time

    if time.ticks_add(0, -1) == _MASK:
        ticks_diff = time.ticks_diff  # noqa: F811
        ticks_add = time.ticks_add  # noqa: F811
except (ImportError, AttributeError):
    pass


FREE = const(0)
OPEN_DEPOSIT = const(1)
OCCUPIED = const(2)
OPEN_RETRIEVE = const(3)

STATE_NAMES = ("free", "open_deposit", "occupied", "open_retrieve")

# Door readings: the reed switch says closed or open; a failed switch says nothing we can trust.
CLOSED = const(0)
OPEN = const(1)
UNKNOWN = const(2)
DOOR_NAMES = ("closed", "open", "unknown")


class Bay:
    # Every field has its resting value here, on the class: an instance holds only what differs
    # (MicroPython has no __slots__; each instance attribute is a slot in the instance's own
    # dict, and 24 bays of 13 fields each cost 8 KB of a 64-bit heap).
    state = FREE
    holder = None  # person whose phone is in the bay (or is being deposited)
    holder_role = None  # role of the card that deposited it
    last_holder = None  # a person goes back to their own bay
    door = CLOSED
    granted_ms = None
    door_opened = False
    door_open_since_ms = None
    left_open_raised = False
    uncollected_day = 0
    previous_holder = None  # restored when a retrieval lapses
    previous_role = None

    def __init__(self, number):
        self.number = number

    @property
    def locked(self):
        return self.state in (FREE, OCCUPIED)

    @property
    def occupied(self):
        return self.state in (OCCUPIED, OPEN_RETRIEVE)

    # -- grants ---------------------------------------------------------------------------------

    def grant_deposit(self, person, role, now_ms):
        self.state = OPEN_DEPOSIT
        self.holder = person
        self.holder_role = role
        self.last_holder = person
        self._granted(now_ms)

    def grant_retrieve(self, now_ms):
        self.previous_holder = self.holder
        self.previous_role = self.holder_role
        self.state = OPEN_RETRIEVE
        self._granted(now_ms)

    def _granted(self, now_ms):
        self.granted_ms = now_ms
        self.door_opened = self.door == OPEN
        if self.uncollected_day:  # written only when it changes: see the class's comment
            self.uncollected_day = 0

    def lapse_due(self, now_ms, lapse_ms):
        """True when an open grant's door was never opened in time (the grant lapses)."""
        return (
            self.state in (OPEN_DEPOSIT, OPEN_RETRIEVE)
            and not self.door_opened
            and ticks_diff(now_ms, self.granted_ms) >= lapse_ms
        )

    def lapse(self):
        """The grant lapses. Returns what lapsed ("deposit" or "retrieve"); the bay relocks as it
        was. With a failed reed switch nobody can tell whether the door was used, so the grant is
        taken as completed instead (returns None): a phone is never stranded as "free"."""
        was = self.state
        if self.door == UNKNOWN:
            self.complete()
            return None
        if was == OPEN_DEPOSIT:
            self.state = FREE
            self.holder = self.holder_role = None
            return "deposit"
        self.state = OCCUPIED
        self.holder, self.holder_role = self.previous_holder, self.previous_role
        return "retrieve"

    def complete(self):
        """The door closed after being opened under a grant: the phone is in, or out."""
        if self.state == OPEN_DEPOSIT:
            self.state = OCCUPIED
        elif self.state == OPEN_RETRIEVE:
            self.state = FREE
            self.holder = self.holder_role = None
        self.granted_ms = None

    # -- the reed switch ------------------------------------------------------------------------

    def door_changed(self, reading, now_ms):
        """The reed switch reads `reading`. Returns an event word or None:
        "door_forced" when a locked door opens, "closed" when an open grant completes."""
        if reading == self.door:
            return None
        self.door = reading
        if reading == OPEN:
            self.door_open_since_ms = now_ms
            if self.left_open_raised:
                self.left_open_raised = False
            if self.locked:
                return "door_forced"
            self.door_opened = True
            return None
        self.door_open_since_ms = None
        if reading == CLOSED and self.state in (OPEN_DEPOSIT, OPEN_RETRIEVE) and self.door_opened:
            self.complete()
            return "closed"
        return None

    def left_open_due(self, now_ms, limit_ms):
        if self.door == OPEN and not self.left_open_raised and self.door_open_since_ms is not None:
            if ticks_diff(now_ms, self.door_open_since_ms) >= limit_ms:
                self.left_open_raised = True
                return True
        return False

    # -- recovery -------------------------------------------------------------------------------

    def restore(self, holder, role, last_holder):
        """Boot: the bay comes back locked, with its phone if the journal says so."""
        self.state = OCCUPIED if holder else FREE
        self.holder = holder
        self.holder_role = role
        self.last_holder = last_holder
        self.granted_ms = None

    def view(self):
        return {
            "bay": self.number,
            "locked": self.locked,
            "door": DOOR_NAMES[self.door],
            "holder": self.holder if self.occupied or self.state == OPEN_DEPOSIT else None,
        }


def choose_free_bay(bays, person):
    """The bay a deposit goes to: the person's own bay if free, else a never-used free bay,
    else the lowest free one. None when every bay is taken."""
    fallback = None
    unused = None
    for bay in bays:
        if bay.state != FREE:
            continue
        if bay.last_holder == person:
            return bay
        if unused is None and bay.last_holder is None:
            unused = bay
        if fallback is None:
            fallback = bay
    return unused or fallback
