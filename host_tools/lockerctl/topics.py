"""The MQTT topic layout (docs/protocol.md, Topics), built and read here only on the host.

Every locker has a root `lockers/<site>/<locker>/`; under it a locker publishes `event`, `status`
and `state` and reads `ack`, `config`, `cmd` and `firmware`. Firmware chunks, which every locker
of a site reads, are under `firmware/<site>/`.
"""

from __future__ import annotations

ROOT = "lockers"
FROM_LOCKER = ("event", "status", "state")  # a locker publishes these
TO_LOCKER = ("ack", "config", "cmd", "firmware")  # a locker reads these
ANY = "+"  # the single-level wildcard: every locker of the site


def locker_topic(site: str, locker: str, leaf: str) -> str:
    """`lockers/<site>/<locker>/<leaf>`; `locker` may be ANY for a subscription."""
    return f"{ROOT}/{site}/{locker}/{leaf}"


def parse(topic: str, site: str) -> tuple[str, str] | None:
    """`lockers/<site>/<locker>/<leaf>` -> (locker, leaf), or None for any other topic (another
    site's, another shape, an empty locker or leaf)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[1] != site or not parts[2] or not parts[3]:
        return None
    return parts[2], parts[3]


def chunk_topic(site: str, file_id: str, n: int) -> str:
    """Chunk `n` of the firmware file `file_id` (the start of its SHA-256, in hex)."""
    return f"firmware/{site}/{file_id}/{n}"
