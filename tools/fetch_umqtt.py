"""Fetch micropython-umqtt.simple from the package index into the firmware's build tree.

The package is an old source distribution that pip cannot prepare, so we ask pip where the file
is (it prints the address it resolved through its own configuration), fetch that file and take
`umqtt/simple.py` out of it. No address is written anywhere: the package tools resolve it.

    python tools/fetch_umqtt.py build/firmware/lib
"""

import io
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PACKAGE = "micropython-umqtt.simple"
MEMBER = "umqtt/simple.py"


def resolve_address() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                tmp,
                PACKAGE,
            ],
            capture_output=True,
            text=True,
        )
        # pip may have fetched it after all (newer pips); use the file if it is there.
        for f in Path(tmp).glob("*.tar.gz"):
            return f.as_uri()
    found = re.findall(r"(\S+?\.tar\.gz)", proc.stdout + proc.stderr)
    found = [a for a in found if "://" in a]
    if not found:
        raise SystemExit(
            f"fetch_umqtt: pip did not name a file for {PACKAGE}:\n{proc.stderr[-400:]}"
        )
    return found[-1]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: fetch_umqtt.py LIB_DIR")
    dest = Path(sys.argv[1]) / "umqtt"
    address = resolve_address()
    with urllib.request.urlopen(address, timeout=60) as resp:
        data = resp.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/" + MEMBER)), None)
        if member is None:
            raise SystemExit(f"fetch_umqtt: {MEMBER} not in {address.rsplit('/', 1)[-1]}")
        source = tar.extractfile(member).read()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "__init__.py").write_bytes(b"")
    (dest / "simple.py").write_bytes(source)
    print(f"umqtt.simple -> {dest / 'simple.py'}")


if __name__ == "__main__":
    main()
