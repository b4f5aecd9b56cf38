"""Signed remote commands (docs/protocol.md, `cmd`): the host signs, the locker's
`locker/cmdauth.py` verifies. `verify_command` mirrors the firmware for tests and diagnostics."""

import json

from . import keys

BAY_WORDS = ("all", "staff")
MAC_HEX = 64


class CommandError(ValueError):
    """A command refused; `reason` is malformed, bad_signature, replayed or expired."""

    @property
    def reason(self) -> str:
        return self.args[0]


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


def verify_command(
    payload: bytes, secret: bytes, locker_id: str, last_id: int, now: int | None
) -> dict:
    """What the locker does with a `cmd` payload: the command, or CommandError(reason)."""
    try:
        cmd = json.loads(payload)
    except (ValueError, TypeError):
        raise CommandError("malformed") from None
    if not isinstance(cmd, dict):
        raise CommandError("malformed")
    types = {"id": int, "op": str, "by": str, "reason": str, "exp": int, "mac": str}
    if any(type(cmd.get(name)) is not typ for name, typ in types.items()):
        raise CommandError("malformed")
    bay = cmd.get("bay")
    if not (type(bay) is int or bay in BAY_WORDS):
        raise CommandError("malformed")
    if "|" in cmd["op"] or "|" in cmd["by"] or len(cmd["mac"]) != MAC_HEX:
        raise CommandError("malformed")
    try:
        tag = bytes.fromhex(cmd["mac"])
    except ValueError:
        raise CommandError("malformed") from None
    want = keys.hmac_sha256(
        keys.cmd_key(secret),
        canonical(locker_id, cmd["id"], cmd["op"], bay, cmd["by"], cmd["exp"], cmd["reason"]),
    )
    if not keys.equal(want, tag):
        raise CommandError("bad_signature")
    if cmd["id"] <= last_id:
        raise CommandError("replayed")
    if now is not None and now > cmd["exp"]:
        raise CommandError("expired")
    return cmd
