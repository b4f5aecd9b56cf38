"""Put the compiled firmware and one locker's device.json onto a board with mpremote.

    python tools/flash.py --port /dev/ttyUSB0 --device device.json --build build/firmware

Copies `main.py`, every compiled module (`.mpy`: app.mpy, the composition root, and the
packages keeping their directories: locker/, hal/, drivers/, lib/umqtt/), the pin map
(hardware/pinmap.json, as `pinmap.json`) and DEVICE as `device.json` (and the site CA
certificate device.json's broker.ca names, for TLS, from beside DEVICE). mpremote connects with
`resume`: no soft reset before copying, so the board's running state does not matter and it also
works against the unix port's REPL on a pseudo-terminal.
Reset the board afterwards (the EN button, or `mpremote reset`) to start the locker.

With `--frozen` (the firmware is frozen into the MicroPython image, see firmware/manifest.py)
only main.py, pinmap.json and device.json are copied.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_FOR_BOARD = {"manifest.mpy", "manifest.py"}  # the freezing recipe, not firmware


class FlashError(Exception):
    pass


def find_mpremote() -> str:
    here = Path(sys.executable).parent / "mpremote"
    if here.exists():
        return str(here)
    found = shutil.which("mpremote")
    if not found:
        raise FlashError("mpremote not found (make deps installs it into .venv)")
    return found


def check_device(path: Path) -> dict:
    try:
        device = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FlashError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise FlashError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(device, dict):
        raise FlashError(f"{path}: expected a JSON object")
    for key in ("locker_id", "bays", "secret"):
        if key not in device:
            raise FlashError(f"{path}: missing {key!r} (lockerctl locker add prints a full one)")
    return device


def plan(
    build: Path, device: Path, pinmap: Path, frozen: bool = False, ca: str | None = None
) -> list[tuple[Path, str]]:
    """(local file, remote path) for everything that goes onto the board, in copy order."""
    main = build / "main.py"
    if not main.is_file():
        raise FlashError(f"{build}: no main.py (run `make firmware` first)")
    files = [(main, "main.py")]
    if not frozen:
        for mpy in sorted(build.rglob("*.mpy")):
            rel = mpy.relative_to(build)
            if rel.name in NOT_FOR_BOARD and len(rel.parts) == 1:
                continue
            files.append((mpy, rel.as_posix()))
        if len(files) == 1:
            raise FlashError(f"{build}: no compiled modules (run `make firmware` first)")
    if not pinmap.is_file():
        raise FlashError(f"{pinmap}: pin map not found")
    files.append((pinmap, "pinmap.json"))
    if ca:  # the site CA for a TLS broker: next to device.json here, by the same name there
        if "/" in ca or ca.startswith("."):
            raise FlashError(f"{device}: broker.ca must be a plain file name, not {ca!r}")
        local = device.parent / ca
        if not local.is_file():
            raise FlashError(f"{local}: not found (broker.ca in {device} names it)")
        files.append((local, ca))
    files.append((device, "device.json"))
    return files


def remote_dirs(files: list[tuple[Path, str]]) -> list[str]:
    dirs = set()
    for _, remote in files:
        parts = remote.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def command(mpremote: str, port: str, files: list[tuple[Path, str]]) -> list[str]:
    dirs = remote_dirs(files)
    # one exec makes every directory, tolerating those that exist (fs mkdir would stop the chain)
    mkdirs = "import os\nfor d in {!r}:\n try:\n  os.mkdir(d)\n except OSError:\n  pass".format(
        tuple(dirs)
    )
    cmd = [mpremote, "connect", port, "resume", "exec", mkdirs]
    for local, remote in files:
        cmd += ["+", "fs", "cp", str(local), ":" + remote]
    return cmd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", required=True, help="serial port (or pseudo-terminal) of the board")
    ap.add_argument("--device", required=True, type=Path, help="this locker's device.json")
    ap.add_argument("--build", default=ROOT / "build" / "firmware", type=Path)
    ap.add_argument("--pinmap", default=ROOT / "hardware" / "pinmap.json", type=Path)
    ap.add_argument("--frozen", action="store_true", help="firmware is frozen into the image")
    ap.add_argument("--dry-run", action="store_true", help="print the mpremote command only")
    args = ap.parse_args(argv)
    try:
        device = check_device(args.device)
        broker = device.get("broker") or {}
        ca = broker.get("ca") if isinstance(broker, dict) else None
        files = plan(args.build, args.device, args.pinmap, args.frozen, ca)
        if device.get("board") != "esp32":
            print(
                f"flash: note: {args.device} has board {device.get('board')!r}; "
                'a real locker bank needs "board": "esp32"',
                file=sys.stderr,
            )
        cmd = command(find_mpremote() if not args.dry_run else "mpremote", args.port, files)
        if args.dry_run:
            print(" ".join(cmd))
            return 0
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            raise FlashError(f"mpremote failed (exit {proc.returncode}) talking to {args.port}")
    except FlashError as e:
        print(f"flash: {e}", file=sys.stderr)
        return 2
    print(f"flash: {len(files)} files copied to {args.port} for locker {device['locker_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
