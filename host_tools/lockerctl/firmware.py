"""Firmware offers (docs/protocol.md, `firmware`; docs/fleet.md): a build's files, a manifest
signed for one locker with that locker's key, and the chunks the locker pulls.

The locker's side is `firmware/locker/update.py`; `verify_offer` mirrors it for tests and
diagnostics. Pure apart from `collect_build`, which reads the build directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import keys, topics

FIRMWARE = b"classlocker firmware"  # the key-derivation label of offers
CHUNK = 2048  # bytes of a chunk message (the locker holds one chunk at a time)
MAX_OFFER = 8192  # an offer longer than this is refused by the locker (too_large)
MAX_FILES = 128
MAX_FILE = 262144
MAX_NAME = 96
FILE_ID_HEX = 32  # a file's chunks are found under the first 32 hex digits of its SHA-256
BOOT_LOADER = (  # stay on the board: never offered
    "main.py",
    "bootloader.py",
    "bootloader.mpy",
    "bootrecord.py",
    "bootrecord.mpy",
)
VERSION_FILE = "VERSION"  # written by publish: the version the slot runs as

_VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}")
_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class FirmwareError(ValueError):
    """A build or a version that cannot be offered (the message is for the user)."""


def version_key(text: str) -> tuple[int, ...]:
    """Dotted integers (1 to 4 parts of 1 to 9 digits) as a tuple without trailing zeros, so
    that "1.2" == "1.2.0" < "1.10"; FirmwareError otherwise."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise FirmwareError(f"version {text!r}: dotted integers, e.g. 1.4.0")
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def newer(a: str, b: str) -> bool:
    return version_key(a) > version_key(b)


def fw_key(secret: bytes) -> bytes:
    return keys.derive(secret, FIRMWARE)


@dataclass(frozen=True)
class File:
    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def chunks(self) -> int:
        return (len(self.data) + CHUNK - 1) // CHUNK


def check_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME or name in BOOT_LOADER:
        raise FirmwareError(f"file {name!r} cannot be offered")
    for part in name.split("/"):
        if not _PART.fullmatch(part) or part == "__pycache__":
            raise FirmwareError(
                f"file {name!r}: names of letters, digits, '.', '_' and '-' only (not hidden)"
            )
    return name


def collect_build(directory: Path, version: str) -> list[File]:
    """The files of a build directory (as `make firmware` writes it) to offer, in name order,
    with VERSION added: every regular file but the boot loader (main.py, bootloader.*),
    `__pycache__` and hidden files."""
    version_key(version)
    root = Path(directory)
    if not root.is_dir():
        raise FirmwareError(f"no directory {directory}")
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(p.startswith(".") or p == "__pycache__" for p in rel.split("/")):
            continue
        if path.is_symlink() or not path.is_file() or rel in (*BOOT_LOADER, VERSION_FILE):
            continue
        check_name(rel)
        data = path.read_bytes()
        if len(data) > MAX_FILE:
            raise FirmwareError(f"file {rel}: {len(data)} bytes, at most {MAX_FILE}")
        files.append(File(rel, data))
    if not any(f.name.endswith((".mpy", ".py")) for f in files):
        raise FirmwareError(f"{directory} holds no firmware (run make firmware)")
    files.append(File(VERSION_FILE, (version + "\n").encode()))
    if len(files) > MAX_FILES:
        raise FirmwareError(f"{len(files)} files, at most {MAX_FILES}")
    return files


def manifest(locker_id: str, site: str, version: str, files: list[File]) -> dict:
    return {
        "locker": locker_id,
        "site": site,
        "version": version,
        "chunk": CHUNK,
        "files": [[f.name, len(f.data), f.sha256] for f in files],
    }


def sign_offer(secret: bytes, man: dict) -> bytes:
    """The offer's payload: 64 hex digits of HMAC-SHA256(firmware key, body), a newline, and
    the body (the manifest's JSON, UTF-8) exactly as MACed."""
    body = json.dumps(man, separators=(",", ":")).encode()
    tag = keys.hmac_sha256(fw_key(secret), body).hex()
    payload = tag.encode() + b"\n" + body
    if len(payload) > MAX_OFFER:
        raise FirmwareError(f"the manifest is {len(payload)} bytes, at most {MAX_OFFER}")
    return payload


class OfferRefused(ValueError):
    @property
    def reason(self) -> str:
        return self.args[0]


def verify_offer(payload: bytes, secret: bytes, locker_id: str, running: str) -> dict:
    """What the locker does with an offer: the manifest, or OfferRefused(reason) for a payload
    it journals as `update_rejected`."""
    if len(payload) > MAX_OFFER:
        raise OfferRefused("too_large")
    if len(payload) < 66 or payload[64:65] != b"\n":
        raise OfferRefused("malformed")
    try:
        tag = bytes.fromhex(payload[:64].decode("ascii"))
    except ValueError:
        raise OfferRefused("malformed") from None
    body = payload[65:]
    if not keys.equal(keys.hmac_sha256(fw_key(secret), body), tag):
        raise OfferRefused("bad_signature")
    try:
        man = json.loads(body)
        version_key(man["version"])
        names = [check_name(f[0]) for f in man["files"]]
    except (ValueError, KeyError, TypeError, IndexError):
        raise OfferRefused("malformed") from None
    if VERSION_FILE not in names or len(set(names)) != len(names):
        raise OfferRefused("malformed")
    if man.get("locker") != locker_id:
        raise OfferRefused("wrong_locker")
    if not newer(man["version"], running):
        raise OfferRefused("downgrade")
    return man


def offer_topic(site: str, locker_id: str) -> str:
    return topics.locker_topic(site, locker_id, "firmware")


def chunk_topic(site: str, sha256: str, n: int) -> str:
    return topics.chunk_topic(site, sha256[:FILE_ID_HEX], n)


def chunk_messages(site: str, files: list[File]):
    """(topic, payload) of every chunk of every file (an empty file has none)."""
    for f in files:
        for n in range(f.chunks):
            yield chunk_topic(site, f.sha256, n), f.data[n * CHUNK : (n + 1) * CHUNK]
