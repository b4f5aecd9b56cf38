# runs-on: micropython
# heapsize: 96k
# The journal as a ring of flash sectors (locker/ring.py) on a simulated flash region: the same
# interface as the littlefs journal (tests/firmware/test_journal.py), wrapping round the ring many
# times, capacity, erasing ahead in idle() so that no commit erases, wear, the journal's id and
# checkpoint. Power cuts and failed writes: test_ring_faults.py; carrying a littlefs journal
# over: test_ring_carry.py (split for the 96k heap: a module's code takes room too).
import gc
import os

from locker.journal import JournalFull
from locker.ring import Ring
from mpytest import raises
from ringrig import SECTOR, T0, NorFlash, RRig, check_ev, ev_args, run, segments, seqs, unacked

# -- the interface, as the littlefs journal's ---------------------------------------------------


def test_append_commit_reopen():
    r = RRig("basic")
    snap, events = r.open()
    assert snap is None and events is None
    assert (r.j.last_seq, r.j.acked, r.j.pending, r.j.committed) == (0, 0, 0, 0)
    a = r.j.append("boot", None)
    b = r.j.append("deposit", 1795549393, 3, "P0123", None, "pupil")
    c = r.j.append("override", 1795549400, 3, "P0123", "S01", "fire drill, office")
    assert seqs([a, b, c]) == [1, 2, 3]
    r.j.commit()
    assert r.j.pending == 3 and r.j.committed == 3
    assert list(r.j.unacked(0)) == [a, b, c]
    j = r.mount()  # a power cut after commit: all three are there
    snap, events = j.open()
    assert list(events) == [a, b, c]
    assert snap == b"0"
    assert (j.last_seq, j.pending, j.acked) == (3, 3, 0)
    assert list(j.unacked(0)) == [a, b, c]
    r.done()


def test_uncommitted_appends_are_not_on_flash():
    r = RRig("uncommitted")
    r.open()
    r.record(2)
    w = r.dev.writes
    r.j.append(*ev_args(3))  # never committed: the caller did not act on it
    assert r.dev.writes == w  # append alone programs nothing
    assert r.j.last_seq == 3 and r.j.committed == 2 and r.j.pending == 2
    assert unacked(r.j) == [1, 2]
    _, events = r.open()
    assert events == (1, 2) and r.j.last_seq == 2
    assert r.record() == (3, 3)
    r.open()
    assert unacked(r.j) == [1, 2, 3]
    r.done()


def test_commit_with_nothing_appended_writes_nothing():
    r = RRig("empty")
    r.open()
    r.record()
    w = r.dev.writes
    r.j.commit()
    assert r.dev.writes == w and r.j.committed == 1
    r.done()


def test_seq_continues_across_reopen():
    r = RRig("seq")
    r.open()
    for _ in range(5):
        r.record(3)
        r.open()
    assert r.j.last_seq == 15
    assert unacked(r.j) == list(range(1, 16))
    r.done()


def test_ack_drops_segments_and_keeps_seq():
    r = RRig("ack", sectors=16, segment_bytes=SECTOR)  # one sector a segment
    r.open()
    for _ in range(400):
        r.record()
    assert segments(r.j) >= 3
    assert not r.j.ack(401)  # beyond anything on flash: ignored
    assert not r.j.ack(0) and not r.j.ack(-3) and not r.j.ack("5")
    assert r.j.acked == 0
    second = [s[2] for s in r.j._secs if s[2] >= 0][1]  # what the second segment covers
    assert r.j.ack(second - 1)
    assert r.j._secs[0][2] == 0  # one short: the first segment stays
    assert r.j.ack(second)
    assert r.j._secs[0][2] == second  # exactly what its successor covers: dropped
    before = len(r.j._secs)
    assert r.j.ack(300)
    assert len(r.j._secs) < before  # whole segments acknowledged: dropped
    assert not r.j.ack(100)  # at or below the mark: ignored
    assert not r.j.ack(300)
    assert r.j.acked == 300 and r.j.pending == 100
    assert unacked(r.j) == list(range(301, 401))
    assert unacked(r.j, 390) == list(range(391, 401))
    r.open()
    assert (r.j.last_seq, r.j.acked, r.j.pending) == (400, 300, 100)
    assert unacked(r.j) == list(range(301, 401))
    assert r.j.ack(400)
    assert len(r.j._secs) == 1  # all acknowledged: only the newest segment stays
    r.open()
    assert (r.j.last_seq, r.j.acked, r.j.pending) == (400, 400, 0)
    assert list(r.j.unacked(0)) == []
    # round the ring more than once, all acknowledged: the seq and the mark still survive
    for _ in range(40):
        r.record(50)
        r.j.ack(r.j.committed)
        r.j.idle()
    assert r.j._ctr > 16
    r.open()
    assert (r.j.last_seq, r.j.acked, r.j.pending) == (2400, 2400, 0)
    assert r.record() == (2401, 2401)
    r.done()


def test_snapshot_recovery_returns_only_events_after_it():
    r = RRig("snap", segment_bytes=SECTOR)
    r.open()
    for _ in range(300):
        r.record()
    snap, events = r.open()
    covered = int(snap)
    assert 0 < covered < 300
    assert events == (covered + 1, 300)
    assert r.state == 300
    events = None
    run(r.j.unacked(0), 1, 300)  # the events before it stay until acked
    r.done()


def test_unacked_reads_across_sectors_and_segments_in_order():
    r = RRig("unacked", sectors=16, segment_bytes=2 * SECTOR)
    r.open()
    for _ in range(40):
        r.record(13)
    assert len(r.j._secs) >= 4 and segments(r.j) >= 2
    run(r.j.unacked(0), 1, 520)
    run(r.j.unacked(505), 506, 520)
    assert list(r.j.unacked(520)) == []
    assert list(r.j.unacked(10**6)) == []
    # a reader going batch by batch (the link's upload): each batch starts after the last seq
    # of the one before, and between batches the ring goes on (commits, acks)
    after = 0
    batches = 0
    while True:
        got = []
        for ev in r.j.unacked(after):
            check_ev(ev)
            got.append(ev.seq)
            if len(got) == 25:
                break
        if not got:
            break
        assert got == list(range(after + 1, after + 1 + len(got))), (after, got)
        after = got[-1]
        batches += 1
        if batches % 3 == 0:
            r.record(2)
        if batches % 4 == 0:
            r.j.ack(after - 10)
    assert after == r.j.committed and batches > 20
    # two readers interleaved, each in order
    r.record(60)
    r.record(40)
    a = r.j.unacked(0)
    b = r.j.unacked(r.j.acked + 30)
    x, y = next(a).seq, next(b).seq
    for _ in range(40):
        x2, y2 = next(a).seq, next(b).seq
        assert (x2, y2) == (x + 1, y + 1)
        x, y = x2, y2
    r.done()


def test_unacked_reads_through_a_drop_in_the_middle():
    r = RRig("dropmid", sectors=16, segment_bytes=SECTOR)
    r.open()
    for _ in range(6):
        r.record(100)
    it = r.j.unacked(0)
    assert next(it).seq == 1
    r.j.ack(350)  # the sectors the reader is in are dropped meanwhile
    n = 1
    for ev in it:
        assert ev.seq > n
        check_ev(ev)
        n = ev.seq
    assert n == 600
    r.done()


def test_bad_event_appends_nothing():
    r = RRig("bad")
    r.open()
    r.record()
    w = r.dev.writes
    with raises(ValueError):
        r.j.append("deposit", None, 999)
    with raises(ValueError):
        r.j.append("deposit", None, 1, "P" * 300)
    assert r.j.last_seq == 1
    r.j.commit()
    assert r.dev.writes == w
    assert r.record() == (2, 2)
    r.open()
    assert unacked(r.j) == [1, 2]
    r.done()


def test_largest_events_round_trip():
    r = RRig("large", sectors=8, segment_bytes=SECTOR)
    r.open()
    big = "x" * 255
    for i in range(12):  # 1034-byte bodies: 33 slots each, several to a sector
        r.j.append("override", T0 + i, 1 + i % 8, big, "S" + big[:254], big)
        r.j.commit()
        r.record()
    got = []
    for ev in r.j.unacked(0):
        got.append(ev.seq)
        if ev.seq % 2:
            assert ev.person == big and ev.reason == big and ev.by == "S" + big[:254]
        else:
            check_ev(ev)
    assert got == list(range(1, 25))
    j = r.mount()
    _, events = j.open()
    assert seqs(events)[-1:] == [24] and j.last_seq == 24
    assert seqs(j.unacked(0)) == list(range(1, 25))
    r.done()


# -- round the ring ------------------------------------------------------------------------------


def test_wrapping_the_ring_many_times():
    for sectors, seg in ((8, SECTOR), (12, 2 * SECTOR), (16, 16384)):
        gc.collect()
        r = RRig("wrap", sectors=sectors, segment_bytes=seg)
        r.open()
        rnd = 0
        while rnd < 80 or r.j._ctr < 3 * sectors:
            rnd += 1
            for b in range(1 + rnd % 5):
                r.record(1 + (rnd * 7 + b) % 23)
            if rnd % 2:
                r.j.idle()
            if rnd % 3 == 0:
                r.j.ack(r.j.committed - rnd % 40)
            last, acked = r.j.last_seq, r.j.acked
            if rnd % 4 == 3:
                r.open()
                assert (r.j.last_seq, r.j.acked) == (last, acked), (sectors, rnd)
                assert r.state == last
            run(r.j.unacked(0), acked + 1, last)
        assert r.j.last_seq > 2000
        r.done()


# -- capacity ------------------------------------------------------------------------------------


def test_near_full_then_full_loses_nothing():
    r = RRig("full", sectors=8, segment_bytes=SECTOR)
    r.open()
    assert r.j.capacity == 7 * SECTOR
    seen_near = 0
    while not r.j.full:
        r.record()
        if r.j.near_full and not seen_near:
            seen_near = r.j.last_seq
        assert r.j.used_bytes <= r.j.capacity + SECTOR
    last = r.j.last_seq
    assert 0 < seen_near < last
    assert last > 6 * 120  # the ring fills: one sector kept for acks
    with raises(JournalFull):
        r.j.append(*ev_args(last + 1))
    assert r.j.last_seq == last
    r.j.commit()  # nothing pending: no change
    r.open()
    assert r.j.full and r.j.last_seq == last
    run(r.j.unacked(0), 1, last)
    # acks go through when full, and free whole segments
    assert r.j.ack(last // 2)
    assert not r.j.full
    r.record()
    assert r.j.last_seq == last + 1
    r.open()
    run(r.j.unacked(0), last // 2 + 1, last + 1)
    r.done()


def test_full_exactly_when_append_refuses():
    """Whenever the ring is not full, an event of any size appended and committed goes in (no
    OSError from the commit), and append refuses once it says full."""
    for big in (False, True):
        r = RRig("exact", sectors=6, segment_bytes=2 * SECTOR)
        r.open()
        n = 0
        while True:
            was_full = r.j.full
            try:
                if big and n % 3 == 0:
                    r.j.append("override", T0, 1, "x" * 255, "y" * 255, "z" * 255)
                else:
                    r.j.append(*ev_args(r.j.last_seq + 1))
            except JournalFull:
                assert was_full
                break
            assert not was_full
            r.j.commit()
            n += 1
        assert r.j.full and n > (50 if big else 100), n
        j = r.mount()
        j.open()
        assert j.full and j.last_seq == n
        r.done()


def test_routine_full_keeps_the_reserve_for_essential_events():
    r = RRig("reserve", sectors=8, segment_bytes=SECTOR, reserve=2 * SECTOR)
    r.open()
    assert r.j.reserve == 2 * SECTOR
    while not r.j.routine_full:
        r.record()
    routine = r.j.last_seq
    assert not r.j.full
    while not r.j.full:  # essential events still go in, into the reserve
        r.record()
    essential = r.j.last_seq - routine
    assert essential > 2 * 120, essential
    assert r.j.routine_full
    r.open()
    assert r.j.routine_full and r.j.full
    # the reserve is at most half the ring, whatever is asked
    r2 = RRig("reserve2", sectors=8, segment_bytes=SECTOR, reserve=10**7)
    r2.open()
    assert r2.j.reserve == r2.j.capacity // 2
    r2.done()
    r.done()


def test_acks_always_find_room_when_full():
    """The host acknowledging a few events at a time while the locker appends whenever the ring
    lets it: every ack goes through (never OSError), a restart at any point loses no event that
    was not acknowledged, and the ring empties once the host caught up."""
    for seg in (SECTOR, 2 * SECTOR):
        for step in (1, 7, 40):
            gc.collect()
            r = RRig("ackfull", sectors=6, segment_bytes=seg)
            r.open()
            while not r.j.full:
                r.record()
            acks = 0
            while r.j.acked < r.j.committed:
                assert r.j.ack(min(r.j.acked + step, r.j.committed)), (step, r.j.acked)
                acks += 1
                r.j.idle()
                if not r.j.full and acks % 2:
                    r.record()
                if acks % 37 == 0:  # what a restart would find, now and then
                    dev = NorFlash(r.img, SECTOR, 6)
                    j = Ring(r.dir, r.snapshot, dev, None, seg)
                    j.open()
                    assert j.acked <= r.j.acked and j.last_seq == r.j.committed, (seg, step)
                    run(j.unacked(0), j.acked + 1, j.last_seq)
                    j = None
                    dev.close()
                assert acks < 5000
            assert r.j.pending == 0 and not r.j.full
            last = r.j.last_seq
            r.open()
            assert (r.j.acked, r.j.last_seq) == (last, last), (seg, step, r.j.acked, last)
            assert r.record() == (last + 1, last + 1)
            r.done()


def test_a_batch_larger_than_the_room_left_fails_whole():
    """A commit that cannot fit raises OSError before any of it is on flash: its seqs are reused
    and no event of it comes back after a restart."""
    r = RRig("toobig", sectors=6, segment_bytes=SECTOR)
    r.open()
    while r.j._n - len(r.j._secs) > 2:
        r.record(5)
    last = r.j.committed
    assert not r.j.full
    r.append(126)  # more than a sector holds after its snapshot, one sector left for events
    with raises(OSError):
        r.j.commit()
    assert r.j.last_seq == r.j.committed == last
    run(r.j.unacked(0), 1, last)
    r.open()
    assert r.j.last_seq == last, (r.j.last_seq, last)
    run(r.j.unacked(0), 1, last)
    # and what comes next is what is kept
    r.j.ack(last - 5)
    assert r.record(3) == (last + 1, last + 3)
    r.open()
    run(r.j.unacked(0), last - 4, last + 3)
    r.done()


# -- erasing ahead -------------------------------------------------------------------------------


def test_idle_erases_ahead_so_no_commit_or_ack_erases():
    r = RRig("ahead", sectors=8, segment_bytes=2 * SECTOR)
    r.open()
    idle_erases = 0
    for i in range(1500):
        e = r.dev.blocks_erased
        r.record(1 + i % 3)
        assert r.dev.blocks_erased == e, i  # a commit only programs
        if i % 16 == 15:
            e = r.dev.blocks_erased
            assert r.j.ack(r.j.committed - 3)
            assert r.dev.blocks_erased == e, i  # an ack too
        e = r.dev.blocks_erased
        if r.j.idle():
            idle_erases += 1
            assert r.dev.blocks_erased == e + 1  # one erase at most a call
        else:
            assert r.dev.blocks_erased == e
    assert r.j.erases_inline == 0
    assert r.j._ctr > 3 * 8  # round the ring more than three times
    assert idle_erases == r.j.erases == r.dev.blocks_erased > 0
    r.open()
    run(r.j.unacked(0), r.j.acked + 1, r.j.last_seq)
    # idle() with everything ahead erased does nothing
    while r.j.idle():
        pass
    e = r.dev.blocks_erased
    assert not r.j.idle() and r.dev.blocks_erased == e
    r.done()


def test_without_idle_writes_erase_inline_and_still_work():
    r = RRig("inline", sectors=8, segment_bytes=2 * SECTOR)
    r.open()
    for i in range(1500):
        r.record(1 + i % 3)
        if i % 16 == 15:
            r.j.ack(r.j.committed - 3)
    assert r.j.erases == 0
    assert r.j.erases_inline > 0 and r.j.erases_inline == r.dev.blocks_erased
    last, acked = r.j.last_seq, r.j.acked
    r.open()
    assert (r.j.last_seq, r.j.acked) == (last, acked)
    run(r.j.unacked(0), acked + 1, last)
    r.done()


def test_wear_per_event_in_service():
    r = RRig("wear", sectors=16, segment_bytes=16384)
    r.open()
    r.record()
    b0, e0 = r.dev.bytes_programmed, r.dev.blocks_erased
    n = 3000
    for i in range(n):
        r.record()
        if i % 32 == 31:
            r.j.ack(r.j.committed)
        r.j.idle()
    per_event = (r.dev.bytes_programmed - b0) / n
    erased = (r.dev.blocks_erased - e0) / n
    print(
        "ring wear: {:.1f} bytes programmed, {:.4f} sectors erased per event".format(
            per_event, erased
        )
    )
    assert per_event <= 64, per_event
    assert 0 < erased <= 0.02, erased
    assert r.j._ctr > 16  # went round the ring: the erases are in the figure
    r.done()


# -- the journal's id and the host's checkpoint ------------------------------------------------

_HEX = "0123456789abcdef"


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _is_jid(jid):
    return isinstance(jid, str) and len(jid) == 16 and all(c in _HEX for c in jid)


def test_a_new_ring_draws_an_id_and_keeps_it():
    r = RRig("jid")
    r.open()
    jid = r.j.jid
    assert _is_jid(jid), jid
    assert _read(r.dir + "/jid") == jid.encode()  # on flash before open() returned
    r.record(3)
    r.open()
    assert r.j.jid == jid and r.j.last_seq == 3
    for _ in range(40):  # round the ring: the id stays
        r.record(40)
        r.j.ack(r.j.committed)
        r.j.idle()
    r.open()
    assert r.j.jid == jid
    other = RRig("jid2")
    other.open()
    assert other.j.jid != jid
    other.done()
    r.done()


def test_a_wiped_region_gets_a_new_id_and_no_checkpoint():
    for how in ("wipe", "image"):
        r = RRig("jidwipe")
        r.open()
        r.record(5)
        assert r.j.checkpoint("note") == 0
        first = r.j.jid
        if how == "wipe":
            r.j.wipe()
            assert r.j._secs == [] and r.j.committed == 0
        r.done()
        if how == "image":
            os.remove(r.img)  # a new region (erased)
        r.open()
        assert r.j.last_seq == 0 and _is_jid(r.j.jid) and r.j.jid != first, how
        assert r.j.checkpoint() is None  # it belonged to the journal that was wiped
        assert r.record() == (1, 1)
        r.open()
        assert r.j.last_seq == 1 and r.j.checkpoint() is None
        r.done()


def test_checkpoint_kept_with_the_acked_mark_across_restart_and_wrapping():
    r = RRig("ckpt", sectors=8, segment_bytes=SECTOR)
    r.open()
    assert r.j.checkpoint() is None
    r.record(10)
    r.j.ack(4)
    note = "school.example/lockers\n42\nq2XgVwFh8hTqCXdL0RfzsGmPTLyn0Y1Qn8Cq2QxkE3A=\n"
    assert r.j.checkpoint(note) == 4
    assert r.j.checkpoint() == (note, 4)
    r.open()
    assert r.j.checkpoint() == (note, 4)
    with raises(ValueError):
        r.j.checkpoint("x" * 701)
    assert r.j.checkpoint() == (note, 4)
    for _ in range(40):  # round the ring, everything acknowledged
        r.record(30)
        r.j.ack(r.j.committed)
        r.j.idle()
    assert r.j._ctr > 8
    r.open()
    assert r.j.checkpoint() == (note, 4)
    assert r.j.checkpoint("the next one") == 1210
    r.open()
    assert r.j.checkpoint() == ("the next one", 1210)
    r.done()
