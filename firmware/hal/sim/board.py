# The simulated board (`board: sim`) for the MicroPython unix port.
#
# Flash: a littlefs image file in `data_dir` with an ESP32 partition's geometry (4096-byte blocks),
# mounted at /flash through a block device that counts wear and can be made to fail or tear
# (hal/sim/flash.py), and that takes a real chip's time to program and erase (device.json's
# `sim.flash_timing`: "typical" by default, "worst" or "off"). Locks, reeds, LED and buzzer are
# plain state the control port shows. The real-time clock is unknown until set (`clock` on the
# control port, as NTP would) and then advances with real time. The millisecond counter
# (`ticks_ms`) is an ESP32's: it wraps at 2^30 and starts at device.json's `sim.ticks_start`
# (default 0), so a test can start it just before the wrap; the unix port's own counter, on a
# 64-bit machine, would not wrap for millennia.

import gc
import time

from locker import makedirs
from locker.bays import CLOSED, ticks_add
from micropython import const

from hal.sim import flash

_MOUNTPOINT = const("/flash")
_FEEDBACK_KEEP = const(16)


class Board:
    def __init__(self, device, settings):
        self.nbays = int(device["bays"])
        if not 1 <= self.nbays <= 64:
            raise ValueError("device.json: bays must be 1..64")
        # Outputs first: every lock is off (locked) from power-on, before anything else runs.
        self.locks = [False] * self.nbays
        self.doors = [CLOSED] * self.nbays  # bays.CLOSED / OPEN / UNKNOWN
        self.led = "off"
        self.buzzer = 0  # beeps so far
        self.feedback_log = []
        self._clock_offset = None
        self.clock_correction = None
        sim = device.get("sim") or {}
        start = sim.get("ticks_start", 0)
        if type(start) is not int:  # noqa: E721 - bool is not a tick
            raise ValueError("device.json: sim.ticks_start must be an integer")
        # the port's own counter (period 2^62 here) when ours read 0
        self._ticks_base = time.ticks_add(time.ticks_ms(), -ticks_add(start, 0))
        self.heap_max = 0  # high-water mark of the heap in use, sampled (see sample_heap)
        self.code_bytes = 0  # heap taken by the loaded modules (set by the app)

        timing = sim.get("flash_timing", "typical")
        if timing not in flash.TIMINGS:
            raise ValueError("device.json: sim.flash_timing must be typical, worst or off")
        # The boot loader (main.py) mounted the flash already (the firmware may run from it),
        # and hands over the RTC's offset across a reset (a battery-backed RTC).
        self._boot = device.get("boot") or {}
        self.flash = self._boot.get("flash")
        if self._boot.get("rtc") is not None:
            self._clock_offset = self._boot["rtc"]
        host_dir = device.get("data_dir") or "var/" + device["locker_id"]
        if self.flash is None:
            makedirs(host_dir)
            self.flash = flash.mount(
                host_dir + "/flash.img",
                _MOUNTPOINT,
                block_count=settings["flash_blocks"],
                timing=timing,
            )
        self.data_dir = _MOUNTPOINT
        # The journal's region: an ESP32 data partition of its own beside the filesystem's, here
        # an image file of `sim.journal_blocks` sectors (0: none, as on a board flashed before
        # the partition table had one), on the same chip's timing.
        blocks = sim.get("journal_blocks", 96)
        if type(blocks) is not int or blocks != 0 and not 3 <= blocks <= 4096:  # noqa: E721
            raise ValueError("device.json: sim.journal_blocks must be 0 or 3..4096")
        self.journal_region = None
        if blocks:
            makedirs(host_dir)
            self.journal_region = flash.FileBlockDevice(
                host_dir + "/journal.img", 4096, blocks, timing
            )

    # -- the board interface (docs/architecture.md) ---------------------------------------------

    def now(self):
        if self._clock_offset is None:
            return None
        return int(time.time()) + self._clock_offset

    def ticks_ms(self):
        return ticks_add(time.ticks_diff(time.ticks_ms(), self._ticks_base), 0)

    def set_lock(self, bay, unlocked):
        self.locks[bay - 1] = bool(unlocked)

    def door(self, bay):
        return self.doors[bay - 1]

    def feedback(self, outcome, reason=None):
        self.led = outcome
        self.buzzer += 1
        self.feedback_log.append(outcome if reason is None else outcome + ":" + reason)
        if len(self.feedback_log) > _FEEDBACK_KEEP:
            self.feedback_log.pop(0)

    def poll_card(self):
        return None  # cards come from the control port

    # -- what the control port drives and shows -------------------------------------------------

    def set_clock(self, unix_seconds):
        before = self.now()
        self._clock_offset = int(unix_seconds) - int(time.time())
        self._boot["rtc"] = self._clock_offset
        # how far the clock was off when it was last set (the state's clock_offset_s)
        self.clock_correction = None if before is None else int(unix_seconds) - before

    def rssi(self):
        return None  # no radio in the simulation (the state's rssi is null)

    def set_door(self, bay, reading):
        self.doors[bay - 1] = reading

    def sample_heap(self):
        """Sampled after every control-port request and every tick: the high-water mark of the
        live heap (what is still reachable after a collection) as the firmware actually runs."""
        gc.collect()
        used = gc.mem_alloc()
        if used > self.heap_max:
            self.heap_max = used

    def _flash_counters(self):
        """Wear and time of the whole chip: the filesystem's partition and the journal's."""
        parts = [self.flash] + ([self.journal_region] if self.journal_region else [])
        out = {"bytes_programmed": 0, "blocks_erased": 0, "busy_ms": 0}
        us = 0
        for dev in parts:
            out["bytes_programmed"] += dev.bytes_programmed
            out["blocks_erased"] += dev.blocks_erased
            us += dev.busy_us
        out["busy_ms"] = us // 1000
        out["timing"] = self.flash.timing
        return out

    def outputs(self):
        self.sample_heap()
        return {
            "heap": {
                "used": gc.mem_alloc(),
                "free": gc.mem_free(),
                "max_used": self.heap_max,
                "code": self.code_bytes,
            },
            "ticks_ms": self.ticks_ms(),
            "locks": ["unlocked" if on else "locked" for on in self.locks],
            "led": self.led,
            "buzzer": self.buzzer,
            "feedback": self.feedback_log[-4:],
            "flash": self._flash_counters(),
        }
