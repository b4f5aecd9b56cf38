"""The journal under real crashes: a MicroPython process appends and commits events on the
simulated flash, printing each seq once its commit has returned, and is killed (SIGKILL) at random
moments. After every kill a fresh process reopens the journal: every printed seq must be there,
in order, without a gap or a repeat, and the journal must go on from there. Both layouts: segment
files on littlefs (locker/journal.py) and the ring of sectors on a region of its own
(locker/ring.py), whose writer also erases ahead in idle(), so kills land in erases too."""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
# The journal as the board runs it, compiled by `make firmware` (which `make test` runs first): on
# a 96k heap, compiling it from source would take more RAM than the journal itself ever does.
FIRMWARE = ROOT / "build" / "firmware"

# Runs under MicroPython. argv: image, mode ("write" or "check"), firmware, layout ("littlefs" or
# "ring": then the image is the region, and the journal's small files go in a directory beside
# it). `write` reopens the journal,
# prints "open <last_seq> <acked>", then commits events forever (sometimes several in one commit,
# sometimes acknowledging), printing "c <seq>" after each commit returned. `check` prints every
# seq on flash ("s <seq>"), then "end <last_seq> <acked>".
SCRIPT = r"""
import os, sys
sys.path.insert(0, sys.argv[3])
from hal.sim import flash as simflash
state = [0]
ring = sys.argv[4] == "ring"
if ring:
    from locker.ring import Ring
    dev = simflash.FileBlockDevice(sys.argv[1], 4096, 16)
    j = Ring(sys.argv[1] + ".d", lambda: str(state[0]).encode(), dev, None, 8192)
else:
    from locker.segments import Journal
    simflash.mount(sys.argv[1], "/flash", block_count=64)
    j = Journal("/flash/journal", lambda: str(state[0]).encode(), segment_bytes=4096)
snap, events = j.open()
for ev in events:
    state[0] = ev.seq
if sys.argv[2] == "check":
    for ev in j.unacked(0):
        print("s", ev.seq, ev.person)
    print("end", j.last_seq, j.acked)
    sys.exit(0)
print("open", j.last_seq, j.acked)
n = 0
while True:
    n += 1
    batch = 1 + n % 3 if n % 5 == 0 else 1
    evs = [j.append("deposit", 1795549393 + n, 1 + n % 8, "P{:04d}".format(n % 1000))
           for i in range(batch)]
    j.commit()
    state[0] = j.committed
    for ev in evs:
        print("c", ev.seq)
    if n % 17 == 0 and j.committed > 40:
        j.ack(j.committed - 40)
    if n % 2:
        j.idle()
"""


def _check(image, script, layout):
    out = subprocess.run(
        [
            str(MICROPYTHON),
            "-X",
            "heapsize=96k",
            str(script),
            str(image),
            "check",
            str(FIRMWARE),
            layout,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    seqs = [int(line.split()[1]) for line in out if line.startswith("s ")]
    end = [line for line in out if line.startswith("end ")][0].split()
    return seqs, int(end[1]), int(end[2])


@pytest.mark.parametrize("layout", ["littlefs", "ring"])
def test_sigkill_at_random_moments_loses_no_committed_event(tmp_path, layout):
    script = tmp_path / "crash_writer.py"
    script.write_text(SCRIPT)
    image = tmp_path / "flash.img"
    rng = random.Random(20260903)
    printed = []  # every seq whose commit returned, over all runs
    acked = 0
    kills = 0
    for _ in range(20):
        proc = subprocess.Popen(
            [
                str(MICROPYTHON),
                "-X",
                "heapsize=96k",
                str(script),
                str(image),
                "write",
                str(FIRMWARE),
                layout,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        head = proc.stdout.readline().split()
        assert head and head[0] == "open", proc.stderr.read()
        # At least `want` commits before the kill may come, however busy the machine is (a
        # fixed delay measured the machine's speed, not the journal), then a random moment.
        want = rng.randint(10, 20)
        lines = []
        while sum(line.startswith("c ") for line in lines) < want:
            line = proc.stdout.readline()
            if not line:
                break  # it died by itself: the checks below say why
            lines.append(line)
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(proc.pid, signal.SIGKILL)
        kills += 1
        # The rest through the same buffered reader: `communicate()` reads the pipe's descriptor
        # directly and would drop lines `readline()` had already buffered.
        out = proc.stdout.read()
        proc.stderr.read()
        proc.wait(timeout=10)
        for line in "".join(lines + [out]).split("\n"):
            if line.startswith("c "):  # a line cut by the kill is not a whole "c <seq>"
                printed.append(int(line.split()[1]))
        seqs, last_seq, acked = _check(image, script, layout)
        assert printed == sorted(set(printed)), "a seq was printed twice"
        assert seqs == list(range(acked + 1, last_seq + 1)), "gap or repeat on flash"
        if printed:
            # the journal holds everything printed (the one commit in flight may be there too)
            assert last_seq >= printed[-1]
            assert last_seq <= printed[-1] + 3
            on_flash = set(seqs)
            assert all(s in on_flash for s in printed if s > acked), "a committed seq is lost"
    assert kills == 20
    print("crash test ({}):".format(layout), len(printed), "commits printed, last acked", acked)
    assert len(printed) >= 200, "too few operations between kills: {}".format(len(printed))
