# runs-on: micropython
# heapsize: 96k
# Carrying the littlefs journal (locker/journal.py's Journal, on a mounted simulated flash) over
# into the ring (locker/ring.py's adopt()), which journal select() picks, and a power cut at every
# write of a carry-over.
import gc
import os

from hal.sim import flash as simflash
from locker import ring as ringmod
from locker.ring import Ring
from locker.segments import Journal
from mpytest import tmpdir
from ringrig import SECTOR, NorFlash, check_ev, ev_args, run

# -- carrying the littlefs journal over ----------------------------------------------------------

SETTINGS = {"journal_segment_bytes": 2 * SECTOR, "journal_bytes": None}


class Carry:
    """A littlefs image (mounted, the old journal in it) and a region image beside it."""

    def __init__(self, name, region_sectors=16):
        self.base = tmpdir("carry_" + name)
        self.mp = "/rc_" + name
        self.dir = self.mp + "/journal"
        self.region_img = self.base + "/region.img"
        self.sectors = region_sectors
        self.fs = None
        self.region = None
        self.j = None
        self.state = 0

    def snapshot(self):
        return str(self.state).encode()

    def boot(self):
        """Mount both images, as after a power cut: returns the journal select() picks."""
        self.down()
        self.fs = simflash.mount(self.base + "/flash.img", self.mp, block_count=64)
        self.region = NorFlash(self.region_img, SECTOR, self.sectors)
        self.j = ringmod.select(self.region, self.dir, self.snapshot, SETTINGS)
        return self.j

    def open(self):
        snap, events = self.j.open()
        self.state = int(snap) if snap else 0
        for ev in events:
            check_ev(ev)
            self.state = ev.seq
        return snap

    def down(self):
        if self.j is not None:
            try:
                self.j.close()
            except OSError:
                pass
            self.j = None
        for dev in (self.fs, self.region):
            if dev is not None:
                dev.close()
        if self.fs is not None:
            try:
                os.umount(self.mp)
            except OSError:
                pass
        self.fs = self.region = None
        gc.collect()

    def old_journal(self, n=150, acked=40, note="a note"):
        """A littlefs journal with n events, acked up to `acked`, and a checkpoint."""
        self.fs = simflash.mount(self.base + "/flash.img", self.mp, block_count=64)
        j = Journal(self.dir, self.snapshot, None, 2048)
        j.open()
        for s in range(1, n + 1):
            j.append(*ev_args(s))
            if s % 7 == 0 or s == n:
                j.commit()
                self.state = s
        j.ack(acked)
        j.checkpoint(note)
        jid = j.jid
        j.close()
        self.down()
        return jid

    def names(self):
        return sorted(os.listdir(self.dir))


def _copy(src, dst):
    buf = bytearray(1024)
    with open(src, "rb") as f, open(dst, "wb") as g:
        while True:
            n = f.readinto(buf)
            if not n:
                return
            g.write(memoryview(buf)[:n])


def _has_segments(names):
    return any(n.endswith(".seg") for n in names) or "tail" in names


def test_select_picks_the_ring_unless_an_unmoved_littlefs_journal_is_there():
    c = Carry("select")
    # no journal at all: the ring (and None for a board without a region: littlefs)
    c.fs = simflash.mount(c.base + "/flash.img", c.mp, block_count=64)
    region = NorFlash(c.region_img, SECTOR, 16)
    assert isinstance(ringmod.select(region, c.dir, c.snapshot, SETTINGS), Ring)
    j = ringmod.select(None, c.dir, c.snapshot, SETTINGS)
    assert isinstance(j, Journal) and not isinstance(j, Ring)
    region.close()
    c.down()
    c.old_journal(20, 5)
    # segment files and no marker: the littlefs journal
    j = c.boot()
    assert isinstance(j, Journal) and not isinstance(j, Ring)
    # the marker, even with segment files left over: the ring
    with open(c.dir + "/ring", "wb") as f:
        f.write(b"1")
    assert isinstance(c.boot(), Ring)
    c.down()


def test_carry_over_keeps_id_seqs_events_acked_and_checkpoint():
    c = Carry("carry")
    jid = c.old_journal(150, 40, "note one")
    j = c.boot()
    assert isinstance(j, Journal) and not isinstance(j, Ring)
    snap = c.open()
    assert c.state == 150 and snap is not None
    assert _has_segments(c.names())
    ring = ringmod.adopt(j, c.region, SETTINGS, False)
    c.j = ring
    assert isinstance(ring, Ring)
    assert ring.jid == jid
    assert (ring.committed, ring.last_seq, ring.acked, ring.pending) == (150, 150, 40, 110)
    run(ring.unacked(0), 41, 150)
    assert ring.checkpoint() == ("note one", 40)
    names = c.names()
    assert not _has_segments(names), names
    assert "ring" in names and "jid" in names
    # a restart: the ring, everything there
    j = c.boot()
    assert isinstance(j, Ring)
    c.state = 0
    c.open()
    assert c.state == 150  # the snapshot covers the carried events (the state already has them)
    assert (j.jid, j.committed, j.acked) == (jid, 150, 40), j._secs
    run(j.unacked(0), 41, 150)
    assert j.checkpoint() == ("note one", 40)
    assert ringmod.adopt(j, c.region, SETTINGS, False) is j  # once carried, nothing more to do
    # and it goes on: seq after the carried ones, acks, round the ring
    assert j.ack(100)
    for _ in range(30):
        s = j.last_seq + 1
        for t in range(s, s + 40):
            j.append(*ev_args(t))
        j.commit()
        c.state = j.committed
        j.ack(j.committed - 20)
        j.idle()
    last, acked = j.committed, j.acked
    j = c.boot()
    c.open()
    assert (j.jid, j.last_seq, j.acked, c.state) == (jid, last, acked, last)
    run(j.unacked(0), acked + 1, last)
    c.down()


def test_carry_over_of_many_events_and_of_none():
    for n, acked in ((600, 0), (50, 50)):
        gc.collect()
        c = Carry("carrymany")
        jid = c.old_journal(n, acked)
        j = c.boot()
        c.open()
        ring = ringmod.adopt(j, c.region, SETTINGS, False)
        assert isinstance(ring, Ring) and ring.jid == jid
        c.j = ring
        assert (ring.committed, ring.acked) == (n, acked)
        run(ring.unacked(0), acked + 1, n)
        j = c.boot()
        assert isinstance(j, Ring)
        c.open()
        assert (j.jid, j.committed, j.acked, c.state) == (jid, n, acked, n)
        run(j.unacked(0), acked + 1, n)
        assert j.checkpoint() == ("a note", acked)
        c.down()


def test_a_trial_firmware_keeps_the_littlefs_journal():
    c = Carry("trial")
    jid = c.old_journal(60, 10)
    j = c.boot()
    c.open()
    w = c.region.writes
    assert ringmod.adopt(j, c.region, SETTINGS, True) is j
    assert c.region.writes == w  # the region untouched
    names = c.names()
    assert _has_segments(names) and "ring" not in names
    j.append(*ev_args(61))
    j.commit()
    j = c.boot()
    assert isinstance(j, Journal) and not isinstance(j, Ring)
    c.open()
    assert (j.jid, j.last_seq, j.acked) == (jid, 61, 10)
    # confirmed later: carried then
    ring = ringmod.adopt(j, c.region, SETTINGS, False)
    c.j = ring
    assert isinstance(ring, Ring) and ring.jid == jid
    run(ring.unacked(0), 11, 61)
    c.down()


def test_a_journal_the_ring_cannot_hold_stays_in_littlefs():
    c = Carry("toomany", region_sectors=3)  # two sectors of room
    c.old_journal(300, 0)
    j = c.boot()
    c.open()
    assert ringmod.adopt(j, c.region, SETTINGS, False) is j
    assert _has_segments(c.names()) and "ring" not in c.names()
    c.down()


def _carry_once(c, dev_name, k, nbytes):
    """Boots, recovers and adopts with a power cut at write k of `dev_name` ("region" or "fs")
    during adopt(). True if the cut came."""
    j = c.boot()
    c.open()
    dev = c.region if dev_name == "region" else c.fs
    dev.tear_at(k, nbytes)
    try:
        c.j = ringmod.adopt(j, c.region, SETTINGS, False)
    except simflash.PowerLoss:
        return True
    except OSError:  # littlefs unwinding on the dead device after the cut
        assert dev.dead
        return True
    dev.tear_at(0, 0)
    return False


def test_power_cut_at_every_write_of_a_carry_over():
    c = Carry("carrytear")
    jid = c.old_journal(150, 40)
    c.down()
    pristine = c.base + "/pristine.img"
    _copy(c.base + "/flash.img", pristine)
    totals = {}
    j = c.boot()
    c.open()
    r0, f0 = c.region.writes, c.fs.writes
    ringmod.adopt(j, c.region, SETTINGS, False)
    totals["region"], totals["fs"] = c.region.writes - r0, c.fs.writes - f0
    c.down()
    assert totals["region"] >= 4 and totals["fs"] >= 1, totals
    for dev_name in ("region", "fs"):
        for k in range(1, totals[dev_name] + 1):
            gc.collect()
            _copy(pristine, c.base + "/flash.img")
            os.remove(c.region_img)
            assert _carry_once(c, dev_name, k, (k * 41) % 200), (dev_name, k)
            j = c.boot()  # after the cut: the littlefs journal whole, or the ring whole
            names = c.names()
            if "ring" in names:
                assert isinstance(j, Ring), (dev_name, k)
            else:
                assert isinstance(j, Journal) and not isinstance(j, Ring), (dev_name, k)
                assert _has_segments(names), (dev_name, k)
            c.state = 0
            c.open()
            assert (j.jid, j.committed, j.acked, c.state) == (jid, 150, 40, 150), (dev_name, k)
            run(j.unacked(0), 41, 150)
            assert j.checkpoint() == ("a note", 40)
            ring = ringmod.adopt(j, c.region, SETTINGS, False)  # the next boot completes it
            c.j = ring
            assert isinstance(ring, Ring), (dev_name, k)
            assert not _has_segments(c.names()) and "ring" in c.names()
            run(ring.unacked(0), 41, 150)
            j = c.boot()
            c.state = 0
            c.open()
            assert isinstance(j, Ring) and (j.jid, j.committed, j.acked) == (jid, 150, 40)
            assert c.state == 150
            run(j.unacked(0), 41, 150)
            assert j.checkpoint() == ("a note", 40)
            c.down()
