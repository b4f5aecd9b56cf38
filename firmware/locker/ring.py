# The journal as a ring of flash sectors beside the filesystem: no erase inside a commit.
#
# A flash chip erases a 4 KiB sector in 45 ms (400 ms at worst), and littlefs decides for itself
# when to erase: with the journal in littlefs files about one tap in five waited for an erase
# before its bay unlocked (the event is journaled first). Here the journal owns a region of its
# own (an ESP32 data partition labelled `journal`; on the simulated board an image file beside the
# filesystem's) and erases sectors ahead of the write head when nothing waits (idle(), from the
# locker's tick), so that a commit only programs: one 32-byte slot for a typical event.
#
# The region's n sectors are used in order round the ring. A sector starts with a header slot
#     u32 magic | u32 counter | u8 flags | 3 bytes 0 | u32 crc32(the 12 bytes before)
# (16 bytes programmed, the rest of the 32-byte slot left erased); `counter` is one more than the
# highest the region held when the sector was started. Records follow, each starting on a 32-byte
# slot and framed as in the segment files (locker/journal.py):
#     u16 length | u32 crc32(length bytes + body) | body (kind, ...)
# An erased slot (length 0xFFFF) ends a sector's records, as does a record whose CRC is wrong (a
# write cut by a power loss): nothing is written after such a record (the next write starts a new
# segment in the next sector). A segment is a run of up to `segment_bytes` of sectors whose first
# one (flag START) begins with a SNAPSHOT record; recovery is the newest segment's snapshot and the
# events after it. A commit's records all go into one segment (a segment's snapshot says which
# seqs the segments before it really committed: events above it there are void, as in the segment
# files). Full format and reasoning: docs/journal.md, "The ring".

import os
import struct
from binascii import crc32

from locker import const, makedirs
from locker import events as E
from locker.journal import DEFAULT_CAPACITY, Base

_EVENT = const(1)  # record kinds and framing: the same as locker/journal.py's
_SNAPSHOT = const(2)
_ACK = const(3)
_HDR = const(6)
_SNAP_HEAD = const(9)
_FRAME = const(7)
_MAGIC = const(0x314A4C43)  # b"CLJ1"
_SLOT = const(32)
_HEAD = const(16)  # the header's bytes; the first record starts at the next slot
_START = const(1)  # header flag: the sector starts a segment (its first record is a snapshot)
_ACK_ROOM = const(64)  # a sector's last two slots take acks only: an ack always finds room
_AHEAD = const(2)  # sectors kept erased ahead of the head
_ENOSPC = const(28)
_EIO = const(5)
_ERASE = const(6)  # the block device's ioctl: erase one block
_MARKER = const("ring")  # file in the journal's directory: the journal lives in the ring
_ERASED = b"\xff" * 256
_LARGEST = (_FRAME + E.MAX_ENCODED + _SLOT - 1) // _SLOT * _SLOT  # the largest event's slots


def _slots(n):
    """Bytes a record of n framed bytes takes: whole slots."""
    return (n + _SLOT - 1) // _SLOT * _SLOT


class Ring(Base):
    """The journal (locker/journal.py's Base interface) on the block device `dev` (readblocks and
    writeblocks with an offset, ioctl 4/5 for its geometry and 6 to erase a block), using at
    most capacity_bytes of it (the default budget when None) plus one spare sector."""

    def __init__(
        self, directory, snapshot_fn, dev, capacity_bytes=None, segment_bytes=16384, reserve=0
    ):
        Base.__init__(self, directory, snapshot_fn, reserve)
        self.dev = dev
        self.sector = size = dev.ioctl(5, 0)
        n = dev.ioctl(4, 0)
        n = min(n, (capacity_bytes or DEFAULT_CAPACITY) // size + 1)
        if n < 3:
            raise ValueError("journal: the ring needs 3 sectors or more")
        self._n = n
        self._k = max(1, segment_bytes // size)  # sectors a segment grows to before the next
        self.capacity = (n - 1) * size  # one sector is always kept free (acks, erasing ahead)
        self._clamp_reserve()
        self._event_limit = size - _ACK_ROOM
        self._ack_limit = size
        self._secs = []  # the live sectors, oldest first: [index, counter, covered seq or -1]
        self._pos = -1  # index of the newest sector written (-1: none yet)
        self._ctr = 0  # the highest counter on the region
        self._off = size  # where the next record goes in the head sector
        self._seg_len = 0  # sectors in the head segment
        self._roll = True  # the next write starts a new segment
        self._blank = []  # free sectors known to be erased
        self.erases = 0  # sectors erased, ahead of time
        self.erases_inline = 0  # sectors a write had to erase itself (idle() had no chance)
        self._rbuf = bytearray(_LARGEST)
        self._rmv = memoryview(self._rbuf)
        self._h_ctr = self._h_off = self._h_seq = -1  # where the last read stopped

    # -- opening and recovery --------------------------------------------------------------------

    def open(self):
        """Recover from the region: (snapshot bytes or None, iterator of the Events after it)."""
        makedirs(self.directory)
        seg_committed = self._scan()
        self._load_jid(fresh=not self._secs)
        if not self._secs:
            return None, iter(())
        i = self._seg_start(len(self._secs) - 1)
        return self._read_snapshot(self._secs[i][0]), self._seg_events(i, seg_committed)

    def _scan(self):
        """Reads the region: the live sectors, the marks, where the next record goes. Returns the
        highest seq in the newest segment."""
        n = self._n
        ctrs = [-1] * n
        flags = bytearray(n)
        for i in range(n):
            c, f = self._header(i)
            ctrs[i] = c
            flags[i] = f
        head = -1
        for i in range(n):
            if ctrs[i] >= 0 and (head < 0 or ctrs[i] > ctrs[head]):
                head = i
        self._secs = secs = []
        self._roll = True
        self._off = self.sector
        self.committed = self.acked = 0
        if head < 0:
            return 0
        self._ctr = ctrs[head]
        self._pos = head
        # Walk back from the newest sector while counters fall: the sectors written before it,
        # then (once past the oldest live one) older ones, dropped but not yet erased, which the
        # acked mark drops again below.
        run = [head]
        i = head
        while len(run) < n:
            j = (i - 1) % n
            if ctrs[j] < 0 or ctrs[j] >= ctrs[i]:
                break
            run.append(j)
            i = j
        run.reverse()
        acked = 0
        for p in range(len(run)):
            idx = run[p]
            head_of = self._snap_head(idx) if flags[idx] & _START else None
            if head_of is None:
                if p == len(run) - 1 and flags[idx] & _START:
                    break  # the newest sector, cut while its segment was being started
                if secs:  # a continuation (or a start that holds nothing readable)
                    secs.append([idx, ctrs[idx], -1])
                continue  # before the oldest segment's start: out of reach
            secs.append([idx, ctrs[idx], head_of[0]])
            acked = max(acked, head_of[1])
        if not secs:
            return 0
        # the newest segment: its events, acks, and where the next record goes
        i = self._seg_start(len(secs) - 1)
        committed = secs[i][2]
        self._seg_len = len(secs) - i
        clean = False
        for s in range(i, len(secs)):
            idx = secs[s][0]
            end = _SLOT
            clean = False
            for kind, off, ln in self._records(idx, _SLOT):
                if kind == _EVENT:
                    committed = max(committed, struct.unpack_from("<I", self._rbuf, _HDR + 2)[0])
                elif kind == _ACK:
                    acked = max(acked, struct.unpack_from("<I", self._rbuf, _HDR + 1)[0])
                end = off + _slots(_HDR + ln)
            clean = self._is_blank(idx, end)
        self._pos = secs[-1][0]
        self._off = end
        self._roll = not clean
        self.committed = self.last_seq = committed
        # a segment is dropped only once every event before its successor was acknowledged
        self.acked = min(max(acked, secs[0][2]), committed)
        self._drop()
        return committed

    def _seg_start(self, s):
        """Index in _secs of the start of the segment that holds _secs[s]."""
        while s > 0 and self._secs[s][2] < 0:
            s -= 1
        return s

    def _seg_events(self, i, hi):
        """The events of the segment starting at _secs[i] after its snapshot, up to seq hi."""
        lo = self._secs[i][2]
        for s in range(i, len(self._secs)):
            for ev in self._events_in(self._secs[s][0], self._secs[s][1], lo, hi):
                lo = ev.seq
                yield ev

    # -- state -----------------------------------------------------------------------------------

    @property
    def used_bytes(self):
        if not self._secs:
            return self._olen
        return (len(self._secs) - 1) * self.sector + self._off + self._olen

    @property
    def full(self):
        """True exactly when append() refuses: no sector can be started (one is always kept for
        acks) and the head sector has no room for one more event of the largest size."""
        if self._n - len(self._secs) >= 2:
            return False
        return self._roll or self._off + self._olen + _LARGEST > self._event_limit

    def ack(self, seq):
        """As Base.ack. When not even the sector kept for acks has room left (an ack took it, then
        events filled it), the mark is raised in RAM first, dropping the segments it covers, and
        then written in the room that made (or by a later ack). A power cut in between only makes
        the host see a resend: recovery takes what the oldest segment left on flash covers as
        acknowledged, so nothing unacknowledged is lost with the dropped sectors."""
        try:
            return Base.ack(self, seq)
        except OSError as e:
            if e.args[0] != _ENOSPC:
                raise
        before = self.acked
        self.acked = seq
        self._drop()
        if self._n - len(self._secs) < 1:
            return True  # nothing freed yet: a later ack writes the mark
        self.acked = before
        return Base.ack(self, seq)

    # -- erasing ahead ---------------------------------------------------------------------------

    def idle(self):
        """Makes sure the next sectors ahead of the head are erased: checks one by reading it, or
        erases one (45 ms on a typical chip). At most one erase a call. True if it erased."""
        free = self._n - len(self._secs)
        for a in range(min(_AHEAD, free)):
            idx = (self._pos + 1 + a) % self._n
            if idx in self._blank:
                continue
            if self._is_blank(idx, 0):
                self._blank.append(idx)
                continue
            self._erase(idx)
            self.erases += 1
            self._blank.append(idx)
            return True
        return False

    def wipe(self):
        """Erases every sector that is not (the region forgets the journal it held)."""
        for idx in range(self._n):
            if not self._is_blank(idx, 0):
                self._erase(idx)
        self._blank = []
        self._scan()

    def _erase(self, idx):
        r = self.dev.ioctl(_ERASE, idx)
        if r:
            raise OSError(_EIO)

    def _is_blank(self, idx, off):
        """True when sector idx is erased from byte off to its end."""
        buf = self._rmv[:256]
        size = self.sector
        while off < size:
            n = min(256, size - off)
            self._read(idx, off, buf[:n])
            if bytes(buf[:n]) != _ERASED[:n]:
                return False
            off += n
        return True

    # -- writing ------------------------------------------------------------------------------

    def _write(self, data, limit):
        """Makes data (whole framed records) durable, all in the head segment or in a new one."""
        if self._roll or not self._secs or not self._fits(data, limit):
            self._start_segment(limit)
            free = self._n - len(self._secs) - (0 if limit == self._ack_limit else 1)
            if not self._fits(data, limit, free):
                raise OSError(_ENOSPC)  # before any of it is on flash: a commit fails whole
        pos = 0
        end = len(data)
        while pos < end:
            take = self._fit(data, pos, limit - self._off)
            if not take:
                self._take(0, limit)
                self._seg_len += 1
                continue
            try:
                self._program(self._pos, self._off, data[pos : pos + take])
            except Exception:
                self._roll = True  # what reached flash is unknown: nothing more goes here
                raise
            self._off += take
            pos += take

    def _out(self, rec):
        """Buffers a framed record for the next write, padded with erased bytes to whole slots
        (so every record starts on a slot)."""
        n = len(rec)
        need = self._olen + _slots(n)
        if need > len(self._obuf):
            grown = bytearray(max(need, 2 * len(self._obuf)))
            grown[: self._olen] = memoryview(self._obuf)[: self._olen]
            self._obuf = grown
        buf = self._obuf
        buf[self._olen : self._olen + n] = rec
        for i in range(self._olen + n, need):
            buf[i] = 0xFF
        self._olen = need

    def _fit(self, data, pos, room):
        """Bytes of data from pos that fit in room, whole records only."""
        take = 0
        while pos + take < len(data):
            n = _slots(_HDR + struct.unpack_from("<H", data, pos + take)[0])
            if take + n > room:
                break
            take += n
        return take

    def _fits(self, data, limit, more=None):
        """True if data fits in the head segment (its sector and those it may still grow by, or
        `more` sectors)."""
        room = limit - self._off
        if more is None:
            more = min(self._k - self._seg_len, self._n - len(self._secs) - 1)
        pos = 0
        while pos < len(data):
            n = _slots(_HDR + struct.unpack_from("<H", data, pos)[0])
            if n > room:
                if more <= 0:
                    return False
                more -= 1
                room = limit - _SLOT
            room -= n
            pos += n
        return True

    def _start_segment(self, limit):
        snap = self._snapshot_fn()
        if _slots(_HDR + _SNAP_HEAD + len(snap)) > self.sector - _SLOT - _ACK_ROOM:  # one sector
            raise ValueError("journal: snapshot of {} bytes is too large".format(len(snap)))
        rec = bytearray(_slots(_HDR + _SNAP_HEAD + len(snap)))
        for i in range(_HDR + _SNAP_HEAD + len(snap), len(rec)):
            rec[i] = 0xFF
        n = _HDR + _SNAP_HEAD + len(snap)
        rec[_HDR] = _SNAPSHOT
        struct.pack_into("<II", rec, _HDR + 1, self.committed, self.acked)
        rec[_HDR + _SNAP_HEAD : n] = snap
        mv = memoryview(rec)
        struct.pack_into("<H", rec, 0, n - _HDR)
        struct.pack_into("<I", rec, 2, crc32(mv[_HDR:n], crc32(mv[0:2])))
        self._take(_START, limit)
        self._secs[-1][2] = self.committed
        self._seg_len = 1
        try:
            self._program(self._pos, _SLOT, mv)
        except Exception:
            self._roll = True
            raise
        self._off = _SLOT + len(rec)
        self._roll = False
        self._drop()

    def _take(self, flags, limit):
        """Starts the next sector round the ring (its header programmed): erased ahead by idle()
        as a rule, erased here otherwise. Events leave one sector free, acks may take it."""
        if self._n - len(self._secs) < (1 if limit == self._ack_limit else 2):
            raise OSError(_ENOSPC)
        idx = (self._pos + 1) % self._n
        if idx in self._blank:
            self._blank.remove(idx)
        elif not self._is_blank(idx, 0):
            self._erase(idx)
            self.erases_inline += 1
        ctr = self._ctr + 1
        h = self._rmv[:_HEAD]
        struct.pack_into("<IIB3x", self._rbuf, 0, _MAGIC, ctr, flags)
        struct.pack_into("<I", self._rbuf, 12, crc32(h[:12]) & 0xFFFFFFFF)
        try:
            self._program(idx, 0, h)
        except Exception:
            self._roll = True  # idx is no longer known erased: the next try erases it first
            raise
        self._ctr = ctr
        self._pos = idx
        self._secs.append([idx, ctr, -1])
        self._off = _SLOT

    def _program(self, idx, off, data):
        r = self.dev.writeblocks(idx, data, off)
        if r:  # the simulated device returns an error code; an ESP32 partition raises
            raise OSError(-r)

    def _read(self, idx, off, buf):
        self.dev.readblocks(idx, buf, off)

    def _drop(self):
        """Forgets the oldest segments while every event in them is acknowledged (the next
        segment's snapshot covers only acknowledged seqs); the newest always stays. Their
        sectors are erased later, when idle() comes to them."""
        secs = self._secs
        while True:
            j = 1
            while j < len(secs) and secs[j][2] < 0:
                j += 1
            if j >= len(secs) or secs[j][2] > self.acked:
                return
            del secs[:j]

    # -- carrying the littlefs journal over ----------------------------------------------------

    def carry(self, old):
        """Copies the open littlefs journal `old` into this region (wiped first): its seq and
        acked mark, a snapshot of the caller's state (recovered from `old`), its unacknowledged
        events with their seqs, and its id. The caller then marks the journal as moved and
        deletes old's files (adopt()).

        The events go in as commits would (each segment's snapshot covers the seqs before its
        events: recovery takes everything up to the oldest segment's as acknowledged), then a
        segment whose snapshot, the caller's state, covers them all (recovery starts there)."""
        if self._secs:
            self.wipe()
        self.committed = self.last_seq = self.acked = old.acked
        self._start_segment(self._event_limit)
        buf = self._wbuf
        for ev in old.unacked(0):
            buf[_HDR] = _EVENT
            end = E.encode_into(ev, buf, _HDR + 1)
            self._frame(end)
            self._out(self._wmv[:end])
            self.last_seq = ev.seq
            if self._olen >= 1024:
                self._flush_carried()
        self._flush_carried()
        self.committed = self.last_seq = old.committed
        self._start_segment(self._event_limit)
        self.jid = old.jid

    def _flush_carried(self):
        if self._olen:
            self._write(memoryview(self._obuf)[: self._olen], self._event_limit)
            self._olen = 0
            self.committed = self.last_seq

    # -- reading ---------------------------------------------------------------------------------

    def unacked(self, after_seq=0):
        """Events with seq > after_seq and > acked, in seq order, read one at a time. Sectors
        dropped meanwhile (acknowledged) are passed over."""
        lo = max(after_seq, self.acked)
        hi = self.committed
        ctr = -1
        while True:
            secs = self._secs
            i = 0
            while i < len(secs) and secs[i][1] <= ctr:
                i += 1
            if i >= len(secs):
                return
            idx, ctr = secs[i][0], secs[i][1]
            j = i + 1  # events of a segment beyond the next one's snapshot were never committed
            while j < len(secs) and secs[j][2] < 0:
                j += 1
            limit = secs[j][2] if j < len(secs) else hi
            if limit > lo:
                for ev in self._events_in(idx, ctr, lo, min(limit, hi)):
                    lo = ev.seq
                    yield ev

    def _events_in(self, idx, ctr, lo, hi):
        """Events of sector idx (counter ctr) with lo < seq <= hi."""
        if hi <= lo:
            return
        start = _SLOT
        if self._h_ctr == ctr and self._h_seq <= lo:
            start = self._h_off  # a reader going forward carries on where the last one stopped
        for kind, off, n in self._records(idx, start):
            if kind != _EVENT:
                continue
            seq = struct.unpack_from("<I", self._rbuf, _HDR + 2)[0]
            if seq <= lo:
                continue
            if seq > hi:
                return
            try:
                ev = E.decode(self._rbuf, _HDR + 1, _HDR + n)
            except ValueError:
                continue  # whole and checked, but not ours to read (a newer firmware's)
            lo = seq
            self._h_ctr, self._h_off, self._h_seq = ctr, off + _slots(_HDR + n), seq
            yield ev
            if seq == hi:
                return

    def _records(self, idx, off):
        """(kind, offset, body length) of each good record of sector idx from offset off, to the
        first erased slot or bad record. A body that fits is in self._rbuf[_HDR:] when yielded;
        a larger one (a big snapshot) is checked chunk by chunk and must be read again."""
        buf = self._rbuf
        mv = self._rmv
        size = self.sector
        room = len(buf)
        while off + _SLOT <= size:
            self._read(idx, off, mv[:_SLOT])
            n, crc = struct.unpack_from("<HI", buf, 0)
            total = _HDR + n
            if n == 0 or n == 0xFFFF or off + total > size:
                return
            kind = buf[_HDR]
            if total <= room:
                if total > _SLOT:
                    self._read(idx, off + _SLOT, mv[_SLOT:total])
                c = crc32(mv[_HDR:total], crc32(mv[0:2]))
            else:  # read in chunks into the buffer's end
                c = crc32(mv[_HDR:_SLOT], crc32(mv[0:2]))
                pos = off + _SLOT
                left = total - _SLOT
                while left:
                    chunk = min(left, room - _SLOT)
                    self._read(idx, pos, mv[_SLOT : _SLOT + chunk])
                    c = crc32(mv[_SLOT : _SLOT + chunk], c)
                    pos += chunk
                    left -= chunk
            if c & 0xFFFFFFFF != crc:
                return
            if kind == _EVENT and n < 6 or kind == _ACK and n != 5:
                return
            if kind == _SNAPSHOT and n < _SNAP_HEAD:
                return
            yield kind, off, n
            off += _slots(total)

    def _header(self, idx):
        """(counter, flags) of sector idx's header, or (-1, 0) when it has none."""
        h = self._rmv[:_HEAD]
        self._read(idx, 0, h)
        magic, ctr, flags, crc = struct.unpack_from("<IIB3xI", self._rbuf, 0)
        if magic != _MAGIC or crc32(h[:12]) & 0xFFFFFFFF != crc:
            return -1, 0
        return ctr, flags

    def _snap_head(self, idx):
        """(covered seq, acked) of the snapshot that starts sector idx, or None."""
        for kind, _off, _n in self._records(idx, _SLOT):
            if kind != _SNAPSHOT:
                return None
            h = self._rmv[: _HDR + _SNAP_HEAD]
            self._read(idx, _SLOT, h)
            return struct.unpack_from("<II", self._rbuf, _HDR + 1)
        return None

    def _read_snapshot(self, idx):
        h = self._rmv[:_HDR]
        self._read(idx, _SLOT, h)
        n = struct.unpack_from("<H", self._rbuf, 0)[0]
        out = bytearray(n - _SNAP_HEAD)
        self._read(idx, _SLOT + _HDR + _SNAP_HEAD, out)
        return bytes(out)

    def close(self):
        pass


# -- which journal a board keeps ------------------------------------------------------------------


def select(region, directory, snapshot_fn, settings):
    """The journal to open: the ring on a board with a journal region, unless the littlefs
    journal of an earlier firmware is still there (its segment files, and no marker that it was
    carried over): then that one, until adopt() carries it over."""
    capacity = settings.get("journal_bytes") or None
    segment = settings["journal_segment_bytes"]
    reserve = settings.get("journal_reserve_bytes", 0)
    if region is not None and (_moved(directory) or not _segments(directory)):
        return Ring(directory, snapshot_fn, region, capacity, segment, reserve)
    from locker.segments import Journal

    return Journal(directory, snapshot_fn, capacity, segment, reserve)


def adopt(journal, region, settings, trial):
    """After the caller recovered its state from `journal` (select() then open()): on a board
    with a region, carries a littlefs journal over into the ring, unless this firmware is on
    trial (a rollback must find the journal its firmware knows) or the ring could not hold its
    unacknowledged events. Returns the journal to keep."""
    if region is None:
        return journal
    directory = journal.directory
    if isinstance(journal, Ring):
        if not _moved(directory):
            _mark(directory)
        _remove_segments(directory)  # what a carry cut short after its marker left behind
        return journal
    if trial:
        return journal
    ring = Ring(
        directory,
        journal._snapshot_fn,
        region,
        settings.get("journal_bytes") or None,
        settings["journal_segment_bytes"],
        settings.get("journal_reserve_bytes", 0),
    )
    ring._scan()
    if journal.pending * _SLOT * 2 + ring.sector > ring.capacity:
        return journal  # the host empties it first (a sector more: carry()'s last segment)
    ring.carry(journal)
    _mark(directory)
    journal.close()
    _remove_segments(directory)
    return ring


def _moved(directory):
    try:
        os.stat(directory + "/" + _MARKER)
        return True
    except OSError:
        return False


def _mark(directory):
    makedirs(directory)
    with open(directory + "/" + _MARKER, "wb") as f:
        f.write(b"1")


def _segments(directory):
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    for name in names:
        if name.endswith(".seg"):
            return True
    return False


def _remove_segments(directory):
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.endswith(".seg") or name == "tail":
            try:
                os.remove(directory + "/" + name)
            except OSError:
                pass
