# runs-on: micropython
# heapsize: 96k
# The ring journal (locker/ring.py) under faults: a power cut at every write of a sequence of
# commits and acks (and at several points of each write), while acknowledging, an erase cut short,
# and failed writes (fail_after) at every write of commits.
import gc

from hal.sim import flash as simflash
from mpytest import raises
from ringrig import SECTOR, T0, RRig, run

# -- power cuts and failed writes ----------------------------------------------------------------


class Log:
    """What a sequence did before the power went: the last seq whose commit returned, the batch
    being committed (first, last) if any, the highest ack asked for and the highest that
    returned with its mark on flash (a few numbers: a list of every step would crowd the heap)."""

    def __init__(self, committed=0, acked=0):
        self.committed = committed
        self.flight = None
        self.acking = self.acked = acked
        self.spanned = False

    def appended(self, first, last):
        self.flight = (first, last)

    def done(self, last):
        self.committed = last
        self.flight = None


def _scenario(r, log):
    """A fixed sequence of commits (single, batched, some across sectors), acks, idle calls, and
    new sectors and segments, noted in `log` (a Log) as it goes."""
    j = r.j
    sizes = (1, 2, 3, 20, 1, 45, 2, 60, 1, 7, 50)
    for step in range(30):
        first, last = r.append(sizes[step % len(sizes)])
        log.appended(first, last)
        secs = len(j._secs)
        j.commit()
        r.state = last
        log.done(last)
        if len(j._secs) > secs and j._secs[-1][2] < 0 and j._off < 32 * (last - first + 2):
            log.spanned = True  # the batch went on in a new sector
        if step % 4 == 3:
            log.acking = max(log.acking, j.committed - 3)
            j.ack(j.committed - 3)
            log.acked = j.acked
        if step % 3 != 2:
            j.idle()


def _prefill(r):
    """Events acknowledged, so that the scenario wraps round the ring."""
    for _ in range(16):
        r.record(40)
        r.j.idle()
    r.j.ack(r.j.committed)
    r.j.idle()
    return Log(r.j.committed, r.j.acked)


def _check_after_cut(r, log, k):
    r.open()
    j = r.j
    assert log.acked <= j.acked <= log.acking, (k, j.acked, log.acked, log.acking)
    # every committed event that was not acknowledged is there, in order (content checked), and
    # anything more is a prefix of the batch whose commit was cut (never garbage)
    assert j.last_seq >= log.committed, (k, j.last_seq, log.committed)
    assert j.last_seq <= (log.flight[1] if log.flight else log.committed), (k, j.last_seq)
    run(j.unacked(0), j.acked + 1, j.last_seq)
    # recovery = the snapshot + the events after it, up to the last seq
    assert r.state == j.last_seq, (k, r.state, j.last_seq)
    # appends work again (once acks made room, on a full ring), and seq never repeats
    if j.near_full and j.pending:
        assert j.ack(j.last_seq)
    seen = j.last_seq
    assert r.record(2) == (seen + 1, seen + 2)
    r.open()
    assert r.j.last_seq == seen + 2
    run(r.j.unacked(0), r.j.acked + 1, seen + 2)


def test_power_cut_at_every_write_of_a_sequence():
    r = RRig("tear", sectors=8, segment_bytes=2 * SECTOR)
    r.open()
    _prefill(r)
    base = r.dev.writes
    log = Log()
    _scenario(r, log)
    total = r.dev.writes - base
    starts = r.j._ctr
    r.done()
    assert total >= 40 and starts > 9, (total, starts)  # it wraps, starts sectors and segments
    assert log.spanned, "no commit went across sectors"
    log = None
    for k in range(1, total + 1):
        for nbytes in ((k * 37) % 300, 0, 17):
            gc.collect()
            r = RRig("tear", sectors=8, segment_bytes=2 * SECTOR)
            r.open()
            log = _prefill(r)
            r.dev.tear_at(k, nbytes)
            try:
                _scenario(r, log)
                raise AssertionError("no power cut at write {}".format(k))
            except simflash.PowerLoss:
                pass
            _check_after_cut(r, log, (k, nbytes))
            log = None
            r.done()


def _full_then_acks(r, log):
    """The ring filled, then the host acknowledging 2 events at a time while the locker appends
    whenever the ring lets it (acks that find no room: raised in RAM, written later)."""
    for _ in range(260):
        if not r.j.full:
            first, last = r.append(1)
            log.appended(first, last)
            r.j.commit()
            r.state = last
            log.done(last)
        seq = min(r.j.acked + 2, r.j.committed)
        log.acking = max(log.acking, seq)
        r.j.ack(seq)  # a mark raised in RAM only may be lost: log.acked stays as it was
        r.j.idle()


def _filled(name):
    r = RRig(name, sectors=6, segment_bytes=2 * SECTOR)
    r.open()
    while not r.j.full:
        r.record(4)
    return r


def test_power_cut_at_every_write_of_acks_on_a_full_ring():
    r = _filled("tearfull")
    base = r.dev.writes
    _full_then_acks(r, Log())
    total = r.dev.writes - base
    r.done()
    assert total > 20, total
    for k in range(1, total + 1):
        gc.collect()
        r = _filled("tearfull")
        log = Log(r.j.committed, r.j.acked)
        r.dev.tear_at(k, (k * 29) % 100)
        try:
            _full_then_acks(r, log)
            raise AssertionError("no power cut at write {}".format(k))
        except simflash.PowerLoss:
            pass
        _check_after_cut(r, log, k)
        log = None
        r.done()


def test_power_cut_while_acknowledging_everything():
    for k in range(1, 14):
        r = RRig("tearack", sectors=8, segment_bytes=SECTOR)
        r.open()
        for _ in range(300):
            r.record()
        r.dev.tear_at(k, 5 * k)
        acked = 0
        try:
            r.j.ack(300)
            acked = 300
            for _ in range(300):
                r.record()
                r.j.ack(r.j.committed)
                acked = r.j.committed
                r.j.idle()
        except simflash.PowerLoss:
            pass
        last = r.j.committed
        r.open()
        assert r.j.last_seq in (last, last + 1)
        assert acked <= r.j.acked <= r.j.last_seq
        run(r.j.unacked(0), r.j.acked + 1, r.j.last_seq)
        seen = r.j.last_seq
        assert r.record() == (seen + 1, seen + 1)
        r.done()


def _erase_cut(img, sector, keep_from, keep_to):
    """An erase cut short: sector's bytes erased except [keep_from, keep_to), which keep what
    they held. A real chip leaves such a sector unreadable in ways no write makes; the fault model
    of FileBlockDevice cuts writes only (an erase is ioctl 6 and tear_at does not count it), so
    the test writes the image itself."""
    with open(img, "r+b") as f:
        f.seek(sector * SECTOR)
        old = f.read(SECTOR)
        data = bytearray(b"\xff" * SECTOR)
        data[keep_from:keep_to] = old[keep_from:keep_to]
        f.seek(sector * SECTOR)
        f.write(data)


def test_an_erase_cut_short_loses_nothing():
    # the sector idle() erases next is a dropped one: whatever part of it survives, recovery
    # passes over it and the next write erases it again
    for keep in ((0, 16), (0, 300), (16, 4096), (32, 2048), (2048, 4096), (0, 4096)):
        gc.collect()
        r = RRig("erasecut", sectors=8, segment_bytes=SECTOR)
        r.open()
        for i in range(60):  # round the ring, acknowledging, no idle: old data ahead
            r.record(20)
            if i % 3 == 2:
                r.j.ack(r.j.committed - 10)
        last, acked = r.j.committed, r.j.acked
        ahead = (r.j._pos + 1) % 8
        assert not r.j._is_blank(ahead, 0)
        r.done()
        _erase_cut(r.img, ahead, keep[0], keep[1])
        r.open()
        assert (r.j.last_seq, r.j.acked) == (last, acked), keep
        run(r.j.unacked(0), acked + 1, last)
        for _ in range(8):  # the ring writes through that sector again
            r.record(40)
            r.j.ack(r.j.committed - 5)
        r.open()
        assert r.j.last_seq == last + 320
        run(r.j.unacked(0), r.j.acked + 1, last + 320)
        r.done()


def test_fail_after_at_every_write_of_a_commit():
    r = RRig("failafter", sectors=8, segment_bytes=2 * SECTOR)
    r.open()
    gc.collect()
    persons = bytearray(8000)  # persons[seq - 1]: the k of each event committed
    count = 0
    fails = 0
    for k in range(1, 60):
        r.dev.fail_after(k % 7 + 1)
        for i in range(6):
            n = (1, 2, 40, 1, 60, 3)[(k + i) % 6]
            first = r.j.last_seq + 1
            for _ in range(n):
                r.j.append("deposit", T0, 3, "P{}".format(k))
            try:
                r.j.commit()
            except OSError as e:
                assert e.args[0] == 5
                assert r.j.last_seq == r.j.committed == count
                fails += 1
                continue
            assert first == count + 1  # failed seqs were reused: no gap
            for _ in range(n):
                persons[count] = k
                count += 1
        r.dev.fail_after(0)
        r.j.ack(count - 3)
        r.j.idle()
    assert fails > 40
    acked = r.j.acked
    for again in (False, True):
        if again:
            r.mount().open()
            assert r.j.acked == acked and r.j.last_seq == count
        n = acked
        for ev in r.j.unacked(0):
            n += 1
            assert ev.seq == n and ev.person == "P{}".format(persons[n - 1]), (ev, n)
        assert n == count
    r.done()


def test_a_commit_failing_in_its_second_sector_is_void():
    # the first part of the batch is on flash when the write into the next sector fails: the
    # caller reuses those seqs, and the events committed under them are the ones read back
    for k in (1, 2, 3):  # the first part, the next sector's header, the rest of the batch
        r = RRig("failsecond", sectors=8, segment_bytes=2 * SECTOR)
        r.open()
        r.record(110)  # the sector has room for a few more
        r.dev.fail_after(k)
        for _ in range(30):
            r.j.append("deposit", T0, 3, "Pvoid")
        with raises(OSError):
            r.j.commit()
        assert r.j.last_seq == r.j.committed == 110
        first, last = r.record(20)
        assert (first, last) == (111, 130)
        for again in (False, True):
            if again:
                r.open()
                assert r.j.last_seq == 130, k
            run(r.j.unacked(0), 1, 130)  # content checked: no "Pvoid" event
        r.done()


def test_a_failed_commit_then_a_restart_shows_at_most_a_prefix_of_it():
    # a failed write leaves what reached flash before it; like a commit cut by the power, at
    # most a prefix of the failed batch comes back after a restart, never anything else
    for k in range(1, 6):
        r = RRig("failrestart", sectors=8, segment_bytes=SECTOR)
        r.open()
        r.record(100)
        r.dev.fail_after(k)
        gc.collect()
        first, last = r.append(120)  # spans two sectors
        try:
            r.j.commit()
        except OSError:
            pass
        r.dev.fail_after(0)
        r.open()
        assert 100 <= r.j.last_seq <= last
        run(r.j.unacked(0), 1, r.j.last_seq)
        assert r.state == r.j.last_seq
        seen = r.j.last_seq
        assert r.record() == (seen + 1, seen + 1)
        r.done()
