# Signed commands from the host (docs/protocol.md, `cmd`): MAC over a canonical string, a strictly
# increasing id kept on flash (no replay, even across reboots) and an expiry when the clock is
# trusted.
import json
import os
from binascii import unhexlify

from locker import const
from locker.mac import HMAC, equal

# fields the JSON must have, by type ("bay" is checked on its own: a number or a word)
_INT_FIELDS = const(("id", "exp"))
_STR_FIELDS = const(("op", "by", "reason", "mac"))
_BAY_WORDS = const(("all", "staff"))


class CommandError(Exception):
    """A command refused; args[0] is the reason: malformed, bad_signature, replayed, expired."""

    @property
    def reason(self):
        return self.args[0]


def canonical(locker_id, cmd_id, op, bay, by, exp, reason):
    """What the MAC covers: <locker>|<id>|<op>|<bay>|<by>|<exp>|<reason>, UTF-8. Only `reason`
    (last) may contain '|', so no two commands share a canonical form."""
    return _head(locker_id, cmd_id, op, bay, by, exp) + reason.encode()


def _head(locker_id, cmd_id, op, bay, by, exp):
    return "{}|{}|{}|{}|{}|{}|".format(locker_id, cmd_id, op, bay, by, exp).encode()


def verify(payload, cmd_key, locker_id, last_id, now):
    """The command as a dict if it is genuine, fresh and new; CommandError(reason) otherwise.

    `now` is unix seconds, or None while the clock is not trusted (expiry cannot be judged).
    """
    try:
        cmd = json.loads(payload)
    except (ValueError, TypeError, UnicodeError):
        raise CommandError("malformed") from None
    if not isinstance(cmd, dict):
        raise CommandError("malformed")
    for name in _INT_FIELDS:
        if type(cmd.get(name)) is not int:  # noqa: E721 - bool is not an int here
            raise CommandError("malformed")
    for name in _STR_FIELDS:
        if type(cmd.get(name)) is not str:  # noqa: E721
            raise CommandError("malformed")
    bay = cmd.get("bay")
    if not (type(bay) is int or bay in _BAY_WORDS):  # noqa: E721
        raise CommandError("malformed")
    if "|" in cmd["op"] or "|" in cmd["by"] or len(cmd["mac"]) != 64:
        raise CommandError("malformed")
    try:
        tag = unhexlify(cmd["mac"])
    except ValueError:
        raise CommandError("malformed") from None
    h = HMAC(cmd_key)
    # the canonical form in two parts: a checkpoint's 700-byte reason is not copied twice more
    h.update(_head(locker_id, cmd["id"], cmd["op"], bay, cmd["by"], cmd["exp"]))
    h.update(cmd["reason"].encode())
    if not equal(h.digest(), tag):
        raise CommandError("bad_signature")
    if cmd["id"] <= last_id:
        raise CommandError("replayed")
    if now is not None and now > cmd["exp"]:
        raise CommandError("expired")
    return cmd


class Counter:
    """The id of the last accepted command, on flash. Advance it before acting on a command."""

    def __init__(self, path):
        self.path = path
        self.last = 0
        try:
            with open(path) as f:
                text = f.read().strip()
            self.last = int(text) if text else 0
        except (OSError, ValueError):
            # none accepted yet. (Written by tmp + rename, it is never torn; a rotten file must
            # not stop the locker from booting: expiry still bounds what a replay could do.)
            pass

    def advance(self, cmd_id):
        if cmd_id <= self.last:
            raise ValueError("command counter only moves forward")
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(str(cmd_id).encode() + b"\n")
        os.rename(tmp, self.path)
        self.last = cmd_id
