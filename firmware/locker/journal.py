# The journal: every event the locker records, on flash before it takes effect, kept until the
# host acknowledges it. Format and reasoning: docs/journal.md.
#
# A directory of segment files `<8 hex digits>.seg`, numbered upwards. Each segment is a run of
# records:   u16 length | u32 crc32(length bytes + body) | body (length bytes)
# and a body starts with its kind: EVENT (an encoded Event, locker/events.py), SNAPSHOT (first in
# every segment: the seq it covers, the acked mark and the caller's bay state) or ACK (the acked
# mark). A segment is only ever appended to; a record that fails its CRC ends the segment's
# readable part and nothing is appended after it (the next commit starts a new segment). A
# segment is deleted when the next one's snapshot covers only acknowledged events.
#
# Beside the segments, two small files that compaction never touches: `jid`, the journal's id
# (16 hex digits drawn when the journal is formatted), and `checkpoint`, the host's latest signed
# checkpoint note with the acked mark when it was stored. Both are replaced whole (written to a
# temporary file, then renamed over the old one: atomic on littlefs).

import os
import struct
from binascii import crc32, hexlify, unhexlify

from locker import const, makedirs
from locker import events as E

_EVENT = const(1)
_SNAPSHOT = const(2)
_ACK = const(3)
_HDR = const(6)  # u16 length, u32 crc
_SNAP_HEAD = const(9)  # kind, u32 covered seq, u32 acked
_FRAME = const(_HDR + 1)  # header, kind; then the body: events.MAX_ENCODED bytes at most
_CTZ_ROOM = const(64)  # littlefs keeps block pointers inside file blocks: stay in whole blocks
_ACK_ROOM = const(256)  # the tail of every segment is kept for ack records (about 23)
_RESERVE = const(131072)  # default: leave this much of the filesystem to everything else
_DEFAULT_CAPACITY = const(393216)  # default budget: 96 blocks of a 512 KB partition
_SUFFIX = const(".seg")
_TAIL = const("tail")
_JID = const("jid")
_CHECKPOINT = const("checkpoint")
_MAX_NOTE = const(700)  # bytes of UTF-8 in a checkpoint note


class JournalFull(Exception):
    """append() on a full journal: nothing was appended (deny the tap: `journal_full`)."""


class Base:
    """What every journal layout shares: seqs, the acked mark, appending and framing records,
    the reserve and the full and near-full tests, the journal's id and the host's checkpoint
    (small files in `directory`, on the filesystem). A layout supplies open(), _write(data,
    limit), _drop(), unacked(), used_bytes, full, close() and the limits _event_limit and
    _ack_limit: Journal (segment files on littlefs, below) and locker.ring.Ring (a ring of flash
    sectors beside the filesystem, no erase inside a commit)."""

    def __init__(self, directory, snapshot_fn, reserve=0):
        self.directory = directory
        self._snapshot_fn = snapshot_fn
        self.last_seq = 0  # highest seq handed out (appended); committed ones are durable
        self.committed = 0  # highest seq on flash
        self.acked = 0
        self._wbuf = bytearray(_FRAME + E.MAX_ENCODED)
        self._wmv = memoryview(self._wbuf)
        self._obuf = bytearray(256)  # framed records appended but not committed (grows)
        self._olen = 0
        self.capacity = 0
        self.reserve = reserve  # bytes kept for essential events: see routine_full
        self.jid = None  # the journal's id: 16 lower-case hex digits, set by open()

    # -- state -----------------------------------------------------------------------------------

    @property
    def pending(self):
        """Events on flash the host has not acknowledged."""
        return self.committed - self.acked

    @property
    def near_full(self):
        return self.used_bytes * 5 >= self.capacity * 4

    @property
    def routine_full(self):
        """True when only the reserve is left: routine records (denials, rejected commands and
        configurations) are no longer appended, so that essential ones (deposits, retrievals,
        door events...) always find room. The caller decides which is which (docs/journal.md)."""
        return self.full or self.used_bytes + _FRAME + E.MAX_ENCODED > self.capacity - self.reserve

    def _clamp_reserve(self):
        # at most half the journal is reserve, whatever device.json asks: a locker must boot
        self.reserve = max(0, min(self.reserve or 0, self.capacity // 2))

    def idle(self):
        """Housekeeping for a moment when nothing waits (the locker's tick); True if it did any.
        A layout that prepares flash ahead of its writes (the ring erases sectors) does it here."""
        return False

    # -- writing -------------------------------------------------------------------------------

    def append(self, type, ts, bay=None, person=None, by=None, reason=None):  # noqa: A002
        """Assigns the next seq and buffers the event; commit() makes it durable. Raises
        ValueError for a malformed event, JournalFull when full; nothing appended then."""
        if self.full:
            raise JournalFull("journal full: {} events not acknowledged".format(self.pending))
        ev = E.Event(self.last_seq + 1, ts, type, bay, person, by, reason)
        buf = self._wbuf
        buf[_HDR] = _EVENT
        end = E.encode_into(ev, buf, _HDR + 1)
        self._frame(end)
        self._out(self._wmv[:end])
        self.last_seq = ev.seq
        return ev

    def commit(self):
        """Writes and flushes everything appended: durable when this returns. On an error the
        appended events are dropped (the caller did not act on them) and their seqs reused."""
        if not self._olen:
            return
        try:
            self._write(memoryview(self._obuf)[: self._olen], self._event_limit)
        except Exception:
            self._olen = 0
            self.last_seq = self.committed
            raise
        self._olen = 0
        self.committed = self.last_seq

    def ack(self, seq):
        """The host stored every event up to seq. Ignored (False) beyond what is on flash or at
        or below the mark; otherwise persisted, then fully acknowledged segments are dropped."""
        if not isinstance(seq, int) or seq <= self.acked or seq > self.committed:
            return False
        buf = self._wbuf
        buf[_HDR] = _ACK
        struct.pack_into("<I", buf, _HDR + 1, seq)
        end = _HDR + 5
        self._frame(end)
        self._write(self._wmv[:end], self._ack_limit)
        self.acked = seq
        self._drop()
        return True

    def _frame(self, end):
        buf = self._wbuf
        struct.pack_into("<H", buf, 0, end - _HDR)
        struct.pack_into("<I", buf, 2, crc32(self._wmv[_HDR:end], crc32(self._wmv[0:2])))

    def _out(self, rec):
        need = self._olen + len(rec)
        if need > len(self._obuf):
            grown = bytearray(max(need, 2 * len(self._obuf)))
            grown[: self._olen] = memoryview(self._obuf)[: self._olen]
            self._obuf = grown
        self._obuf[self._olen : need] = rec
        self._olen = need

    # -- the journal's id -------------------------------------------------------------------------

    def _load_jid(self, fresh):
        """The journal's id (docs/journal.md): drawn for a journal with nothing on flash (`fresh`:
        new or wiped, its seq starts again at 1, and the checkpoint of the journal before goes
        with it) and once for one from before ids (or with a rotten id file), then kept. On flash
        before open() returns: no event is ever sent under an id that a power cut could make the
        board forget."""
        path = self.directory + "/" + _JID
        jid = None
        if not fresh:
            try:
                with open(path, "rb") as f:
                    jid = f.read(17)
                if len(jid) != 16 or hexlify(unhexlify(jid)) != jid:  # 16 lower-case hex digits
                    jid = None
            except (OSError, ValueError):
                jid = None
        else:  # a checkpoint belongs to the journal it was stored in
            try:
                os.remove(self.directory + "/" + _CHECKPOINT)
            except OSError:
                pass
        if jid is None:
            jid = hexlify(os.urandom(8))
            with open(path + ".tmp", "wb") as f:  # replaced whole: tmp, then renamed (atomic)
                f.write(jid)
            os.rename(path + ".tmp", path)
        self.jid = jid.decode()

    # -- the host's checkpoint --------------------------------------------------------------------

    def checkpoint(self, data=None):
        """With data, the host's checkpoint note (str or bytes, at most 700 bytes of UTF-8): stores
        it with the acked mark now, replacing the one before, durable when this returns, and
        returns that acked mark (ValueError when longer; OSError when the flash refused: the one
        before stays). Without: (note as str, acked) of the latest, read from flash, or None
        before any (or when the file is damaged: as good as none, the host sends another)."""
        path = self.directory + "/" + _CHECKPOINT
        if data is None:
            try:
                with open(path, "rb") as f:
                    rec = f.read(8 + _MAX_NOTE + 1)
            except OSError:
                return None
            if not 8 <= len(rec) <= 8 + _MAX_NOTE:
                return None
            crc, acked = struct.unpack_from("<II", rec, 0)
            if crc32(memoryview(rec)[4:]) & 0xFFFFFFFF != crc:
                return None
            try:
                return str(memoryview(rec)[8:], "utf-8"), acked
            except UnicodeError:
                return None
        if isinstance(data, str):
            try:
                data = memoryview(data)  # MicroPython: the str's own UTF-8 bytes, not a copy
            except TypeError:  # CPython
                data = data.encode()
        if len(data) > _MAX_NOTE:
            raise ValueError("journal: checkpoint note over {} bytes".format(_MAX_NOTE))
        head = bytearray(8)
        struct.pack_into("<I", head, 4, self.acked)
        struct.pack_into("<I", head, 0, crc32(data, crc32(memoryview(head)[4:])))
        with open(path + ".tmp", "wb") as f:  # replaced whole: tmp, then renamed (atomic)
            f.write(head)
            f.write(data)
        os.rename(path + ".tmp", path)
        return self.acked


class Journal(Base):
    """The journal as segment files on littlefs (the layout before the ring, docs/journal.md): a
    board without a journal region keeps it, and a board with one carries it over once."""

    TAIL_BYTES = 128  # littlefs keeps files up to its cache size (128 by default) inline

    def __init__(
        self, directory, snapshot_fn, capacity_bytes=None, segment_bytes=16384, reserve=0
    ):
        if not 2048 <= segment_bytes <= 1048576:
            raise ValueError("journal: segment_bytes must be 2048..1048576")
        Base.__init__(self, directory, snapshot_fn, reserve)
        self.segment_bytes = segment_bytes
        self._capacity_arg = capacity_bytes
        self._event_limit = segment_bytes - _CTZ_ROOM - _ACK_ROOM
        self._ack_limit = segment_bytes - _CTZ_ROOM
        self._segs = []  # [segment number, seq its snapshot covers], oldest first
        self._next_num = 1
        self._cur = None  # append handle of the last segment
        self._cur_size = 0
        self._roll = True  # the next write starts a new segment
        self._rbuf = bytearray(_FRAME + E.MAX_ENCODED)
        self._rmv = memoryview(self._rbuf)
        # the tail: the newest records, in a file small enough for littlefs to keep inline in
        # its directory (no block of its own, so a commit there copies no block); mirrored here
        self._tbuf = bytearray(self.TAIL_BYTES)
        self._tlen = 0
        self._tail = None  # append handle of the tail file
        self._tail_stale = False  # the tail file holds more than _tbuf: empty it on next move
        self._max_segs = 0
        # where the last read stopped (see _events_in): segment, offset after an event's record,
        # that event's seq; three ints, so that reading allocates nothing for it
        self._h_num = self._h_off = self._h_seq = 0

    # -- opening and recovery ------------------------------------------------------------------

    def open(self):
        """Recover from flash. Returns (snapshot bytes or None, iterator of the Events after it,
        in seq order): the caller rebuilds its state from them before its first commit."""
        makedirs(self.directory)
        self._set_capacity()
        nums = []
        for name in os.listdir(self.directory):
            if name.endswith(_SUFFIX) and len(name) == 8 + len(_SUFFIX):
                try:
                    nums.append(int(name[:8], 16))
                except ValueError:
                    pass
        nums.sort()
        self._next_num = (nums[-1] + 1) if nums else 1
        segs = []
        acked = 0
        for num in nums:
            head = self._snapshot_head(num)
            if head is None:  # nothing readable (a segment cut while it was being started)
                self._remove(num)
                continue
            segs.append([num, head[0]])
            acked = max(acked, head[1])
        self._segs = segs
        snap = None
        committed = 0
        self._roll = True
        if segs:
            num, covered = segs[-1]
            committed = covered
            end = 0
            for kind, off, n in self._records(self._path(num)):
                if kind == _EVENT:
                    seq = struct.unpack_from("<I", self._rbuf, _HDR + 2)[0]
                    committed = max(committed, seq)
                elif kind == _ACK:
                    acked = max(acked, struct.unpack_from("<I", self._rbuf, _HDR + 1)[0])
                end = off + _HDR + n
            self._cur_size = end
            # append only right after the last good record: garbage after it means a new segment
            self._roll = _size(self._path(num)) != end
            snap = self._read_snapshot(num)
        seg_committed = committed
        committed, acked = self._load_tail(committed, acked, bool(segs))
        self.committed = self.last_seq = committed
        self.acked = min(acked, committed)
        self._drop()
        self._load_jid(fresh=not segs)
        return snap, self._recovered(segs[-1] if segs else None, seg_committed)

    def _recovered(self, last, seg_committed):
        if last is not None:
            for ev in self._events_in(last[0], last[1], seg_committed):
                yield ev
        for ev in self._tail_events(seg_committed, self.committed):
            yield ev

    def _load_tail(self, committed, acked, have_segs):
        """Takes the tail file's records that are newer than the segments into _tbuf."""
        self._tlen = 0
        kept = 0
        path = self.directory + "/" + _TAIL
        for kind, _off, n in self._records(path):
            rec = self._rmv[: _HDR + n]
            if kind == _EVENT:
                seq = struct.unpack_from("<I", self._rbuf, _HDR + 2)[0]
                if seq <= committed or not have_segs:
                    continue  # already moved into a segment (or nothing to follow)
                committed = seq
            elif kind == _ACK:
                acked = max(acked, struct.unpack_from("<I", self._rbuf, _HDR + 1)[0])
            else:
                continue
            self._tail_keep(rec)
            kept += _HDR + n
        if kept != _size(path) and _size(path) > 0:
            self._tail_stale = True  # copies, leftovers or garbage: rewritten at the next move
        return committed, acked

    def _tail_keep(self, rec):
        need = self._tlen + len(rec)
        if need > len(self._tbuf):  # only after a tail that could not be emptied
            grown = bytearray(need)
            grown[: self._tlen] = memoryview(self._tbuf)[: self._tlen]
            self._tbuf = grown
            self._tail_stale = True
        self._tbuf[self._tlen : need] = rec
        self._tlen = need

    def _tail_events(self, lo, hi):
        """Events in the tail with lo < seq <= hi (from RAM: the tail is tiny)."""
        buf = self._tbuf
        off = 0
        end = self._tlen
        while off < end and lo < hi:
            n = struct.unpack_from("<H", buf, off)[0]
            if buf[off + _HDR] == _EVENT:
                seq = struct.unpack_from("<I", buf, off + _HDR + 2)[0]
                if lo < seq <= hi:
                    try:
                        ev = E.decode(buf, off + _HDR + 1, off + _HDR + n)
                    except ValueError:
                        ev = None
                    if ev is not None:
                        lo = seq
                        yield ev
                        buf = self._tbuf  # a move may have emptied the tail meanwhile
                        if self._tlen != end:
                            return
            off += _HDR + n

    def _set_capacity(self):
        cap = self._capacity_arg
        if cap is None:
            cap = _DEFAULT_CAPACITY
            try:
                st = os.statvfs(self.directory)
                cap = min(cap, st[0] * st[2] - _RESERVE)
            except (OSError, AttributeError):
                pass
        self._max_segs = cap // self.segment_bytes
        if self._max_segs < 2:
            raise ValueError(
                "journal: capacity {} holds fewer than 2 segments of {} bytes".format(
                    cap, self.segment_bytes
                )
            )
        self.capacity = self._max_segs * self.segment_bytes
        self._clamp_reserve()

    # -- state -----------------------------------------------------------------------------------

    @property
    def used_bytes(self):
        if not self._segs:
            return self._olen + self._tlen
        return (
            (len(self._segs) - 1) * self.segment_bytes + self._cur_size + self._tlen + self._olen
        )

    @property
    def full(self):
        """True exactly when append() would refuse: one more event of the largest size might
        not fit without a segment beyond the capacity."""
        if len(self._segs) < self._max_segs:
            return False
        if self._roll:
            return True
        return (
            self._cur_size + self._tlen + self._olen + _FRAME + E.MAX_ENCODED > self._event_limit
        )

    # -- writing -------------------------------------------------------------------------------

    def _write(self, data, limit):
        """Makes data (whole records) durable: appended to the tail while it stays small,
        otherwise moved with the tail into the last segment (or a new one)."""
        tail_ok = self._segs and not self._roll and not self._tail_stale
        if tail_ok and self._tlen + len(data) <= self.TAIL_BYTES:
            try:
                if self._tail is None:
                    self._tail = open(self.directory + "/" + _TAIL, "ab")
                self._tail.write(data)
                self._tail.flush()
            except Exception:
                self._broken()
                raise
            self._tail_keep(data)
            return
        tail = memoryview(self._tbuf)[: self._tlen]
        if self._roll or not self._segs:
            self._new_segment(tail, data)
        elif self._cur_size + len(tail) + len(data) > limit:
            self._new_segment(tail, data)
        else:
            try:
                if self._cur is None:
                    self._cur = open(self._path(self._segs[-1][0]), "ab")
                self._cur.write(tail)
                self._cur.write(data)
                self._cur.flush()
            except Exception:
                self._broken()
                raise
            self._cur_size += len(tail) + len(data)
        self._empty_tail()

    def _empty_tail(self):
        """The tail's records are in a segment now. If emptying the file fails (or the power goes
        first) its records are copies that open() skips."""
        self._tlen = 0
        self._close_tail()
        try:
            open(self.directory + "/" + _TAIL, "wb").close()
            self._tail_stale = False
        except OSError:
            self._tail_stale = True

    def _close_tail(self):
        f, self._tail = self._tail, None
        if f is not None:
            try:
                f.close()
            except Exception:
                pass

    def _new_segment(self, tail, data):
        snap = self._snapshot_fn()
        if len(snap) > 65535 - _SNAP_HEAD or len(snap) > self.segment_bytes // 4:
            raise ValueError("journal: snapshot of {} bytes is too large".format(len(snap)))
        self._close()
        num = self._next_num
        self._next_num += 1
        rec = bytearray(_HDR + _SNAP_HEAD + len(snap))
        rec[_HDR] = _SNAPSHOT
        struct.pack_into("<II", rec, _HDR + 1, self.committed, self.acked)
        rec[_HDR + _SNAP_HEAD :] = snap
        mv = memoryview(rec)
        struct.pack_into("<H", rec, 0, len(rec) - _HDR)
        struct.pack_into("<I", rec, 2, crc32(mv[_HDR:], crc32(mv[0:2])))
        path = self._path(num)
        try:
            f = open(path, "wb")
            self._cur = f
            f.write(rec)
            f.write(tail)
            f.write(data)
            f.flush()
        except Exception:
            self._broken()
            self._remove(num)  # if it cannot go now, open() drops or voids it later
            raise
        self._segs.append([num, self.committed])
        self._cur_size = len(rec) + len(tail) + len(data)
        self._roll = False
        self._drop()

    def _broken(self):
        """A write failed: what reached flash after the last good record is unknown, so nothing
        more goes into this segment (the next write starts a new one)."""
        self._close()
        self._close_tail()
        self._roll = True

    def _close(self):
        f, self._cur = self._cur, None
        if f is not None:
            try:
                f.close()
            except Exception:
                pass

    def _drop(self):
        """Deletes the oldest segments while every event in them is acknowledged (the next
        segment's snapshot covers only acknowledged seqs). The last segment always stays: its
        snapshot keeps seq and the acked mark when everything else is gone."""
        segs = self._segs
        while len(segs) > 1 and segs[1][1] <= self.acked:
            if not self._remove(segs[0][0]):
                break
            segs.pop(0)

    def _remove(self, num):
        try:
            os.remove(self._path(num))
            return True
        except OSError:
            return False

    # -- reading ---------------------------------------------------------------------------------

    def unacked(self, after_seq=0):
        """Events on flash with seq > after_seq and > acked, in seq order, read one at a time."""
        lo = max(after_seq, self.acked)
        hi = self.committed
        segs = [s[:] for s in self._segs]
        for i in range(len(segs)):
            # events of a segment beyond the next one's snapshot were never committed (a write
            # that failed): the next segment holds the real ones
            limit = segs[i + 1][1] if i + 1 < len(segs) else hi
            if limit <= lo:
                continue
            for ev in self._events_in(segs[i][0], lo, min(limit, hi)):
                lo = ev.seq
                yield ev
        for ev in self._tail_events(lo, hi):
            yield ev

    def _events_in(self, num, lo, hi):
        """Events of segment num with lo < seq <= hi."""
        if hi <= lo:
            return
        # Where the last read stopped: a reader going forward (the link's upload, batch after
        # batch) carries on there instead of reading the segment again from its start.
        # Segments are append-only and their numbers never reused, so the offset stays good.
        start = 0
        if self._h_num == num and self._h_seq <= lo:
            start = self._h_off
        records = self._records(self._path(num), start)
        try:
            for kind, off, n in records:
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
                self._h_num = num
                self._h_off = off + _HDR + n
                self._h_seq = seq
                yield ev
                if seq == hi:
                    return
        finally:
            records.close()

    def _records(self, path, start=0):
        """Yields (kind, offset, body length) for each good record of segment num from offset
        start (a record's first byte), stopping at the first bad one. Bodies that fit are in
        self._rbuf[_HDR:] when yielded; larger ones (big snapshots) are checked chunk by chunk
        and must be read again by the caller."""
        try:
            f = open(path, "rb")
        except OSError:
            return
        buf = self._rbuf
        mv = self._rmv
        room = len(buf) - _HDR
        off = start
        try:
            if start:
                f.seek(start)
            while True:
                if f.readinto(mv[:_HDR]) != _HDR:
                    return
                n, crc = struct.unpack_from("<HI", buf, 0)
                if n == 0:
                    return
                c = crc32(mv[0:2])
                left = n
                kind = -1
                while left:
                    chunk = min(left, room)
                    if f.readinto(mv[_HDR : _HDR + chunk]) != chunk:
                        return
                    if kind < 0:
                        kind = buf[_HDR]
                    c = crc32(mv[_HDR : _HDR + chunk], c)
                    left -= chunk
                if c & 0xFFFFFFFF != crc:
                    return
                if kind == _EVENT and n < 6 or kind == _ACK and n != 5:
                    return
                if kind == _SNAPSHOT and n < _SNAP_HEAD:
                    return
                yield kind, off, n
                off += _HDR + n
        finally:
            f.close()

    def _snapshot_head(self, num):
        """(covered seq, acked) of the snapshot that starts segment num, or None."""
        records = self._records(self._path(num))
        try:
            for kind, _off, n in records:
                if kind != _SNAPSHOT:
                    return None
                if n <= len(self._rbuf) - _HDR:
                    return struct.unpack_from("<II", self._rbuf, _HDR + 1)
                return self._head(num)  # a big snapshot was read in chunks: read its head again
            return None
        finally:
            records.close()

    def _head(self, num):
        with open(self._path(num), "rb") as f:
            f.seek(_HDR + 1)
            return struct.unpack("<II", f.read(8))

    def _read_snapshot(self, num):
        with open(self._path(num), "rb") as f:
            head = f.read(_HDR)
            n = struct.unpack_from("<H", head, 0)[0]
            f.seek(_HDR + _SNAP_HEAD)
            return f.read(n - _SNAP_HEAD)

    def _path(self, num):
        return "{}/{:08x}{}".format(self.directory, num, _SUFFIX)

    def close(self):
        self._close()
        self._close_tail()


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1
