"""Signed remote commands (docs/protocol.md, `cmd`): the host signs, the locker's
`locker/cmdauth.py` verifies."""

import json

from . import keys

BAY_WORDS = ("all", "staff")


def canonical(locker_id: str, cmd_id: int, op: str, bay, by: str, exp: int, reason: str) -> bytes:
    """<locker>|<id>|<op>|<bay>|<by>|<exp>|<reason> in UTF-8: what the MAC covers."""
    return f"{locker_id}|{cmd_id}|{op}|{bay}|{by}|{exp}|{reason}".encode()


def _check_bay(bay) -> None:
    if isinstance(bay, bool) or not (isinstance(bay, int) or bay in BAY_WORDS):
        raise ValueError(f"bay must be a number, 'all' or 'staff', not {bay!r}")


def sign_command(
    secret: bytes, locker_id: str, cmd_id: int, op: str, bay, by: str, reason: str, exp: int
) -> bytes:
    """The JSON payload of a signed command for the locker whose secret this is."""
    _check_bay(bay)
    for name, value in (("locker", locker_id), ("op", op), ("by", by)):
        if not isinstance(value, str) or "|" in value:
            raise ValueError(f"command {name} {value!r} must be text without '|'")
    if not isinstance(reason, str):
        raise ValueError("command reason must be text")
    for name, number in (("id", cmd_id), ("exp", exp)):
        if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
            raise ValueError(f"command {name} must be a positive integer, not {number!r}")
    tag = keys.hmac_sha256(
        keys.cmd_key(secret), canonical(locker_id, cmd_id, op, bay, by, exp, reason)
    )
    cmd = {
        "id": cmd_id,
        "op": op,
        "bay": bay,
        "by": by,
        "reason": reason,
        "exp": exp,
        "mac": tag.hex(),
    }
    return json.dumps(cmd, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
