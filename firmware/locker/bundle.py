# The signed configuration bundle (docs/protocol.md, `config`): received in chunks straight to
# flash with its MAC computed on the way, verified, then renamed over config.bin in one step.
# Cards are read back from flash by binary search; the card table is never held in RAM.
# Receiving a bundle is locker.receiver's job, a module loaded only while one arrives (it
# imports this module's format, never the other way).
import json
import struct

from locker import const, mac

MAGIC = b"CLCF"
FORMAT = const(1)
RECORD = const(48)  # card record size
FIXED = const(20)  # magic, format, record size, reserved, version, ncards, header length
MAC_LEN = const(32)
HASH_LEN = const(16)
PERSON_MAX = const(28)
FLAG_WALK_HOME = const(1)
FLAG_REVOKED = const(2)
ROLES = ("", "pupil", "staff", "slt", "office")  # role code -> name

CURRENT = "config.bin"
INCOMING = "config.new"

MAX_HEADER = const(16384)  # the header JSON is parsed in RAM: bound it
_FIXED_FMT = const(">4sBBHIII")
_BUF = const(256)  # read buffer for re-verifying a bundle's MAC


class BundleError(Exception):
    """A bundle was refused; `reason` is one word: bad_signature, malformed, wrong_locker,
    stale, too_large, truncated (the `config_rejected` event's reason)."""

    # A refusal the locker records itself (a stale one is no news): the MQTT client drops the
    # payload's rest without a traceback (locker/mqtt.py).
    refusal = True

    @property
    def reason(self):
        return self.args[0]


def _declared_size(fixed):
    """Total bundle size announced by the 20-byte fixed header, or None if it is not ours."""
    magic, fmt, rsize, _, _, ncards, hlen = struct.unpack(_FIXED_FMT, fixed)
    if magic != MAGIC or fmt != FORMAT or rsize != RECORD:
        return None
    return FIXED + hlen + ncards * RECORD + MAC_LEN


def _read_header(f):
    """Reads the fixed header and the JSON header from the start of f; returns (version, dict)."""
    fixed = f.read(FIXED)
    if len(fixed) != FIXED or _declared_size(fixed) is None:
        raise BundleError("malformed")
    _, _, _, _, version, ncards, hlen = struct.unpack(_FIXED_FMT, fixed)
    if hlen > MAX_HEADER:
        raise BundleError("too_large")
    raw = f.read(hlen)
    if len(raw) != hlen:
        raise BundleError("truncated")
    try:
        header = json.loads(raw.decode())
    except (ValueError, UnicodeError):
        raise BundleError("malformed") from None
    del raw
    if not isinstance(header, dict) or header.get("version") != version:
        raise BundleError("malformed")
    if not isinstance(header.get("locker"), str):
        raise BundleError("malformed")
    tt = header.get("timetable")
    grants = header.get("grants", [])
    if not (tt is None or isinstance(tt, dict)) or not isinstance(grants, list):
        raise BundleError("malformed")
    header["_ncards"] = ncards  # removed again by the caller
    header["_cards_at"] = FIXED + hlen
    return version, header


def _compare(buf, key):
    # bytes order of the first 16 bytes, without slicing (no allocation inside a lookup)
    for i in range(HASH_LEN):
        d = buf[i] - key[i]
        if d:
            return d
    return 0


class Card:
    """One card of the roster as the locker knows it."""

    def __init__(self, rec):
        self.hash = bytes(rec[:HASH_LEN])
        self.role = ROLES[rec[16]]
        self.year = rec[17]  # 0 when not a pupil
        flags = rec[18]
        self.walk_home = bool(flags & FLAG_WALK_HOME)
        self.revoked = bool(flags & FLAG_REVOKED)
        self.person = bytes(rec[20 : 20 + rec[19]]).decode()

    def __repr__(self):
        return "Card({}, {}, year={}, walk_home={}, revoked={})".format(
            self.person, self.role, self.year, self.walk_home, self.revoked
        )


class Bundle:
    """The configuration in force: header in RAM, card table read from flash on each lookup.

    Keeps config.bin open (littlefs and POSIX both keep an open file readable after a newer
    bundle is renamed over it); `close()` it when a newer Bundle replaces it.
    """

    def __init__(self, f, version, header):
        self._f = f
        self.version = version
        self.ncards = header.pop("_ncards")
        self._cards_at = header.pop("_cards_at")
        self.header = header
        self._rec = bytearray(RECORD)
        self._key = memoryview(self._rec)[:HASH_LEN]

    @property
    def timetable(self):
        return self.header.get("timetable")

    @property
    def grants(self):
        return self.header.get("grants") or []

    @classmethod
    def load(cls, directory, config_key=None):
        """The bundle in `directory/config.bin`, or None when there is none or it cannot be
        trusted (with config_key its MAC is checked again: flash can rot)."""
        try:
            return cls.open(directory + "/" + CURRENT, config_key)
        except (OSError, BundleError):
            return None

    @classmethod
    def open(cls, path, config_key=None):
        """Like load() but raises OSError when absent and BundleError(reason) when corrupt."""
        f = open(path, "rb")
        try:
            size = f.seek(0, 2)
            f.seek(0)
            if config_key is not None:
                _verify_file(f, config_key, size)
            version, header = _read_header(f)
            if size != header["_cards_at"] + header["_ncards"] * RECORD + MAC_LEN:
                raise BundleError("malformed")
            return cls(f, version, header)
        except BaseException:
            f.close()
            raise

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def lookup(self, card_hash):
        """The Card whose keyed hash is `card_hash` (16 bytes), or None."""
        f, key = self._f, self._key
        lo, hi = 0, self.ncards
        while lo < hi:
            mid = (lo + hi) >> 1
            f.seek(self._cards_at + mid * RECORD)
            f.readinto(key)
            d = _compare(key, card_hash)
            if d < 0:
                lo = mid + 1
            elif d > 0:
                hi = mid
            else:
                f.readinto(memoryview(self._rec)[HASH_LEN:])
                return Card(self._rec)
        return None


def _verify_file(f, key, size):
    if size < FIXED + MAC_LEN:
        raise BundleError("truncated")
    h = mac.HMAC(key)
    buf = bytearray(_BUF)
    mv = memoryview(buf)
    left = size - MAC_LEN
    while left:
        n = f.readinto(mv[: min(left, _BUF)])
        if not n:
            raise BundleError("truncated")
        h.update(mv[:n])
        left -= n
    tag = f.read(MAC_LEN)
    f.seek(0)
    if not mac.equal(h.digest(), tag):
        raise BundleError("bad_signature")
