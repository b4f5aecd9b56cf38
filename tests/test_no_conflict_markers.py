"""No file the repository tracks holds a merge's conflict markers (a merge resolved in a hurry
once left one in docs/dashboard.md)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)


def test_no_tracked_file_holds_conflict_markers():
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, names):
        path = ROOT / name.decode()
        if path.suffix in {".png", ".sqlite", ".mpy", ".bin", ".img"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [
            f"{name.decode()}:{text.count(chr(10), 0, m.start()) + 1}"
            for m in MARKER.finditer(text)
        ]
    assert not found, f"conflict markers: {found}"
