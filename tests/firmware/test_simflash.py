# runs-on: micropython
# heapsize: 96k
# The simulated flash: an image file behind littlefs, wear counters, clean failures and torn
# writes (power cuts) that leave exactly what was programmed in the image.
import os

from hal.sim import flash as simflash
from mpytest import raises, tmpdir

BS = 4096


def _image(name, blocks=16):
    path = tmpdir("simflash_" + name) + "/flash.img"
    return path, simflash.FileBlockDevice(path, BS, blocks)


def _raw(path, pos, n):
    with open(path, "rb") as f:
        f.seek(pos)
        return f.read(n)


def test_new_image_is_erased_and_sized():
    path, dev = _image("new", 8)
    assert dev.created
    assert os.stat(path)[6] == 8 * BS
    assert _raw(path, 0, 16) == b"\xff" * 16 and _raw(path, 8 * BS - 4, 4) == b"\xff" * 4
    assert dev.ioctl(4, 0) == 8 and dev.ioctl(5, 0) == BS
    dev.close()
    again = simflash.FileBlockDevice(path, BS, 8)
    assert not again.created


def test_program_read_erase_and_counters():
    path, dev = _image("rw")
    dev.writeblocks(2, b"hello", 100)
    buf = bytearray(5)
    dev.readblocks(2, buf, 100)
    assert bytes(buf) == b"hello"
    assert _raw(path, 2 * BS + 100, 5) == b"hello"  # in the image at once (flushed)
    assert (dev.bytes_programmed, dev.writes, dev.blocks_erased) == (5, 1, 0)
    assert dev.ioctl(6, 2) == 0
    assert _raw(path, 2 * BS + 100, 5) == b"\xff" * 5
    assert dev.blocks_erased == 1
    dev.writeblocks(3, bytearray(BS))  # the basic protocol: erase, then program whole blocks
    assert dev.blocks_erased == 2 and dev.bytes_programmed == 5 + BS
    assert _raw(path, 3 * BS, 4) == b"\x00" * 4


def test_fail_after_fails_that_write_only():
    path, dev = _image("fail")
    dev.fail_after(2)
    dev.writeblocks(0, b"one", 0)
    assert dev.writeblocks(0, b"two", 8) == -5  # EIO for littlefs
    assert _raw(path, 8, 3) == b"\xff" * 3  # nothing of it reached the image
    dev.writeblocks(0, b"three", 16)  # a single fault
    assert _raw(path, 0, 3) == b"one" and _raw(path, 16, 5) == b"three"


def test_tear_programs_a_prefix_then_cuts_the_power():
    path, dev = _image("tear")
    dev.tear_at(2, 3)
    dev.writeblocks(1, b"first", 0)
    try:
        dev.writeblocks(1, b"second", 10)
    except Exception:  # noqa: BLE001 - PowerLoss must not be an Exception
        raise AssertionError("PowerLoss was caught by except Exception") from None
    except simflash.PowerLoss:
        pass
    else:
        raise AssertionError("no PowerLoss")
    assert _raw(path, BS + 10, 6) == b"sec\xff\xff\xff"
    assert dev.writeblocks(1, b"late", 20) == -5  # dead: nothing more reaches the image
    assert _raw(path, BS + 20, 4) == b"\xff" * 4


def test_fail_after_makes_a_file_write_raise_eio():
    base = tmpdir("simflash_eio")
    dev = simflash.mount(base + "/flash.img", "/sfe", block_count=32)
    try:
        f = open("/sfe/a", "wb")
        f.write(b"x" * 5000)  # past the inline size: littlefs programs blocks
        dev.fail_after(1)
        with raises(OSError) as e:
            f.write(b"y" * 5000)
            f.flush()
        assert e.value.args[0] == 5
        f.close()
    finally:
        os.umount("/sfe")


def test_mount_formats_once_and_keeps_files():
    base = tmpdir("simflash_mount")
    img = base + "/flash.img"
    dev = simflash.mount(img, "/sfm", block_count=32)
    try:
        with open("/sfm/hello.txt", "w") as f:
            f.write("kept")
        assert dev.bytes_programmed > 0 and dev.writes > 0
        st = os.statvfs("/sfm")
        assert st[0] == BS and st[2] == 32
    finally:
        os.umount("/sfm")
    simflash.mount(img, "/sfm", block_count=32)  # no reformat: the file is still there
    try:
        with open("/sfm/hello.txt") as f:
            assert f.read() == "kept"
    finally:
        os.umount("/sfm")


def test_mount_survives_a_torn_write():
    base = tmpdir("simflash_torn")
    img = base + "/flash.img"
    simflash.mount(img, "/sft", block_count=32)
    with open("/sft/a", "wb") as f:
        f.write(b"A" * 5000)
    os.umount("/sft")
    for k in range(1, 12):
        dev = simflash.mount(img, "/sft", block_count=32)
        dev.tear_at(k, 7)
        try:
            f = open("/sft/b{}".format(k), "wb")
            f.write(b"B" * 3000)
            f.close()
        except simflash.PowerLoss:
            pass
        os.umount("/sft")
        simflash.mount(img, "/sft", block_count=32)
        with open("/sft/a", "rb") as f:
            assert f.read() == b"A" * 5000  # what was there before the cut is intact
        os.umount("/sft")


def test_mount_formats_an_image_that_holds_no_filesystem():
    base = tmpdir("simflash_blank")
    img = base + "/flash.img"
    with open(img, "wb") as f:
        for _ in range(16):
            f.write(bytes(BS))
    simflash.mount(img, "/sfb", block_count=16)
    try:
        assert os.listdir("/sfb") == []
    finally:
        os.umount("/sfb")


def _elapsed_us(fn):
    import time

    t0 = time.ticks_us()
    fn()
    return time.ticks_diff(time.ticks_us(), t0)


def test_timing_charges_a_chips_times_as_real_delays():
    # the W25Q32JV's datasheet: a page program 0.4 ms typical / 3 ms max, a 4 KiB sector erase
    # 45 ms typical / 400 ms max; a lower bound on the time taken, never an upper one
    assert simflash.TIMINGS["typical"] == (400, 45000)
    assert simflash.TIMINGS["worst"] == (3000, 400000)
    path, dev = _image("timing")
    assert dev.timing == "off"  # a bare device charges nothing unless asked
    dev.set_timing("typical")
    took = _elapsed_us(lambda: dev.writeblocks(1, b"x" * 256, 0))  # one page
    assert took >= 400 and dev.busy_us == 400
    took = _elapsed_us(lambda: dev.writeblocks(1, b"y" * 20, 250))  # crosses into a 2nd page
    assert took >= 800 and dev.busy_us == 1200
    took = _elapsed_us(lambda: dev.ioctl(6, 1))
    assert took >= 45000 and dev.busy_us == 1200 + 45000
    assert (dev.bytes_programmed, dev.blocks_erased) == (276, 1)
    dev.set_timing("worst")
    took = _elapsed_us(lambda: dev.writeblocks(2, b"z" * 10, 0))
    assert took >= 3000 and dev.busy_us == 1200 + 45000 + 3000


def test_timing_off_charges_nothing_and_a_bad_mode_is_refused():
    path, dev = _image("notime")
    dev.set_timing("off")
    for i in range(4):
        dev.writeblocks(i, b"a" * BS, 0)
        dev.ioctl(6, i)
    assert dev.busy_us == 0
    assert (dev.bytes_programmed, dev.blocks_erased) == (4 * BS, 4)
    with raises(ValueError):
        dev.set_timing("fast")
    with raises(ValueError):
        simflash.FileBlockDevice(path, BS, 16, "slow")


def test_mount_applies_timing_after_formatting():
    path = tmpdir("simflash_mounttime") + "/flash.img"
    dev = simflash.mount(path, "/tmount", block_count=16, timing="typical")
    try:
        assert dev.timing == "typical"
        before = dev.busy_us  # formatting was not charged; mounting reads
        took = _elapsed_us(lambda: _write(dev, "/tmount/f", b"q" * 100))
        assert dev.busy_us > before and took >= dev.busy_us - before
    finally:
        os.umount("/tmount")


def _write(dev, name, data):
    with open(name, "wb") as f:
        f.write(data)


def test_sim_board_takes_flash_timing_from_device_json():
    from hal.sim.board import Board

    data = tmpdir("simflash_board")
    for sim, want in (({"flash_timing": "worst"}, "worst"), (None, "typical"), ({}, "typical")):
        device = {"locker_id": "T1", "bays": 2, "data_dir": data}
        if sim is not None:
            device["sim"] = sim
        board = Board(device, {"flash_blocks": 16})
        try:
            assert board.flash.timing == want
            assert board.outputs()["flash"]["timing"] == want
        finally:
            os.umount("/flash")
            board.flash.close()
    bad = {"locker_id": "T1", "bays": 2, "data_dir": data, "sim": {"flash_timing": "fast"}}
    with raises(ValueError):
        Board(bad, {"flash_blocks": 16})
