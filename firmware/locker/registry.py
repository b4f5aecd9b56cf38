# Card lookup: a card is known to the locker only by HMAC(card_key, uid)[:16] (docs/protocol.md,
# Keys). The roster stays on flash in the bundle's sorted card table; nothing per card is in RAM.
from binascii import unhexlify

from locker.mac import HMAC


def parse_uid(text):
    """A UID from 8 or 14 hex digits (4- or 7-byte card) to bytes; ValueError otherwise."""
    text = text.strip()
    if len(text) not in (8, 14):
        raise ValueError("card UID must be 8 or 14 hex digits")
    # unhexlify checks the digits: iterating over the str would intern each character seen as a
    # one-letter name (MicroPython does), a few more of the heap's interned names for good.
    try:
        return unhexlify(text)
    except ValueError:
        raise ValueError("card UID must be 8 or 14 hex digits") from None


class Registry:
    def __init__(self, card_key):
        self._key = card_key
        self.bundle = None

    def use(self, bundle):
        """Looks cards up in `bundle` (a locker.bundle.Bundle, or None: every card unknown);
        closes the bundle used before."""
        old, self.bundle = self.bundle, bundle
        if old is not None and old is not bundle:
            old.close()

    def card_hash(self, uid):
        h = HMAC(self._key)
        h.update(uid)
        return h.digest()[:16]

    def lookup(self, uid):
        """The Card of raw UID bytes, or None when unknown (or no configuration yet)."""
        if self.bundle is None:
            return None
        return self.bundle.lookup(self.card_hash(uid))
