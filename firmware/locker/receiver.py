# Receiving a `config` bundle (locker/bundle.py has the format): streamed to
# `config.new` with its MAC computed on the way, verified, then renamed over config.bin in one
# step. Loaded only while a bundle arrives (the locker unloads it afterwards: docs/memory.md).
import os
import struct

from locker import mac
from locker.bundle import (
    CURRENT,
    FIXED,
    HASH_LEN,
    INCOMING,
    MAC_LEN,
    MAX_HEADER,
    PERSON_MAX,
    RECORD,
    RULE,
    BundleError,
    _compare,
    _declared_size,
    _read_header,
)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class Receiver:
    """Streams one bundle to `directory/config.new`: write(chunk) ..., then finish() or abort().

    Only the last 32 bytes seen (the candidate MAC) and the 20-byte fixed header are kept in RAM.
    """

    MAX_HEADER = MAX_HEADER

    def __init__(self, directory, config_key, locker_id, current_version, max_bytes):
        self._dir = directory
        self._path = directory + "/" + INCOMING
        self._locker = locker_id
        self._current = current_version
        self._max = max_bytes
        self._mac = mac.HMAC(config_key)
        self._tail = bytearray(MAC_LEN)
        self._ntail = 0
        self._fixed = bytearray(FIXED)
        self._nfixed = 0
        self._declared = None
        self.received = 0
        self.failed = None  # the reason, once refused
        self._f = open(self._path, "wb")

    def _fail(self, reason):
        self.abort()
        self.failed = reason
        raise BundleError(reason)

    def abort(self):
        """Drops what was received (connection lost, bundle refused); config.bin is untouched."""
        if self.failed is None:
            self.failed = "truncated"  # nothing more will come
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
        _remove(self._path)

    def _emit(self, data):
        # `data` is part of the signed body: to the MAC, to flash, and the fixed header noted.
        self._mac.update(data)
        try:
            self._f.write(data)
        except OSError:  # no room on flash for it beside config.bin and the journal
            self._fail("too_large")

    def _check_fixed(self):
        # Not yet authenticated: this only refuses early what could never be accepted.
        size = _declared_size(self._fixed)
        if size is None:
            self._fail("malformed")
        hlen = struct.unpack_from(">I", self._fixed, 16)[0]
        if size > self._max or hlen > self.MAX_HEADER:
            self._fail("too_large")
        # The broker hands the retained bundle over again on every reconnect: one that is not
        # newer than what runs is dropped here, before a byte of it is written to flash.
        current = self._current
        if current is not None and struct.unpack_from(">I", self._fixed, 8)[0] <= current:
            self._fail("stale")
        self._declared = size

    def write(self, chunk):
        if self._f is None:
            raise BundleError(self.failed or "malformed")  # refused or finished already
        n = len(chunk)
        self.received += n
        if self.received > self._max:
            self._fail("too_large")
        if self._declared is not None and self.received > self._declared:
            self._fail("malformed")
        mv = memoryview(chunk)
        if self._nfixed < FIXED:  # the first bytes received are the fixed header
            k = min(FIXED - self._nfixed, n)
            self._fixed[self._nfixed : self._nfixed + k] = mv[:k]
            self._nfixed += k
            if self._nfixed == FIXED:
                self._check_fixed()
        emit = self._ntail + n - MAC_LEN
        if emit > 0:
            # the oldest held-back bytes and the head of this chunk are no longer the tail
            t = min(emit, self._ntail)
            if t:
                self._emit(memoryview(self._tail)[:t])
                self._tail[: self._ntail - t] = self._tail[t : self._ntail]
                self._ntail -= t
            c = emit - t
            if c:
                self._emit(mv[:c])
            mv = mv[c:]
        self._tail[self._ntail : self._ntail + len(mv)] = mv
        self._ntail += len(mv)

    def finish(self):
        """Verifies the whole bundle and makes it current; returns its version."""
        if self._f is None:
            raise BundleError(self.failed or "malformed")  # refused, aborted or finished already
        self._f.write(memoryview(self._tail)[: self._ntail])  # the MAC, kept for load()
        self._f.close()
        self._f = None
        if self._ntail < MAC_LEN or self._nfixed < FIXED:
            self._fail("truncated")
        if not mac.equal(self._mac.digest(), self._tail):
            if self._declared is not None and self.received < self._declared:
                self._fail("truncated")
            self._fail("bad_signature")
        if self.received != self._declared:
            self._fail("malformed")
        try:
            with open(self._path, "rb") as f:
                version, header = _read_header(f)
                _check_cards(f, header["_ncards"])
                _check_rules(f, header["_nrules"])
        except BundleError as e:
            self._fail(e.reason)
        except (OSError, ValueError, KeyError, TypeError):
            self._fail("malformed")
        if header.get("locker") != self._locker:
            self._fail("wrong_locker")
        if self._current is not None and version <= self._current:
            self._fail("stale")
        os.rename(self._path, self._dir + "/" + CURRENT)
        return version


def _check_cards(f, ncards):
    """Card records well formed and strictly ascending by card_hash (binary search needs it)."""
    rec = bytearray(RECORD)
    prev = bytearray(HASH_LEN)
    for i in range(ncards):
        if f.readinto(rec) != RECORD:
            raise BundleError("truncated")
        if i and _compare(rec, prev) <= 0:
            raise BundleError("malformed")
        role, _, _, plen = rec[16], rec[17], rec[18], rec[19]
        if not 1 <= role <= 5 or plen > PERSON_MAX:
            raise BundleError("malformed")
        prev[:] = memoryview(rec)[:HASH_LEN]


def _check_rules(f, nrules):
    """Rule records (locker/exceptions.py) well formed and in order of (person, kind): the
    locker finds a person's by binary search."""
    rec = bytearray(RULE)
    prev = bytearray(30)
    for i in range(nrules):
        if f.readinto(rec) != RULE:
            raise BundleError("truncated")
        if rec[0] == 0 or rec[0] > PERSON_MAX or not 1 <= rec[29] <= 3 or rec[31] > 4:
            raise BundleError("malformed")
        if rec[56] > PERSON_MAX:
            raise BundleError("malformed")
        if i and bytes(rec[:30]) < bytes(prev):
            raise BundleError("malformed")
        prev[:] = memoryview(rec)[:30]
