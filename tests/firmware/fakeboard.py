# A board for the core's tests: time and ticks set by the test, outputs recorded, and a check that
# nothing is unlocked before the journal has made its record durable. Its millisecond counter is
# an ESP32's: it wraps at 2^30, and starts a few seconds before the wrap unless told otherwise, so
# that every test that lets time pass crosses it.

TICKS_PERIOD = 1 << 30


class FakeBoard:
    def __init__(self, data_dir, nbays=4, ticks_start=TICKS_PERIOD - 5000, region=None):
        self.nbays = nbays
        self.data_dir = data_dir
        self.clock = None
        self.ms = ticks_start  # counts on without wrapping; ticks_ms() is what the board shows
        self.locks = [False] * nbays
        self.unlocks = []  # (bay, pending events at the moment of unlocking)
        self.feedback_log = []
        self.locker = None
        # the journal's region: a simulated flash partition beside data_dir (timing off), unless
        # the test wants a board without one (region=False: the littlefs journal)
        if region is None:
            from hal.sim.flash import FileBlockDevice

            region = FileBlockDevice(data_dir + "/journal.img", 4096, 96)
        self.journal_region = region or None

    def now(self):
        return self.clock

    def ticks_ms(self):
        return self.ms % TICKS_PERIOD

    def advance(self, seconds):
        self.ms += int(seconds * 1000)
        if self.clock is not None:
            self.clock += int(seconds)

    def set_clock(self, unix_seconds):
        self.clock = int(unix_seconds)

    def set_lock(self, bay, unlocked):
        if unlocked and self.locker is not None:
            j = self.locker.journal
            # the journal must hold nothing appended-but-not-committed when a bay unlocks
            assert j.last_seq == self.committed, (
                "bay {} unlocked before its record was durable".format(bay)
            )
            self.unlocks.append(bay)
        self.locks[bay - 1] = bool(unlocked)

    committed = 0
    clock_correction = None  # the state's clock_offset_s

    def rssi(self):
        return None

    def door(self, bay):
        return 0  # bays.CLOSED

    def feedback(self, outcome, reason=None):
        self.feedback_log.append(outcome if reason is None else outcome + ":" + reason)

    def poll_card(self):
        return None


def make_locker(data_dir, nbays=4, clock=None, config=True, ticks_start=TICKS_PERIOD - 5000):
    """A Locker on a FakeBoard in data_dir, with the fixture bundle v1 installed."""
    import mpytest
    from locker import settings
    from locker.core import Locker

    if config:
        with open(data_dir + "/config.bin", "wb") as f:
            f.write(mpytest.fixture("bundle-v1.bin"))
    secret = mpytest.fixture("secret.hex").decode()
    board = FakeBoard(data_dir, nbays, ticks_start)
    board.clock = clock
    device = {"locker_id": "L1", "site": "school", "bays": nbays, "secret": secret}
    locker = Locker(board, device, settings.load(device))
    _watch_commits(locker, board)
    return locker, board


def _watch_commits(locker, board):
    board.locker = locker
    board.committed = locker.journal.last_seq
    commit = locker.journal.commit

    def tracked():
        commit()
        board.committed = locker.journal.last_seq

    locker.journal.commit = tracked
