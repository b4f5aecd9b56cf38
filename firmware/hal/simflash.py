# A simulated flash chip for the unix port: a littlefs block device backed by an image file.
#
# Geometry and interface are an ESP32 partition's (4096-byte erase blocks, littlefs "extended"
# block protocol: readblocks/writeblocks with an offset, ioctl 6 to erase), so the filesystem the
# firmware sees behaves like the board's. Every program and erase goes straight to the image file
# and is flushed, so killing the process (SIGKILL) is a power cut: what littlefs programmed is in
# the image, nothing else. Wear is counted (bytes_programmed, blocks_erased, writes) and faults can
# be injected: fail_after(n) makes the n-th write fail cleanly, tear_at(n, nbytes) cuts the power
# in the middle of the n-th write.

import os

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)
_EIO = const(5)
_ERASED = b"\xff" * 128  # one erased run, written over and over: an erase allocates nothing


class PowerLoss(BaseException):
    """The power was cut in the middle of a write (tear_at). A BaseException, so that no
    `except Exception` in the firmware swallows it: the test drops everything and remounts."""


class FileBlockDevice:
    def __init__(self, path, block_size=4096, block_count=128):
        self.path = path
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

    def _erase(self, block):
        if self.dead or self._f is None:
            return -_EIO
        self._fill(block * self.block_size, self.block_size)
        self.blocks_erased += 1

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


def mount(image_path, mountpoint, block_count=128, block_size=4096):
    """Open (or create) the image, format it if it holds no filesystem, mount it with littlefs v2
    at mountpoint; returns the FileBlockDevice. An image that was formatted but fails to mount
    is an error (never silently reformatted: that would hide lost data)."""
    dev = FileBlockDevice(image_path, block_size, block_count)
    if dev.created or not _has_superblock(dev):
        os.VfsLfs2.mkfs(dev)
    os.mount(os.VfsLfs2(dev), mountpoint)
    return dev
