# runs-on: micropython
# heapsize: 96k
# The journal on a simulated littlefs flash: durability, seq for life, acks and compaction,
# capacity, and recovery after power cuts at every write of a sequence.
import gc
import os
from binascii import crc32

from hal.sim import flash as simflash
from locker.journal import JournalFull
from locker.segments import Journal
from mpytest import raises, tmpdir

_mounts = []


class Rig:
    """A flash image mounted at its own mountpoint, and the journal on it. `state` stands for the
    caller's bay state: the seq of the last event it acted on (after commit returned)."""

    def __init__(self, name, blocks=128, segment_bytes=16384, capacity_bytes=None):
        self.img = tmpdir("journal_" + name) + "/flash.img"
        self.mp = "/jt_" + name
        self.blocks = blocks
        self.segment_bytes = segment_bytes
        self.capacity_bytes = capacity_bytes
        self.state = 0
        self.dev = None
        self.j = None

    def mount(self):
        self._drop()
        self.dev = simflash.mount(self.img, self.mp, block_count=self.blocks)
        self.j = Journal(
            self.mp + "/journal", self.snapshot, self.capacity_bytes, self.segment_bytes
        )
        return self.j

    def _drop(self):
        """Lets go of the journal and the mount, as a power cut does (a dead device takes no
        more writes, so closing the old handles cannot change the image)."""
        if self.j is not None:
            self.j.close()
            self.j = None
        if self.dev is not None:
            self.dev.close()
            try:
                os.umount(self.mp)
            except OSError:
                pass
            self.dev = None
        gc.collect()

    def open(self):
        """Remount (as after a power cut) and recover: returns (snapshot, events list)."""
        j = self.mount()
        snap, events = j.open()
        events = _seqs(events)  # seqs only: hundreds of Event objects would crowd a 96k heap
        self.state = int(snap) if snap else 0
        if events:
            self.state = events[-1]
        return snap, events

    def snapshot(self):
        return str(self.state).encode()

    def record(self, n=1, person="P0123"):
        evs = [self.j.append("deposit", 1795549393 + i, 3, person) for i in range(n)]
        self.j.commit()
        self.state = evs[-1].seq
        return evs

    def files(self):
        return sorted(n for n in os.listdir(self.mp + "/journal") if n.endswith(".seg"))

    def done(self):
        self._drop()


def _seqs(events):
    return [e.seq for e in events]


def _run(events, first, last):
    """events (an iterator) has exactly the seqs first..last."""
    n = first
    for ev in events:
        assert ev.seq == n, (ev.seq, n)
        n += 1
    assert n == last + 1, (n, last)


def _same(events, expected):
    """events (an iterator) equals the list expected, compared one at a time."""
    n = 0
    for ev in events:
        assert n < len(expected) and ev == expected[n], (n, ev)
        n += 1
    assert n == len(expected), (n, len(expected))


def test_append_commit_reopen():
    r = Rig("basic")
    snap, events = r.open()
    assert snap is None and events == []
    assert (r.j.last_seq, r.j.acked, r.j.pending) == (0, 0, 0)
    a = r.j.append("boot", None)
    b = r.j.append("deposit", 1795549393, 3, "P0123", None, "pupil")
    c = r.j.append("override", 1795549400, 3, "P0123", "S01", "fire drill, office")
    assert _seqs([a, b, c]) == [1, 2, 3]
    r.j.commit()
    assert r.j.pending == 3
    assert list(r.j.unacked(0)) == [a, b, c]
    snap, events = r.mount().open()  # a power cut after commit: all three are there
    assert list(events) == [a, b, c]
    assert snap == b"0"
    assert (r.j.last_seq, r.j.pending) == (3, 3)
    r.done()


def test_uncommitted_appends_are_not_on_flash():
    r = Rig("uncommitted")
    r.open()
    r.record(2)
    r.j.append("deposit", 5, 1, "P9")  # never committed: the caller did not act on it
    assert r.j.last_seq == 3 and r.j.committed == 2 and r.j.pending == 2
    assert _seqs(r.j.unacked(0)) == [1, 2]
    _, events = r.open()
    assert events == [1, 2]
    assert r.record()[0].seq == 3
    r.done()


def test_seq_continues_across_reopen():
    r = Rig("seq")
    r.open()
    for _ in range(5):
        r.record(3)
        r.open()
    assert r.j.last_seq == 15
    assert _seqs(r.j.unacked(0)) == list(range(1, 16))
    r.done()


def test_ack_drops_segments_and_keeps_seq():
    r = Rig("ack", segment_bytes=2048)
    r.open()
    for _ in range(200):
        r.record()
    assert len(r.files()) >= 3
    assert not r.j.ack(201)  # beyond anything sent: ignored
    assert r.j.acked == 0
    assert r.j.ack(150)
    assert not r.j.ack(100)  # at or below the mark: ignored
    assert r.j.acked == 150 and r.j.pending == 50
    assert _seqs(r.j.unacked(0)) == list(range(151, 201))
    assert _seqs(r.j.unacked(190)) == list(range(191, 201))
    assert r.j.ack(200)
    assert len(r.files()) == 1  # all acknowledged: only the last segment stays
    r.open()
    assert (r.j.last_seq, r.j.acked, r.j.pending) == (200, 200, 0)
    assert list(r.j.unacked(0)) == []
    # fill past a segment so the old one goes, all acknowledged: the seq still survives
    for _ in range(100):
        r.record()
        r.j.ack(r.j.committed)
    assert len(r.files()) == 1, (r.files(), r.j._segs, r.j.acked, r.j.committed)
    r.open()
    assert (r.j.last_seq, r.j.acked) == (300, 300)
    assert r.record()[0].seq == 301
    r.done()


def test_snapshot_recovery_returns_only_events_after_it():
    r = Rig("snap", segment_bytes=2048)
    r.open()
    for _ in range(150):
        r.record()
    snap, events = r.open()
    covered = int(snap)
    assert 0 < covered < 150
    assert events == list(range(covered + 1, 151))
    assert r.state == 150
    r.done()


def test_unacked_reads_across_segments_in_order():
    r = Rig("unacked", segment_bytes=2048)
    r.open()
    for i in range(30):
        r.record(7, person="P{:04d}".format(i))
    assert len(r.files()) > 2
    n = 0
    for ev in r.j.unacked(0):
        n += 1
        assert ev.seq == n and ev.person == "P{:04d}".format((n - 1) // 7), ev
    assert n == 210
    assert _seqs(r.j.unacked(205)) == [206, 207, 208, 209, 210]
    assert list(r.j.unacked(210)) == []
    r.done()


def test_bad_event_appends_nothing():
    r = Rig("bad")
    r.open()
    r.record()
    with raises(ValueError):
        r.j.append("deposit", None, 999)
    with raises(ValueError):
        r.j.append("deposit", None, 1, "P" * 300)
    assert r.j.last_seq == 1
    r.j.commit()
    assert r.record()[0].seq == 2
    r.done()


def test_ten_thousand_typical_events_fit_in_512k():
    r = Rig("10k", blocks=128)
    r.open()
    for _ in range(200):
        r.record(50)
    assert r.j.last_seq == 10000 and not r.j.full
    r.open()
    assert r.j.pending == 10000
    n = 0
    for ev in r.j.unacked(0):
        n += 1
        assert ev.seq == n and ev.person == "P0123"
    assert n == 10000
    r.done()


def test_near_full_then_full_loses_nothing():
    r = Rig("full", blocks=64, segment_bytes=4096, capacity_bytes=4 * 4096)
    r.open()
    assert r.j.capacity == 16384
    seen_near = 0
    while not r.j.full:
        r.record()
        if r.j.near_full and not seen_near:
            seen_near = r.j.last_seq
    last = r.j.last_seq
    assert 0 < seen_near < last
    assert r.j.used_bytes <= r.j.capacity
    with raises(JournalFull):
        r.j.append("deposit", 1, 3, "P0123")
    assert r.j.last_seq == last
    r.j.commit()  # nothing pending: no change
    r.open()
    assert r.j.full and r.j.last_seq == last
    _run(r.j.unacked(0), 1, last)
    # acks go through when full, and free whole segments
    assert r.j.ack(last // 2)
    assert not r.j.full
    r.record()
    assert r.j.last_seq == last + 1
    r.done()


def test_full_exactly_when_append_refuses():
    r = Rig("exact", blocks=64, segment_bytes=2048, capacity_bytes=3 * 2048)
    r.open()
    while True:
        was_full = r.j.full
        try:
            r.j.append("deposit", 1, 3, "P0123")
        except JournalFull:
            assert was_full
            break
        assert not was_full
        r.j.commit()
    r.done()


def test_fail_after_at_every_write_of_a_commit():
    r = Rig("failafter", segment_bytes=2048)
    r.open()
    persons = []  # persons[seq - 1]: the person of each event that was committed
    for k in range(1, 25):
        r.dev.fail_after(k % 9 + 1)
        for _ in range(6):
            first = r.j.append("deposit", 1795549393, 3, "P{}".format(k))
            r.j.append("deposit", 1795549393, 3, "P{}".format(k))
            try:
                r.j.commit()
            except OSError as e:
                assert e.args[0] == 5
                assert r.j.last_seq == r.j.committed == len(persons)
                continue
            assert first.seq == len(persons) + 1  # failed seqs were reused: no gap
            persons.extend((k, k))
        if k % 5 == 0:
            r.j.ack(len(persons) - 3)
    acked = r.j.acked
    for again in (False, True):
        if again:
            r.open()
            assert r.j.acked == acked
        n = acked
        for ev in r.j.unacked(0):
            n += 1
            assert ev.seq == n and ev.person == "P{}".format(persons[n - 1]), ev
        assert n == len(persons)
    r.done()


def _scenario(r, log):
    """A fixed sequence of commits (single and batched), acks and segment changes. `log` gets
    each batch when it is appended ("appended") and again when commit returned ("committed")."""
    j = r.j
    for step in range(12):
        n = 1 + step % 3
        evs = [
            j.append("deposit", 1795549393 + step, 1 + step % 4, "P{:04d}".format(step))
            for _ in range(n)
        ]
        log.append(("appended", evs))
        j.commit()
        r.state = evs[-1].seq
        log.append(("committed", evs))
        if step % 5 == 4:
            log.append(("acking", j.committed - 2))  # before: the cut may come in the middle
            j.ack(j.committed - 2)


def _prefill(r, log):
    """Events enough that the scenario after it crosses into a new segment (few writes),
    acknowledged so that only the scenario's events are checked (a 96k heap)."""
    for _ in range(3):
        for _ in range(20):
            r.j.append("boot", None)
        r.j.commit()
    r.j.ack(r.j.committed)
    log.append(("acking", r.j.committed))


def test_power_cut_at_every_write_of_a_sequence():
    r = Rig("tear", blocks=48, segment_bytes=2048)
    # one run without faults to count the writes
    r.open()
    _prefill(r, [])
    base = r.dev.writes
    _scenario(r, [])
    total = r.dev.writes - base
    r.done()
    assert total > 30
    for k in range(1, total + 1):
        gc.collect()
        r = Rig("tear", blocks=48, segment_bytes=2048)
        r.open()
        log = []
        _prefill(r, log)
        r.dev.tear_at(k, (k * 37) % 300)
        try:
            _scenario(r, log)
            raise AssertionError("no power cut at write {}".format(k))
        except simflash.PowerLoss:
            pass
        committed = [e for what, evs in log if what == "committed" for e in evs]
        in_flight = log[-1][1] if log[-1][0] == "appended" else []
        acked_max = max([0] + [a for what, a in log if what == "acking"])
        log = None
        gc.collect()
        snap, events = r.open()
        j = r.j
        present = list(j.unacked(0))
        # every committed event that was not acknowledged is there, unchanged and in order
        want = [e for e in committed if e.seq > j.acked]
        assert present[: len(want)] == want, (k, _seqs(present), _seqs(want))
        # anything more is exactly the batch whose commit was cut (never garbage)
        extra = present[len(want) :]
        assert extra == in_flight[: len(extra)], (k, extra, in_flight)
        assert j.acked <= acked_max
        assert j.last_seq == (present[-1].seq if present else j.acked)
        # recovery = the snapshot + the events after it, up to the last seq
        assert r.state == j.last_seq, (k, snap, _seqs(events))
        # appends work again and seq never repeats
        seen = j.last_seq
        again = r.record(2)
        assert _seqs(again) == [seen + 1, seen + 2]
        present = extra = want = committed = in_flight = events = None
        gc.collect()
        r.open()
        assert list(r.j.unacked(0))[-2:] == again
        r.done()


def test_power_cut_while_acknowledging_everything():
    for k in range(1, 12):
        r = Rig("tearack", blocks=48, segment_bytes=2048)
        r.open()
        for _ in range(80):
            r.record()
        r.dev.tear_at(k, 5 * k)
        try:
            r.j.ack(80)
            for _ in range(30):
                r.record()
                r.j.ack(r.j.committed)
        except simflash.PowerLoss:
            pass
        last = r.j.committed
        r.open()
        assert r.j.last_seq in (last, last + 1)
        assert _seqs(r.j.unacked(0)) == list(range(r.j.acked + 1, r.j.last_seq + 1))
        assert r.record()[0].seq == r.j.last_seq
        r.done()


def test_wear_per_event_stays_low():
    r = Rig("wear", blocks=128)
    r.open()
    r.record()
    b0, e0 = r.dev.bytes_programmed, r.dev.blocks_erased
    for _ in range(300):
        r.record()
    per_event = (r.dev.bytes_programmed - b0) / 300
    erased = (r.dev.blocks_erased - e0) / 300
    print(
        "wear: {:.0f} bytes programmed, {:.2f} blocks erased per event".format(per_event, erased)
    )
    # a block copy (up to 4096 bytes) and an erase per commit without the tail; far less with it
    assert per_event < 1024 and erased < 0.4, (per_event, erased)
    b0, e0 = r.dev.bytes_programmed, r.dev.blocks_erased
    for _ in range(30):
        r.record(10)  # ten events made in one step: one commit
    batched = (r.dev.bytes_programmed - b0) / 300
    assert batched < per_event, (batched, per_event)
    r.done()


# -- the journal's id and the host's checkpoint ------------------------------------------------

_HEX = "0123456789abcdef"


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _is_jid(jid):
    return isinstance(jid, str) and len(jid) == 16 and all(c in _HEX for c in jid)


def test_a_new_journal_draws_an_id_and_keeps_it():
    r = Rig("jid")
    r.open()
    jid = r.j.jid
    assert _is_jid(jid), jid
    assert _read(r.mp + "/journal/jid") == jid.encode()  # on flash before open() returned
    r.record(3)
    r.open()
    assert r.j.jid == jid and r.j.last_seq == 3
    other = Rig("jid2")
    other.open()
    assert other.j.jid != jid  # drawn at random: another board, another id
    other.done()
    r.done()


def test_a_wiped_journal_gets_a_new_id_and_no_checkpoint():
    r = Rig("jidwipe")
    r.open()
    r.record(5)
    r.j.checkpoint("note")
    first = r.j.jid
    r.j.close()
    for name in os.listdir(r.mp + "/journal"):  # the journal wiped: seq starts again at 1
        if name.endswith(".seg") or name == "tail":
            os.remove(r.mp + "/journal/" + name)
    r.open()
    assert r.j.last_seq == 0 and _is_jid(r.j.jid) and r.j.jid != first
    assert r.j.checkpoint() is None  # it belonged to the journal that was wiped
    assert r.record()[0].seq == 1
    r.done()


def test_a_rotten_id_file_is_replaced_once_and_seq_carries_on():
    r = Rig("jidrot")
    r.open()
    r.record(4)
    first = r.j.jid
    r.j.close()
    with open(r.mp + "/journal/jid", "wb") as f:
        f.write(b"0123456789ABCDEF")  # not lower-case hex: not an id this firmware wrote
    r.open()
    assert _is_jid(r.j.jid) and r.j.jid != first and r.j.last_seq == 4
    again = r.j.jid
    r.open()
    assert r.j.jid == again
    r.done()


def _copy_dir(src, dst):
    try:
        os.mkdir(dst)
    except OSError:
        pass
    for name in os.listdir(src):
        with open(src + "/" + name, "rb") as f:
            data = f.read()
        with open(dst + "/" + name, "wb") as f:
            f.write(data)


def test_a_journal_written_before_ids_gets_one_at_the_first_boot():
    # tests/firmware/data/journal-889016a: written by the journal of commit 889016a (no id), on
    # the unix port into a plain directory (`git archive 889016a firmware`, then
    # j = Journal(dir, lambda: str(state).encode(), segment_bytes=2048); j.open(); for i in
    # 1..120: j.append("deposit", 1795549393 + i, 1 + i % 8, "P%04d" % i, None, "pupil");
    # j.commit(); state = j.committed; at i == 90 j.ack(60); then j.append("boot", None);
    # j.commit()): 121 events, the boot event in the tail, acked up to 60.
    src = (os.getenv("MPYTEST_ROOT") or ".") + "/tests/firmware/data/journal-889016a"
    r = Rig("jidold", segment_bytes=2048)
    r.mount()
    _copy_dir(src, r.mp + "/journal")
    before = [(n, crc32(_read(r.mp + "/journal/" + n))) for n in r.files()]
    j = r.j
    snap, events = j.open()
    assert 60 < int(snap) < 121
    assert _is_jid(j.jid), j.jid
    assert _read(r.mp + "/journal/jid") == j.jid.encode()
    assert (j.last_seq, j.acked, j.pending) == (121, 60, 61)
    assert [(n, crc32(_read(r.mp + "/journal/" + n))) for n in r.files()] == before  # as it was
    seq = 60
    for ev in j.unacked(0):
        seq += 1
        assert ev.seq == seq
        if seq <= 120:
            want = ("deposit", 1795549393 + seq, 1 + seq % 8, "P%04d" % seq, None, "pupil")
        else:
            want = ("boot", None, None, None, None, None)
        assert (ev.type, ev.ts, ev.bay, ev.person, ev.by, ev.reason) == want, ev
    assert seq == 121
    jid = j.jid
    r.state = 121
    assert r.record()[0].seq == 122  # seq carries on, under the new id
    r.open()
    assert r.j.jid == jid and r.j.last_seq == 122  # drawn once, kept from then on
    assert r.j.ack(122) and r.j.pending == 0
    r.done()


def test_checkpoint_kept_with_the_acked_mark_across_restart_and_compaction():
    r = Rig("ckpt", segment_bytes=2048)
    r.open()
    assert r.j.checkpoint() is None
    r.record(10)
    r.j.ack(4)
    note = "school.example/lockers\n42\nq2XgVwFh8hTqCXdL0RfzsGmPTLyn0Y1Qn8Cq2QxkE3A=\n\n"
    note += "\u2014 host Ab+Zx9w=\n"
    note = note + "x" * (700 - len(note.encode()))
    assert len(note.encode()) == 700
    assert r.j.checkpoint(note) == 4
    assert r.j.checkpoint() == (note, 4)
    r.open()
    assert r.j.checkpoint() == (note, 4)
    with raises(ValueError):
        r.j.checkpoint(note + "y")  # over 700 bytes: refused, the old one kept
    assert r.j.checkpoint() == (note, 4)
    # many segments, every one acknowledged and dropped: the checkpoint stays
    for _ in range(200):
        r.record()
    assert len(r.files()) >= 3
    r.j.ack(r.j.committed)
    assert len(r.files()) == 1
    r.open()
    assert r.j.checkpoint() == (note, 4)
    assert r.j.checkpoint("the next one") == 210
    r.open()
    assert r.j.checkpoint() == ("the next one", 210)
    r.done()


def test_a_damaged_checkpoint_file_reads_as_none():
    r = Rig("ckptrot")
    r.open()
    r.j.checkpoint("a note")
    path = r.mp + "/journal/checkpoint"
    data = bytearray(_read(path))
    data[-1] ^= 1
    with open(path, "wb") as f:
        f.write(data)
    assert r.j.checkpoint() is None
    with open(path, "wb") as f:
        f.write(b"abc")
    assert r.j.checkpoint() is None
    r.open()  # and the journal opens as before
    assert r.j.checkpoint() is None and r.j.last_seq == 0
    r.done()


def test_power_cut_at_every_write_of_a_checkpoint_keeps_the_old_or_the_new():
    r = Rig("ckpttear", blocks=48)
    r.open()
    r.record(3)
    r.j.checkpoint("old " * 100)
    base = r.dev.writes
    r.j.checkpoint("new " * 150)
    total = r.dev.writes - base
    r.done()
    assert total >= 2
    for k in range(1, total + 1):
        gc.collect()
        r = Rig("ckpttear", blocks=48)
        r.open()
        r.record(3)
        r.j.checkpoint("old " * 100)
        r.dev.tear_at(k, (k * 53) % 300)
        try:
            r.j.checkpoint("new " * 150)
        except simflash.PowerLoss:
            pass
        except OSError:  # closing the file on the dead device, after the power cut
            pass
        assert r.dev.dead, "no power cut at write {}".format(k)
        r.open()
        assert r.j.checkpoint() in (("old " * 100, 0), ("new " * 150, 0)), k
        assert r.j.last_seq == 3 and _is_jid(r.j.jid)
        r.done()
