# The real board (`board: esp32`): an ESP32 with an MFRC522 reader on SPI, MCP23017 expanders that
# drive the lock MOSFETs and read the reed switches (or plain GPIO for a small bank), a DS3231 RTC,
# a buzzer and a status LED. Every pin comes from pinmap.json (hardware/pinmap.json in the
# repository, copied beside main.py by `make flash`), the single source of truth for the wiring.
#
#     board = Board(device, settings)            # as hal.make_board does; pinmap.json from flash
#     board = Board(device, pinmap=the_dict)     # explicit pin map (tests, other wirings)
#
# The board is its parts, each a small class of its own: the bank (`Bank`: lock outputs, reed
# inputs, the MCP23017 expanders), the buzzer and LED (`Indicators`), the clock (`Clock`: DS3231,
# NTP, the system clock), the card reader (`Reader`: MFRC522 on SPI) and the network (`Network`:
# WiFi with backoff). `Board` holds them and implements the board interface
# (docs/architecture.md) over them.
#
# Order at power-on matters: lock outputs are set up (latched off, then made outputs) before
# anything else runs, so no solenoid is energised from reset until the locker core says so.
# Then the watchdog, the clock (DS3231 read at boot), the reader. WiFi, NTP, the watchdog feed,
# the LED/buzzer patterns and the expanders' health check run from service(), which the app calls
# through the `run()` task; none of them blocks for long (NTP's one UDP exchange is the longest).
#
# The clock is trusted after an NTP sync, or at boot when the DS3231's oscillator-stop flag is
# clear; until then now() is None (deposits work, retrievals need an override). Every NTP sync is
# written to the DS3231, so the battery-backed clock stays in step for the next boot.
import json
import time

import machine
from drivers.ds3231 import DS3231
from drivers.mcp23017 import MCP23017, parse_pin
from drivers.mfrc522 import MFRC522SPI
from locker import makedirs
from locker.bays import CLOSED, OPEN, UNKNOWN
from micropython import const

# The ESP32 port counts from 2000-01-01, the unix port from 1970: board.now() is always unix time.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
MIN_TRUSTED = 1704067200  # 2024-01-01: a clock reading before this is not believed (no const:
# beyond a 32-bit port's small int)

_DOWN = const(0)
_CONNECTING = const(1)
_UP = const(2)

# (buzzer, led, milliseconds) steps; everything goes off after the last step
PATTERNS = {
    "boot": ((1, 1, 60), (0, 1, 400)),
    "granted": ((1, 1, 80), (0, 1, 1500)),
    "override": ((1, 1, 80), (0, 1, 80), (1, 1, 80), (0, 1, 1500)),
    "denied": ((1, 1, 120), (0, 0, 80), (1, 1, 120), (0, 0, 80), (1, 1, 120)),
    "alarm": ((1, 1, 500), (0, 0, 250), (1, 1, 500), (0, 0, 250), (1, 1, 500)),
    # an emergency open (SLT fob double tap, office command): fast beeps the whole room hears
    "emergency_open": ((1, 1, 100), (0, 0, 100)) * 6 + ((0, 1, 3000),),
}
# a denial says why: a long tone for "nowhere to put it", slow blinks for "not now"
REASON_PATTERNS = {
    "no_free_bay": ((1, 1, 900),),
    "contact_hours": ((1, 1, 300), (0, 0, 200), (1, 1, 300)),
    "clock_unknown": ((1, 0, 120), (0, 1, 300), (0, 0, 300), (0, 1, 300)),
    "unknown_card": ((1, 1, 120), (0, 0, 80), (1, 1, 120), (0, 0, 80), (1, 1, 120)),
    "revoked": ((1, 1, 600), (0, 0, 200), (1, 1, 120)),
    "not_holder": ((1, 1, 120), (0, 0, 80), (1, 1, 600)),
}


def load_pinmap(path="pinmap.json"):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        raise ValueError(
            "pin map {} not found (make flash copies hardware/pinmap.json)".format(path)
        ) from None
    except ValueError:
        raise ValueError("pin map {} is not valid JSON".format(path)) from None


def parse_spec(spec, where):
    """'0x20:A3' -> (0x20, 3) on an expander; 'gpio:26' -> (None, 26) on the ESP32 itself."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            "pinmap.json: {}: {!r} is not '<address>:<pin>' or 'gpio:<n>'".format(where, spec)
        )
    head, pin = spec.split(":", 1)
    try:
        if head == "gpio":
            return None, int(pin)
        return int(head, 16), parse_pin(pin)
    except ValueError as e:
        raise ValueError("pinmap.json: {}: {}".format(where, e)) from None


class Bank:
    """The bays' lock outputs and reed inputs, on MCP23017 expanders or plain ESP32 pins.
    Constructing it drives every lock off (latched, then made an output) before anything else."""

    HEALTH_MS = 1000  # expanders re-checked this often

    def __init__(self, pinmap, nbays, i2c):
        self.nbays = nbays
        self._active = 1 if pinmap.get("lock_active", 1) else 0
        self._open_level = 1 if pinmap.get("reed_open_level", 1) else 0
        self._locks, self._reeds, outputs, pullups = self._pins(pinmap)
        if (outputs or pullups) and i2c is None:
            raise ValueError("pinmap.json: expander pins used but no i2c bus")
        self.expanders = {}  # type: dict
        self.expander_ok = {}
        self._masks = {}
        self.resets = 0
        idle = 0 if self._active else 0xFFFF
        for addr in outputs:
            self._add(i2c, addr, outputs[addr], pullups.get(addr, 0), idle & outputs[addr])
        for addr in pullups:
            if addr not in self.expanders:
                self._add(i2c, addr, 0, pullups[addr], 0)
        self._want = [False] * nbays
        self._health_next = time.ticks_ms()

    def _add(self, i2c, addr, outputs, pullups, olat):
        exp = MCP23017(i2c, addr)
        self.expanders[addr] = exp
        self._masks[addr] = (outputs, pullups)
        try:
            exp.setup(outputs, pullups, olat)
            self.expander_ok[addr] = True
        except OSError:
            self.expander_ok[addr] = False  # retried by the health check
            exp.olat = olat

    def _pins(self, pinmap):
        rows = pinmap.get("bays") or []
        by_bay = {}
        for row in rows:
            by_bay[row.get("bay")] = row
        if self.nbays < 1 or self.nbays > len(rows):
            raise ValueError(
                "device.json: bays = {} but the pin map wires {}".format(self.nbays, len(rows))
            )
        locks, reeds = [], []  # type: (list, list)
        outputs = {}  # type: dict
        pullups = {}  # type: dict
        Pin = machine.Pin
        for bay in range(1, self.nbays + 1):
            row = by_bay.get(bay)
            if row is None:
                raise ValueError("pinmap.json: no entry for bay {}".format(bay))
            addr, pin = parse_spec(row.get("lock"), "bay {} lock".format(bay))
            if addr is None:
                locks.append((None, Pin(pin, Pin.OUT, value=1 - self._active)))
            else:
                outputs[addr] = outputs.get(addr, 0) | (1 << pin)
                locks.append((addr, pin))
            addr, pin = parse_spec(row.get("reed"), "bay {} reed".format(bay))
            if addr is None:
                reeds.append((None, Pin(pin, Pin.IN, Pin.PULL_UP)))
            else:
                pullups[addr] = pullups.get(addr, 0) | (1 << pin)
                reeds.append((addr, pin))
        for addr in outputs:
            if outputs[addr] & pullups.get(addr, 0):
                raise ValueError(
                    "pinmap.json: expander 0x{:02x} pin used as lock and reed".format(addr)
                )
        return locks, reeds, outputs, pullups

    def set_lock(self, bay, unlocked):
        """True energises bay's solenoid. Returns False when the output could not be written."""
        self._want[bay - 1] = bool(unlocked)
        where, pin = self._locks[bay - 1]
        level = self._active if unlocked else 1 - self._active
        if where is None:
            pin(level)
            return True
        exp = self.expanders[where]
        try:
            exp.write(pin, level)
        except OSError:
            self.expander_ok[where] = False
            exp.olat = (exp.olat | (1 << pin)) if level else (exp.olat & ~(1 << pin))
            return False
        return True

    def door(self, bay):
        """The reed switch: bays.OPEN or CLOSED, UNKNOWN when it cannot be read."""
        where, pin = self._reeds[bay - 1]
        if where is None:
            return OPEN if pin() == self._open_level else CLOSED
        if not self.expander_ok.get(where):
            return UNKNOWN
        try:
            return OPEN if self.expanders[where].read(pin) == self._open_level else CLOSED
        except OSError:
            self.expander_ok[where] = False
            return UNKNOWN

    def locks(self):
        return list(self._want)

    def service(self, now):
        """A reset or brown-out drops every output of an expander: put back what is wanted."""
        if time.ticks_diff(now, self._health_next) < 0:
            return
        self._health_next = time.ticks_add(now, self.HEALTH_MS)
        for addr, exp in self.expanders.items():
            try:
                if self.expander_ok[addr] and exp.configured():
                    continue
                outputs, pullups = self._masks[addr]
                exp.setup(outputs, pullups, exp.olat)
                self.expander_ok[addr] = True
                self.resets += 1
            except OSError:
                self.expander_ok[addr] = False


class Indicators:
    """The buzzer and the status LED: a pattern per outcome, played from service(), never
    blocking. Constructing it drives both off."""

    def __init__(self, pinmap):
        self._buzzer = self._pin(pinmap.get("buzzer"))
        self._led = self._pin(pinmap.get("led"))
        self._pattern = None
        self._step = 0
        self._step_end = time.ticks_ms()
        self.last = None  # (outcome, reason) of the last feedback

    def _pin(self, cfg):
        if not cfg:
            return None
        active = 1 if cfg.get("active", 1) else 0
        pin = machine.Pin(cfg["pin"], machine.Pin.OUT, value=1 - active)
        return pin, active

    def show(self, outcome, reason=None):
        self.last = (outcome, reason)
        self._pattern = REASON_PATTERNS.get(reason) or PATTERNS.get(outcome) or PATTERNS["denied"]
        self._step = -1
        self._step_end = time.ticks_ms()
        self.service(self._step_end)

    def _set(self, buzz, led):
        if self._buzzer is not None:
            pin, active = self._buzzer
            pin(active if buzz else 1 - active)
        if self._led is not None:
            pin, active = self._led
            pin(active if led else 1 - active)

    def service(self, now):
        pattern = self._pattern
        if pattern is None or time.ticks_diff(now, self._step_end) < 0:
            return
        self._step += 1
        if self._step >= len(pattern):
            self._pattern = None
            self._set(0, 0)
            return
        buzz, led, ms = pattern[self._step]
        self._set(buzz, led)
        self._step_end = time.ticks_add(now, ms)


class Clock:
    """The system clock, trusted after an NTP sync or from the DS3231 at boot (oscillator never
    stopped); every sync and every time the host gives is written back to the DS3231.
    `on_set()` is called when the clock first becomes trusted through NTP."""

    NTP_INTERVAL_MS = 3600000  # resync (and step the DS3231) hourly
    NTP_RETRY_MIN_MS = 15000
    NTP_RETRY_MAX_MS = 600000

    def __init__(self, rtc, ntp_host, on_set):
        self.source = None  # "ntp" | "rtc" | "host" | None
        self.rtc_state = "none"
        self._rtc = rtc
        self._ntp_host = ntp_host
        self._on_set = on_set
        self._ntp_next = time.ticks_ms()
        self._ntp_backoff = self.NTP_RETRY_MIN_MS
        self.ntp_syncs = 0
        self.ntp_failures = 0
        self.correction = None  # how far the clock was off when last set (new - old, seconds)
        if rtc is not None:
            self._from_rtc(rtc)

    def now(self):
        """Unix seconds UTC, or None while the clock is not trusted."""
        if self.source is None:
            return None
        t = int(time.time()) + EPOCH_OFFSET
        return t if t >= MIN_TRUSTED else None

    def _from_rtc(self, rtc):
        try:
            if rtc.lost_time():
                self.rtc_state = "lost"  # oscillator stopped: flat cell or never set
                return
            rtc.enable_oscillator_on_battery()
            t = time.mktime(rtc.read() + (0, 0)) + EPOCH_OFFSET
        except OSError:
            self.rtc_state = "absent"
            return
        except (ValueError, OverflowError):
            self.rtc_state = "invalid"
            return
        if t < MIN_TRUSTED:
            self.rtc_state = "invalid"
            return
        self._set_system(t)
        self.rtc_state = "ok"
        self.source = "rtc"

    def set(self, t):
        """The host's time: sets the system clock and the DS3231, until NTP corrects it."""
        if t < MIN_TRUSTED:
            return
        before = self.now()
        self.correction = None if before is None else t - before
        self._set_system(t)
        self.source = "host"
        self._to_rtc(t)

    def _to_rtc(self, t):
        if self._rtc is not None:
            try:
                self._rtc.write(time.gmtime(t - EPOCH_OFFSET))
                self.rtc_state = "ok"
            except (OSError, ValueError):
                self.rtc_state = "absent"

    def _set_system(self, t):
        tm = time.gmtime(t - EPOCH_OFFSET)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))

    def service(self, now):
        """NTP, when it is due (the network is up)."""
        if time.ticks_diff(now, self._ntp_next) < 0:
            return
        try:
            import ntptime

            if self._ntp_host:
                ntptime.host = self._ntp_host
            before = self.now()
            ntptime.settime()
            t = int(time.time()) + EPOCH_OFFSET
            if t < MIN_TRUSTED:
                raise ValueError("NTP time before 2024")
        except (OSError, ValueError, OverflowError, IndexError):
            self.ntp_failures += 1
            self._ntp_next = time.ticks_add(now, self._ntp_backoff)
            self._ntp_backoff = min(self._ntp_backoff * 2, self.NTP_RETRY_MAX_MS)
            return
        self.ntp_syncs += 1
        self._ntp_backoff = self.NTP_RETRY_MIN_MS
        self._ntp_next = time.ticks_add(now, self.NTP_INTERVAL_MS)
        was = self.source
        self.source = "ntp"
        self.correction = None if before is None else t - before
        self._to_rtc(t)
        if was is None:
            self._on_set()

    def sync_soon(self, now):
        """The network just came up: NTP at once."""
        self._ntp_next = now


class Reader:
    """The MFRC522 on SPI, asked at most every PERIOD_MS: a poll without a card costs the chip's
    5 ms timeout."""

    PERIOD_MS = 100

    def __init__(self, spi_cfg, rc):
        Pin = machine.Pin
        spi = machine.SPI(
            spi_cfg.get("id", 2),
            baudrate=spi_cfg.get("baudrate", 1000000),
            polarity=0,
            phase=0,
            sck=Pin(spi_cfg["sck"]),
            mosi=Pin(spi_cfg["mosi"]),
            miso=Pin(spi_cfg["miso"]),
        )
        cs = Pin(rc["cs"], Pin.OUT, value=1)
        rst = Pin(rc["rst"], Pin.OUT, value=1) if rc.get("rst") is not None else None
        self.chip = MFRC522SPI(spi, cs, rst)
        self._next = time.ticks_ms()
        try:
            self.chip.reset()  # a reader that does not answer is retried by poll()
        except OSError:
            pass

    def poll(self):
        """A UID (bytes) once per presentation, else None."""
        now = time.ticks_ms()
        if time.ticks_diff(now, self._next) < 0:
            return None
        self._next = time.ticks_add(now, self.PERIOD_MS)
        try:
            return self.chip.poll()
        except OSError:
            return None

    def status(self):
        return {"version": self.chip.version, "resets": self.chip.resets}


class Network:
    """WiFi in station mode: connect, notice a drop, retry with doubling backoff and jitter."""

    CONNECT_MS = 20000  # one WiFi association attempt
    BACKOFF_MIN_MS = 2000
    BACKOFF_MAX_MS = 300000

    def __init__(self, wifi):
        self._ssid = wifi.get("ssid")
        self._password = wifi.get("password", "")
        self._wlan = None
        self._failed = ()
        self._state = _DOWN
        now = time.ticks_ms()
        self._next = now
        self._deadline = now
        self._backoff = self.BACKOFF_MIN_MS
        self.attempts = 0

    def online(self):
        return self._state == _UP

    def status(self):
        return ("down", "connecting", "up")[self._state]

    def rssi(self):
        """The access point's signal in dBm while connected, else None."""
        wlan = self._wlan
        if self._state != _UP or wlan is None:
            return None
        try:
            return wlan.status("rssi")
        except (OSError, ValueError):
            return None

    def service(self, now):
        """One step; True when the link has just come up."""
        if not self._ssid:
            return False
        if self._wlan is None:
            import network

            self._wlan = network.WLAN(network.STA_IF)
            self._failed = _fail_statuses(network)
        wlan = self._wlan
        if self._state == _DOWN:
            if time.ticks_diff(now, self._next) < 0:
                return False
            self.attempts += 1
            try:
                wlan.active(True)
                wlan.connect(self._ssid, self._password)
            except OSError:
                self._retry_later(now)
                return False
            self._state = _CONNECTING
            self._deadline = time.ticks_add(now, self.CONNECT_MS)
        elif self._state == _CONNECTING:
            if wlan.isconnected():
                self._state = _UP
                self._backoff = self.BACKOFF_MIN_MS
                return True
            if wlan.status() in self._failed or time.ticks_diff(now, self._deadline) >= 0:
                try:
                    wlan.disconnect()
                except OSError:
                    pass
                self._retry_later(now)
        elif not wlan.isconnected():
            self._state = _DOWN
            self._next = now  # one immediate retry, then backoff
        return False

    def _retry_later(self, now):
        import random

        self._state = _DOWN
        jitter = random.getrandbits(16) % (self._backoff // 4 + 1)
        self._next = time.ticks_add(now, self._backoff + jitter)
        self._backoff = min(self._backoff * 2, self.BACKOFF_MAX_MS)


class Board:
    def __init__(self, device, settings=None, pinmap=None):
        if pinmap is None:
            pm = device.get("pinmap") or "pinmap.json"
            pinmap = pm if isinstance(pm, dict) else load_pinmap(pm)
        self.pinmap = pinmap
        self.nbays = int(device["bays"])
        Pin = machine.Pin
        i2c_cfg = pinmap.get("i2c")
        i2c = None
        if i2c_cfg:
            i2c = machine.I2C(
                i2c_cfg.get("id", 0),
                scl=Pin(i2c_cfg["scl"]),
                sda=Pin(i2c_cfg["sda"]),
                freq=i2c_cfg.get("freq", 400000),
            )

        # 1. Outputs off, before anything else.
        self.indicators = Indicators(pinmap)
        self.bank = Bank(pinmap, self.nbays, i2c)

        # 2. The watchdog: once started it cannot be stopped; service() feeds it.
        # device.json "watchdog_ms": 0 turns it off (bench work at the REPL); never in service
        wdt_ms = int(device.get("watchdog_ms", pinmap.get("watchdog_ms", 8000)))
        self.wdt = machine.WDT(timeout=wdt_ms) if wdt_ms > 0 else None

        # 3. The clock.
        self.on_clock_set = None  # the app may hang locker.clock_set here
        rtc_cfg = pinmap.get("rtc")
        rtc = None
        if rtc_cfg and i2c is not None:
            rtc = DS3231(i2c, int(rtc_cfg.get("address", "0x68"), 16))
        self.clock = Clock(rtc, device.get("ntp_host"), self._clock_set)

        # 4. The reader.
        spi_cfg, rc = pinmap.get("spi"), pinmap.get("mfrc522")
        self.reader = Reader(spi_cfg, rc) if spi_cfg and rc else None

        # 5. The data directory on the flash filesystem (the ESP32's is mounted at / already),
        # and the journal's own partition beside it, if the partition table has one.
        self.data_dir = device.get("data_dir") or "data"
        makedirs(self.data_dir)
        self.journal_region = _journal_partition()

        # 6. The network: brought up by service().
        self.net = Network(device.get("wifi") or {})

    def _clock_set(self):
        if self.on_clock_set is not None:
            self.on_clock_set()

    # -- the board interface (docs/architecture.md) -----------------------------------------
    def now(self):
        """Unix seconds UTC, or None while the clock is not trusted."""
        return self.clock.now()

    def ticks_ms(self):
        return time.ticks_ms()

    def set_clock(self, t):
        """The host's time (locker.core takes it only while the clock is unknown)."""
        self.clock.set(t)

    @property
    def clock_correction(self):
        return self.clock.correction

    def set_lock(self, bay, unlocked):
        return self.bank.set_lock(bay, unlocked)

    def door(self, bay):
        return self.bank.door(bay)

    def poll_card(self):
        return None if self.reader is None else self.reader.poll()

    def feedback(self, outcome, reason=None):
        """LED and buzzer pattern for an outcome (and, for denials, the reason); never blocks."""
        self.indicators.show(outcome, reason)

    # -- beyond the interface: status, the service loop --------------------------------------
    def locks(self):
        return self.bank.locks()

    def online(self):
        return self.net.online()

    def rssi(self):
        return self.net.rssi()

    def status(self):
        return {
            "clock": self.clock.source,
            "rtc": self.clock.rtc_state,
            "wifi": self.net.status(),
            "wifi_attempts": self.net.attempts,
            "ntp_syncs": self.clock.ntp_syncs,
            "reader": None if self.reader is None else self.reader.status(),
            "expanders": {"0x{:02x}".format(a): ok for a, ok in self.bank.expander_ok.items()},
        }

    def service(self, now_ms=None):
        """One round of housekeeping; the app runs it every few tens of milliseconds."""
        now = time.ticks_ms() if now_ms is None else now_ms
        if self.wdt is not None:
            self.wdt.feed()
        self.indicators.service(now)
        self.bank.service(now)
        if self.net.service(now):
            self.clock.sync_soon(now)
        if self.net.online():
            self.clock.service(now)

    async def run(self, period_ms=20):
        import asyncio

        while True:
            self.service()
            await asyncio.sleep_ms(period_ms)


def _fail_statuses(network):
    out = []
    for name in (
        "STAT_NO_AP_FOUND",
        "STAT_WRONG_PASSWORD",
        "STAT_ASSOC_FAIL",
        "STAT_HANDSHAKE_TIMEOUT",
        "STAT_BEACON_TIMEOUT",
        "STAT_CONNECT_FAIL",
    ):
        v = getattr(network, name, None)
        if v is not None:
            out.append(v)
    return out


def _journal_partition():
    """The data partition labelled `journal` (docs/hardware.md, the partition table), or None: a
    board flashed with a table without one keeps its journal on the filesystem."""
    try:
        import esp32
    except ImportError:  # not an ESP32 port (the tests' model of the board)
        return None
    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="journal")
    return found[0] if found else None
