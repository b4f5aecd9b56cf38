"""Signed checkpoints of the audit trail: what the host hands to the lockers and prints with
every export, so that a rewrite or a truncation of the trail is caught by whoever holds an older
one (Certificate Transparency's signed tree head, RFC 9162 §4.10, in the C2SP formats).

A checkpoint is a C2SP `tlog-checkpoint` body in a C2SP `signed-note`:

    classlocker/<site>                  origin (also the signing key's name)
    <N>                                 entries in the trail (every site of the store)
    <base64 of the 32-byte hash>        the chain's hash after entry N (`trail.py`)

    — classlocker/<site> <base64(key id || Ed25519 signature)>

The signature covers the three lines (with their newlines); the key id is the first 4 bytes of
SHA-256(key name || 0x0A || 0x01 || public key). The trail is a hash chain, not a Merkle tree:
"the entry at N has this hash" is checked by walking the chain (`Store.verify_trail_at`), which
`audit verify` does anyway; there are no inclusion or consistency proofs.

The Ed25519 key is made the first time it is needed and kept in the store (`host_keys`, beside
the lockers' secrets); only its public half is ever printed (`lockerctl audit key`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY = "checkpoint"  # the row of `host_keys`
ALG_ED25519 = b"\x01"
DASH = "\u2014 "  # a signature line starts with an em dash and a space
MAX_NOTE_BYTES = 700  # what a locker keeps (docs/protocol.md, `cmd` op `checkpoint`)


class CheckpointError(ValueError):
    """A note that is not a checkpoint signed by the key given: the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    head: str  # hex, as `trail` writes hashes
    note: str


def origin(site: str) -> str:
    return f"classlocker/{site}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public).digest()[:4]


def verifier_key(name: str, public: bytes) -> str:
    """The C2SP verifier key text: `<name>+<hex key id>+<base64(0x01 || public key)>`."""
    return f"{name}+{key_id(name, public).hex()}+{_b64(ALG_ED25519 + public)}"


def parse_verifier_key(text: str) -> tuple[str, bytes]:
    """(name, public key) from a verifier key; CheckpointError if it is not one."""
    try:
        name, kid, b64 = text.strip().split("+", 2)  # base64 may hold "+" too
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointError("not a verifier key (name+keyid+base64)") from None
    if len(raw) != 33 or raw[:1] != ALG_ED25519 or key_id(name, raw[1:]).hex() != kid:
        raise CheckpointError("not an Ed25519 verifier key, or its key id does not match")
    return name, raw[1:]


def new_key() -> tuple[bytes, bytes]:
    """(private, public) raw bytes of a new Ed25519 key."""
    k = Ed25519PrivateKey.generate()
    private = k.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    public = k.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return private, public


def host_key(store, site: str) -> tuple[bytes, bytes]:
    """The store's checkpoint key (made and kept the first time)."""
    return store.host_key(site, KEY, new_key)


def sign(private: bytes, site: str, size: int, head: str) -> str:
    """The signed note of a checkpoint of `size` entries whose chain hash is `head` (hex)."""
    name = origin(site)
    body = f"{name}\n{size}\n{_b64(bytes.fromhex(head))}\n"
    k = Ed25519PrivateKey.from_private_bytes(private)
    public = k.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    sig = k.sign(body.encode())
    return f"{body}\n{DASH}{name} {_b64(key_id(name, public) + sig)}\n"


def make(store, site: str) -> Checkpoint:
    """A checkpoint of the store's trail as its head now stands, signed with the host key."""
    private, public = host_key(store, site)
    size, head = store.trail_head()
    note = sign(private, site, size, head)
    return verify(note, public)


def verify(note: str, public: bytes) -> Checkpoint:
    """The checkpoint in `note` if a signature line of the key `public` (named as the note's
    origin) signs it; CheckpointError otherwise. Lines of other keys are ignored (C2SP)."""
    if not isinstance(note, str) or len(note.encode("utf-8", "replace")) > 4 * MAX_NOTE_BYTES:
        raise CheckpointError("not a checkpoint note")
    body, sep, sigs = note.rpartition("\n\n")
    if not sep or not body:
        raise CheckpointError("no blank line before the signatures")
    body += "\n"
    lines = body.split("\n")
    if len(lines) < 4:
        raise CheckpointError("a checkpoint has an origin, a size and a hash")
    name, size_text, head_b64 = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError(f"size {size_text[:20]!r} is not a number")
    try:
        head = base64.b64decode(head_b64, validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointError("the hash line is not base64") from None
    if len(head) != 32:
        raise CheckpointError("the hash is not 32 bytes")
    want_id = key_id(name, public)
    for line in sigs.split("\n"):
        if not line:
            continue
        if not line.startswith(DASH):
            raise CheckpointError("a signature line without its em dash")
        signer, _, b64 = line[len(DASH) :].rpartition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise CheckpointError("a signature that is not base64") from None
        if signer != name or raw[:4] != want_id or len(raw) != 68:
            continue  # another key's signature
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body.encode())
        except InvalidSignature:
            raise CheckpointError("the signature does not verify (forged or altered)") from None
        return Checkpoint(name, int(size_text), head.hex(), note)
    raise CheckpointError("not signed by this host's checkpoint key")
