# Shared by the ring's tests (test_ring.py, test_ring_faults.py, test_ring_carry.py): a region
# image and the ring on it, and events made from their seq, so that a check compares seqs and
# rebuilds the content instead of holding thousands of Event objects on a 96k heap.
import gc

from hal.sim import flash as simflash
from locker.ring import Ring
from mpytest import tmpdir

SECTOR = 4096
T0 = 1795549393


def person(seq):
    return "P{:04d}".format(seq % 10000)


def ev_args(seq):
    return ("deposit", T0 + seq, 1 + seq % 8, person(seq))


def check_ev(ev):
    """ev is the event _ev_args made for its seq."""
    assert (ev.type, ev.ts, ev.bay, ev.person) == ev_args(ev.seq), ev


class NorFlash(simflash.FileBlockDevice):
    """The simulated flash, holding the ring to what NOR flash allows: a program only turns erased
    bits to 0, so every byte written must be erased (0xFF) before. The image file would take
    anything (a write over old data replaces it), which hides a record written over a torn one:
    on a chip the two mix and neither reads back."""

    _have = bytearray(256)

    def writeblocks(self, n, buf, off=None):
        if off is not None and not self.dead and self._f is not None:
            have = self._have
            self._f.seek(n * self.block_size + off)
            done = 0
            while done < len(buf):
                got = self._f.readinto(memoryview(have)[: min(256, len(buf) - done)])
                for i in range(got):
                    if have[i] != 0xFF:
                        raise AssertionError(
                            "program over unerased byte: block {} offset {}".format(
                                n, off + done + i
                            )
                        )
                done += got
        return simflash.FileBlockDevice.writeblocks(self, n, buf, off)


class RRig:
    """A region image (a FileBlockDevice, not mounted) and the ring on it; the journal's small
    files (jid, checkpoint, marker) in a plain directory beside it. `state` stands for the
    caller's state: the seq of the last event it acted on."""

    def __init__(self, name, sectors=16, segment_bytes=8192, capacity_bytes=None, reserve=0):
        self.base = tmpdir("ring_" + name)
        self.img = self.base + "/region.img"
        self.dir = self.base + "/journal"
        self.sectors = sectors
        self.segment_bytes = segment_bytes
        self.capacity_bytes = capacity_bytes
        self.reserve = reserve
        self.state = 0
        self.dev = None
        self.j = None

    def mount(self):
        self._drop()
        self.dev = NorFlash(self.img, SECTOR, self.sectors)
        self.j = Ring(
            self.dir,
            self.snapshot,
            self.dev,
            self.capacity_bytes,
            self.segment_bytes,
            self.reserve,
        )
        return self.j

    def _drop(self):
        if self.j is not None:
            self.j.close()
            self.j = None
        if self.dev is not None:
            self.dev.close()
            self.dev = None
        gc.collect()

    def open(self):
        """Reopen from the image (as after a power cut) and recover: (snapshot, (first, last)
        of the events after it, contiguous and each with its content, or None when none)."""
        j = self.mount()
        snap, events = j.open()
        first = last = None
        for ev in events:
            check_ev(ev)
            assert last is None or ev.seq == last + 1, (ev.seq, last)
            if first is None:
                first = ev.seq
            last = ev.seq
        self.state = int(snap) if snap else 0
        if last is not None:
            self.state = last
        return snap, None if first is None else (first, last)

    def snapshot(self):
        return str(self.state).encode()

    def append(self, n=1):
        first = self.j.last_seq + 1
        for s in range(first, first + n):
            self.j.append(*ev_args(s))
        return first, first + n - 1

    def record(self, n=1):
        """n events in one commit: (first seq, last seq)."""
        first, last = self.append(n)
        self.j.commit()
        self.state = last
        return first, last

    def done(self):
        self._drop()


def seqs(events):
    return [e.seq for e in events]


def unacked(j, after=0):
    """Seqs of j.unacked(after), each event's content checked."""
    out = []
    for ev in j.unacked(after):
        check_ev(ev)
        out.append(ev.seq)
    return out


def run(events, first, last):
    """events (an iterator) has exactly the seqs first..last, each with its content."""
    n = first
    for ev in events:
        assert ev.seq == n, (ev.seq, n)
        check_ev(ev)
        n += 1
    assert n == last + 1, (n, last)


def segments(j):
    return sum(1 for s in j._secs if s[2] >= 0)
