# The journal: every event the locker records, on flash before it takes effect, kept until the
# host acknowledges it. Format and reasoning: docs/journal.md.
#
# What every layout shares (Base): seqs, the acked mark, records framed as
#     u16 length | u32 crc32(length bytes + body) | body (length bytes)
# whose body starts with its kind: EVENT (an encoded Event, locker/events.py), SNAPSHOT (first in
# every segment: the seq it covers, the acked mark and the caller's bay state) or ACK (the acked
# mark); the reserve and the full tests; and two small files in the journal's directory on the
# filesystem: `jid`, the journal's id (16 hex digits drawn when the journal is formatted), and
# `checkpoint`, the host's latest signed checkpoint note with the acked mark when it was stored.
# Both are replaced whole (written to a temporary file, then renamed over the old one: atomic on
# littlefs). The layouts: locker/ring.py (a ring of sectors on a region of its own, no erase in a
# commit) and locker/segments.py (segment files on littlefs, for a board without that region).

import os
import struct
from binascii import crc32, hexlify, unhexlify

from locker import const
from locker import events as E

_EVENT = const(1)
_SNAPSHOT = const(2)
_ACK = const(3)
_HDR = const(6)  # u16 length, u32 crc
_SNAP_HEAD = const(9)  # kind, u32 covered seq, u32 acked
_FRAME = const(_HDR + 1)  # header, kind; then the body: events.MAX_ENCODED bytes at most
_JID = const("jid")
_CHECKPOINT = const("checkpoint")
# The journal's flash budget by default, whatever the layout: 96 blocks of 4 KiB (the host bounds
# how far ahead of its watermark a seq can be by it: lockerctl/ingest.py JOURNAL_BYTES)
DEFAULT_CAPACITY = 393216
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

    # -- the journal's id ---------------------------------------------------------------------

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
