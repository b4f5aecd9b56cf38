# A simulated flash chip for the unix port: a littlefs block device backed by an image file.
#
# Geometry and interface are an ESP32 partition's (4096-byte erase blocks, littlefs "extended"
# block protocol: readblocks/writeblocks with an offset, ioctl 6 to erase), so the filesystem the
# firmware sees behaves like the board's. Every program and erase goes straight to the image file
# and is flushed, so killing the process (SIGKILL) is a power cut: what littlefs programmed is in
# the image, nothing else. Wear is counted (bytes_programmed, blocks_erased, writes) and faults can
# be injected: fail_after(n) makes the n-th write fail cleanly, tear_at(n, nbytes) cuts the power
# in the middle of the n-th write.
#
# Time: a real chip takes time to program and erase, and the CPU waits for it (littlefs's calls are
# synchronous; on an ESP32 the flash cache is off meanwhile). `timing` charges a datasheet's times
# as real delays (time.sleep_us), so the simulated board's ticks and every end-to-end figure
# include them. The modelled chip is the Winbond W25Q32JV (a usual ESP32 module's flash):
#   4 KiB sector erase (tSE): 45 ms typical, 400 ms max
#   page program (tPP), per 256-byte page touched: 0.4 ms typical, 3 ms max
# "typical" charges the typical times, "worst" the maximum ones, "off" nothing (the default of a
# bare FileBlockDevice, for unit tests; the simulated board defaults to "typical"). busy_us counts
# the time charged.

import os
import time

from locker import const

_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)
_EIO = const(5)
_PAGE = const(256)  # a program operation covers at most one 256-byte page
# mode -> (microseconds per page programmed, microseconds per 4 KiB sector erased)
TIMINGS = {
    "typical": (400, 45000),
    "worst": (3000, 400000),
    "off": (0, 0),
}
CHIP = "W25Q32JV"
_ERASED = b"\xff" * 128  # one erased run, written over and over: an erase allocates nothing


class PowerLoss(BaseException):
    """The power was cut in the middle of a write (tear_at). A BaseException, so that no
    `except Exception` in the firmware swallows it: the test drops everything and remounts."""


class FileBlockDevice:
    def __init__(self, path, block_size=4096, block_count=128, timing="off"):
        self.path = path
        self.set_timing(timing)
        self.busy_us = 0  # time charged for programs and erases
        self.block_size = block_size
        self.block_count = block_count
        self.bytes_programmed = 0
        self.blocks_erased = 0
        self.writes = 0
        self.created = False
        self._fail_at = 0  # absolute write number that fails with EIO (0: none)
        self._tear_at = 0  # absolute write number that is torn
        self._tear_bytes = 0
        self.dead = False  # after a tear nothing more reaches the image
        size = block_size * block_count
        try:
            self._f = open(path, "r+b")
        except OSError:
            self._create(path, size)
            self._f = open(path, "r+b")
            self.created = True
        self._f.seek(0, 2)
        have = self._f.tell()
        if have < size:  # a smaller image (or a geometry change): extend with erased bytes
            self._fill(have, size - have)

    def _create(self, path, size):
        with open(path, "wb") as f:
            _write_erased(f, size)

    def _fill(self, pos, n):
        f = self._f
        f.seek(pos)
        _write_erased(f, n)
        f.flush()

    def set_timing(self, timing):
        """Charge the times of mode `timing` (a key of TIMINGS); ValueError for another."""
        if timing not in TIMINGS:
            raise ValueError("flash timing must be one of typical, worst, off")
        self.timing = timing
        self._page_us, self._erase_us = TIMINGS[timing]

    def _busy(self, us):
        if us > 0:
            time.sleep_us(us)
            self.busy_us += us

    # -- fault injection ------------------------------------------------------------------------

    def fail_after(self, n):
        """The n-th write from now (1 = the next one) fails and writes nothing: littlefs gets
        an I/O error and the filesystem call in progress raises OSError(EIO). (The error is
        returned, not raised: an exception thrown through littlefs's C code would leave the
        filesystem's state half-updated, which no real flash driver does.)"""
        self._fail_at = self.writes + n if n > 0 else 0

    def tear_at(self, n, nbytes):
        """The n-th write from now programs only its first nbytes, then the power goes
        (PowerLoss). The device is dead afterwards: nothing more reaches the image (later
        writes return an I/O error to littlefs, so stale handles can be closed)."""
        self._tear_at = self.writes + n if n > 0 else 0
        self._tear_bytes = nbytes

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    # -- the block device protocol ---------------------------------------------------------------

    def readblocks(self, n, buf, off=0):
        f = self._f
        if f is None:  # closed: a stale file handle of an old mount being finalised
            return -_EIO
        f.seek(n * self.block_size + off)
        got = f.readinto(buf)
        if got != len(buf):
            raise OSError(_EIO)

    def writeblocks(self, n, buf, off=None):
        if self.dead or self._f is None:
            return -_EIO  # no power: littlefs sees an I/O error and unwinds cleanly
        if off is None:  # the basic protocol: whole blocks, erase first
            nblocks = len(buf) // self.block_size
            for i in range(nblocks):
                self._erase(n + i)
            off = 0
        self.writes += 1
        if self.writes == self._fail_at:
            self._fail_at = 0
            return -_EIO  # littlefs unwinds and the file call raises OSError(EIO)
        f = self._f
        f.seek(n * self.block_size + off)
        if self.writes == self._tear_at:
            self._tear_at = 0
            self.dead = True
            part = min(self._tear_bytes, len(buf))
            if part > 0:
                f.write(memoryview(buf)[:part])
                self.bytes_programmed += part
            f.flush()
            raise PowerLoss("power cut during write {}".format(self.writes))
        f.write(buf)
        f.flush()
        self.bytes_programmed += len(buf)
        if self._page_us and len(buf):  # one page program per 256-byte page the write touches
            self._busy(((off + len(buf) - 1) // _PAGE - off // _PAGE + 1) * self._page_us)

    def _erase(self, block):
        if self.dead or self._f is None:
            return -_EIO
        self._fill(block * self.block_size, self.block_size)
        self.blocks_erased += 1
        self._busy(self._erase_us * max(1, self.block_size // 4096))

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_BLOCK_ERASE:
            return self._erase(arg) or 0
        if op in (_IOCTL_INIT, _IOCTL_DEINIT, _IOCTL_SYNC):
            if op == _IOCTL_SYNC and self._f is not None and not self.dead:
                self._f.flush()
            return 0
        return None


def _write_erased(f, n):
    step = len(_ERASED)
    while n >= step:
        f.write(_ERASED)
        n -= step
    if n:
        f.write(memoryview(_ERASED)[:n])


def _has_superblock(dev):
    """True when block 0 or 1 carries littlefs's magic (a formatted image, maybe damaged)."""
    buf = bytearray(32)
    for block in (0, 1):
        dev.readblocks(block, buf, 0)
        if b"littlefs" in buf:
            return True
    return False


def mount(image_path, mountpoint, block_count=128, block_size=4096, timing="off"):
    """Open (or create) the image, format it if it holds no filesystem, mount it with littlefs v2
    at mountpoint; returns the FileBlockDevice. `timing` (TIMINGS) applies from the mount on:
    formatting a new image is not charged. An image that was formatted but fails to mount
    is an error (never silently reformatted: that would hide lost data)."""
    dev = FileBlockDevice(image_path, block_size, block_count)
    if dev.created or not _has_superblock(dev):
        os.VfsLfs2.mkfs(dev)
    dev.set_timing(timing)
    os.mount(os.VfsLfs2(dev), mountpoint)
    return dev


def mount_for(device):
    """The simulated board's flash as device.json describes it (data_dir/flash.img, settings'
    flash_blocks, sim.flash_timing), mounted at /flash; returns the FileBlockDevice. The boot
    loader (main.py) mounts it before the firmware runs, so that the firmware can run from it."""
    sim = device.get("sim") or {}
    timing = sim.get("flash_timing", "typical")
    if timing not in TIMINGS:
        raise ValueError("device.json: sim.flash_timing must be typical, worst or off")
    blocks = (device.get("settings") or {}).get("flash_blocks", 128)
    if type(blocks) is not int or blocks < 16:  # noqa: E721
        raise ValueError("device.json: settings.flash_blocks must be an integer of 16 or more")
    host_dir = device.get("data_dir") or "var/" + device["locker_id"]
    from locker import makedirs

    makedirs(host_dir)
    return mount(host_dir + "/flash.img", "/flash", block_count=blocks, timing=timing)
