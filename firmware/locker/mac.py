# HMAC-SHA256 over hashlib.sha256, which on MicroPython offers update() and digest() only (no
# copy(), no hmac module). The inner hash is fed as data arrives, so a message of any length (a
# config bundle streamed to flash) is authenticated without being held in RAM.
import hashlib

from locker import const

_BLOCK = const(64)

# Key-derivation labels (docs/protocol.md, Keys): one key per purpose.
CARD = b"classlocker card"
CONFIG = b"classlocker config"
CMD = b"classlocker cmd"
# and message_keys() below: events' and acks' MACs, keys HMAC-SHA256(secret, b"event") and
# (secret, b"ack"), the first 16 bytes of the HMAC as hex (locker/events.py and locker/link.py).
# Nothing else in the firmware spells a label.


class HMAC:
    """Incremental HMAC-SHA256: HMAC(key).update(a).update(b) ... digest() once."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        pad = bytearray(_BLOCK)
        pad[: len(key)] = key
        for i in range(_BLOCK):
            pad[i] ^= 0x36
        self._inner = hashlib.sha256(pad)
        for i in range(_BLOCK):
            pad[i] ^= 0x36 ^ 0x5C  # ipad -> opad in place: one buffer
        self._opad = pad

    def update(self, data):
        self._inner.update(data)
        return self

    def digest(self):
        """The 32-byte MAC. Call once: MicroPython's sha256 cannot be updated after digest()."""
        outer = hashlib.sha256(self._opad)
        outer.update(self._inner.digest())
        return outer.digest()


def hmac_sha256(key, msg):
    h = HMAC(key)
    h.update(msg)
    return h.digest()


def message_keys(secret):
    """The locker's (event key, ack key): the MACs of its events and of the host's acks."""
    return derive(secret, b"event"), derive(secret, b"ack")


def derive(secret, label):
    """A key for one purpose from the locker's 32-byte secret: HMAC-SHA256(secret, label)."""
    return hmac_sha256(secret, label)


def equal(a, b):
    """Constant-time comparison of two byte strings (time depends on length only)."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
