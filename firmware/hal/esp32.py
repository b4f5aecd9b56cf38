# The real board (`board: esp32`): an ESP32 with an MFRC522 reader on SPI, MCP23017 expanders that
# drive the lock MOSFETs and read the reed switches (or plain GPIO for a small bank), a DS3231 RTC,
# a buzzer and a status LED. Every pin comes from pinmap.json (hardware/pinmap.json in the
# repository, copied beside main.py by `make flash`), the single source of truth for the wiring.
#
#     board = Board(device, settings)            # as hal.make_board does; pinmap.json from flash
#     board = Board(device, pinmap=the_dict)     # explicit pin map (tests, other wirings)
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
import os
import time

import machine
from drivers.ds3231 import DS3231
from drivers.mcp23017 import MCP23017, parse_pin
from drivers.mfrc522 import MFRC522SPI
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


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        cur = (cur + "/" + part) if cur or path.startswith("/") else part
        if not part:
            continue
        try:
            os.mkdir(cur)
        except OSError:
            pass


class Board:
    CONNECT_MS = 20000  # one WiFi association attempt
    BACKOFF_MIN_MS = 2000
    BACKOFF_MAX_MS = 300000
    NTP_INTERVAL_MS = 3600000  # resync (and step the DS3231) hourly
    NTP_RETRY_MIN_MS = 15000
    NTP_RETRY_MAX_MS = 600000
    HEALTH_MS = 1000  # expanders re-checked this often
    READER_PERIOD_MS = 100

    def __init__(self, device, settings=None, pinmap=None):
        if pinmap is None and isinstance(settings, dict) and "spi" in settings:
            pinmap, settings = settings, None  # Board(device, pinmap)
        if pinmap is None:
            pm = device.get("pinmap") or "pinmap.json"
            pinmap = pm if isinstance(pm, dict) else load_pinmap(pm)
        self.pinmap = pinmap
        self.nbays = int(device["bays"])
        Pin = machine.Pin

        # 1. Outputs off, before anything else.
        self._active = 1 if pinmap.get("lock_active", 1) else 0
        self._open_level = 1 if pinmap.get("reed_open_level", 1) else 0
        self._buzzer = self._indicator(pinmap.get("buzzer"))
        self._led = self._indicator(pinmap.get("led"))
        self._locks, self._reeds, outputs, pullups = self._bay_pins(pinmap)
        i2c_cfg = pinmap.get("i2c")
        self._i2c = None
        if i2c_cfg:
            self._i2c = machine.I2C(
                i2c_cfg.get("id", 0),
                scl=Pin(i2c_cfg["scl"]),
                sda=Pin(i2c_cfg["sda"]),
                freq=i2c_cfg.get("freq", 400000),
            )
        elif outputs:
            raise ValueError("pinmap.json: expander pins used but no i2c bus")
        self.expanders = {}
        self.expander_ok = {}
        self._masks = {}
        self.expander_resets = 0
        idle = 0 if self._active else 0xFFFF
        for addr in outputs:
            exp = MCP23017(self._i2c, addr)
            self.expanders[addr] = exp
            self._masks[addr] = (outputs[addr], pullups.get(addr, 0))
            try:
                exp.setup(outputs[addr], pullups.get(addr, 0), idle & outputs[addr])
                self.expander_ok[addr] = True
            except OSError:
                self.expander_ok[addr] = False  # retried by the health check
                exp.olat = idle & outputs[addr]
        for addr in pullups:
            if addr not in self.expanders:
                exp = MCP23017(self._i2c, addr)
                self.expanders[addr] = exp
                self._masks[addr] = (0, pullups[addr])
                try:
                    exp.setup(0, pullups[addr])
                    self.expander_ok[addr] = True
                except OSError:
                    self.expander_ok[addr] = False
        self._want = [False] * self.nbays

        # 2. The watchdog: once started it cannot be stopped; service() feeds it.
        # device.json "watchdog_ms": 0 turns it off (bench work at the REPL); never in service
        wdt_ms = int(device.get("watchdog_ms", pinmap.get("watchdog_ms", 8000)))
        self.wdt = machine.WDT(timeout=wdt_ms) if wdt_ms > 0 else None

        # 3. The clock.
        self.clock_source = None  # "ntp" | "rtc" | "host" | None
        self.on_clock_set = None  # the app may hang locker.clock_set here
        self.rtc_state = "none"
        self._rtc = None
        rtc_cfg = pinmap.get("rtc")
        if rtc_cfg and self._i2c is not None:
            self._rtc = DS3231(self._i2c, int(rtc_cfg.get("address", "0x68"), 16))
            self._clock_from_rtc(self._rtc)

        # 4. The reader.
        self.reader = None
        spi_cfg, rc = pinmap.get("spi"), pinmap.get("mfrc522")
        if spi_cfg and rc:
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
            self.reader = MFRC522SPI(spi, cs, rst)
            try:
                self.reader.reset()  # a reader that does not answer is retried by poll()
            except OSError:
                pass

        # 5. The data directory on the flash filesystem (the ESP32's is mounted at / already).
        self.data_dir = device.get("data_dir") or "data"
        _makedirs(self.data_dir)

        # 6. The network: brought up by service().
        wifi = device.get("wifi") or {}
        self._ssid = wifi.get("ssid")
        self._password = wifi.get("password", "")
        self._ntp_host = device.get("ntp_host")
        self._wlan = None
        self._net = _DOWN
        now = time.ticks_ms()
        self._net_next = now
        self._net_deadline = now
        self._backoff = self.BACKOFF_MIN_MS
        self._ntp_next = now
        self._ntp_backoff = self.NTP_RETRY_MIN_MS
        self.wifi_attempts = 0
        self.ntp_syncs = 0
        self.ntp_failures = 0
        self._health_next = now
        self._reader_next = now

        self._pattern = None
        self._step = 0
        self._step_end = now
        self.last_feedback = None

    # -- set-up helpers ---------------------------------------------------------------------
    def _indicator(self, cfg):
        if not cfg:
            return None
        active = 1 if cfg.get("active", 1) else 0
        pin = machine.Pin(cfg["pin"], machine.Pin.OUT, value=1 - active)
        return pin, active

    def _bay_pins(self, pinmap):
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

    # -- the board interface (docs/architecture.md) -----------------------------------------
    def now(self):
        """Unix seconds UTC, or None while the clock is not trusted."""
        if self.clock_source is None:
            return None
        t = int(time.time()) + EPOCH_OFFSET
        return t if t >= MIN_TRUSTED else None

    def ticks_ms(self):
        return time.ticks_ms()

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

    def door_open(self, bay):
        """True/False from the reed switch, None when it cannot be read."""
        where, pin = self._reeds[bay - 1]
        if where is None:
            return pin() == self._open_level
        if not self.expander_ok.get(where):
            return None
        try:
            return self.expanders[where].read(pin) == self._open_level
        except OSError:
            self.expander_ok[where] = False
            return None

    def poll_card(self):
        """A UID (bytes) once per presentation, else None. The reader is asked at most every
        READER_PERIOD_MS: a poll without a card costs the chip's 5 ms timeout."""
        if self.reader is None:
            return None
        now = time.ticks_ms()
        if time.ticks_diff(now, self._reader_next) < 0:
            return None
        self._reader_next = time.ticks_add(now, self.READER_PERIOD_MS)
        try:
            return self.reader.poll()
        except OSError:
            return None

    def feedback(self, outcome, reason=None):
        """LED and buzzer pattern for an outcome (and, for denials, the reason); never blocks."""
        self.last_feedback = (outcome, reason)
        self._pattern = REASON_PATTERNS.get(reason) or PATTERNS.get(outcome) or PATTERNS["denied"]
        self._step = -1
        self._step_end = time.ticks_ms()
        self._play(self._step_end)

    # -- beyond the interface: status, the service loop --------------------------------------
    def locks(self):
        return list(self._want)

    def online(self):
        return self._net == _UP

    def status(self):
        r = self.reader
        return {
            "clock": self.clock_source,
            "rtc": self.rtc_state,
            "wifi": ("down", "connecting", "up")[self._net],
            "wifi_attempts": self.wifi_attempts,
            "ntp_syncs": self.ntp_syncs,
            "reader": None if r is None else {"version": r.version, "resets": r.resets},
            "expanders": {"0x{:02x}".format(a): ok for a, ok in self.expander_ok.items()},
        }

    def service(self, now_ms=None):
        """One round of housekeeping; the app runs it every few tens of milliseconds."""
        now = time.ticks_ms() if now_ms is None else now_ms
        if self.wdt is not None:
            self.wdt.feed()
        self._play(now)
        if time.ticks_diff(now, self._health_next) >= 0:
            self._health_next = time.ticks_add(now, self.HEALTH_MS)
            self._check_expanders()
        if self._ssid:
            self._wifi_step(now)
            if self._net == _UP:
                self._ntp_step(now)

    async def run(self, period_ms=20):
        import asyncio

        while True:
            self.service()
            await asyncio.sleep_ms(period_ms)

    # -- feedback patterns -----------------------------------------------------------------
    def _set_indicators(self, buzz, led):
        if self._buzzer is not None:
            pin, active = self._buzzer
            pin(active if buzz else 1 - active)
        if self._led is not None:
            pin, active = self._led
            pin(active if led else 1 - active)

    def _play(self, now):
        pattern = self._pattern
        if pattern is None or time.ticks_diff(now, self._step_end) < 0:
            return
        self._step += 1
        if self._step >= len(pattern):
            self._pattern = None
            self._set_indicators(0, 0)
            return
        buzz, led, ms = pattern[self._step]
        self._set_indicators(buzz, led)
        self._step_end = time.ticks_add(now, ms)

    # -- lock expanders: a reset or brown-out drops every output; put back what is wanted ----
    def _check_expanders(self):
        for addr, exp in self.expanders.items():
            try:
                if self.expander_ok[addr] and exp.configured():
                    continue
                outputs, pullups = self._masks[addr]
                exp.setup(outputs, pullups, exp.olat)
                self.expander_ok[addr] = True
                self.expander_resets += 1
            except OSError:
                self.expander_ok[addr] = False

    # -- the clock ---------------------------------------------------------------------------
    def _clock_from_rtc(self, rtc):
        try:
            if rtc.lost_time():
                self.rtc_state = "lost"  # oscillator stopped: flat cell or never set
                return
            rtc.enable_oscillator_on_battery()
            t = rtc.read()
        except OSError:
            self.rtc_state = "absent"
            return
        except ValueError:
            self.rtc_state = "invalid"
            return
        if t < MIN_TRUSTED:
            self.rtc_state = "invalid"
            return
        self._set_system_clock(t)
        self.rtc_state = "ok"
        self.clock_source = "rtc"

    def set_clock(self, t):
        """The host's time (locker.core takes it only while the clock is unknown): sets the system
        clock and the RTC chip, until NTP, which keeps running, corrects it."""
        if t < MIN_TRUSTED:
            return
        self._set_system_clock(t)
        self.clock_source = "host"
        if self._rtc is not None:
            try:
                self._rtc.write(t)
                self.rtc_state = "ok"
            except (OSError, ValueError):
                self.rtc_state = "absent"

    def _set_system_clock(self, t):
        tm = time.gmtime(t - EPOCH_OFFSET)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))

    def _ntp_step(self, now):
        if time.ticks_diff(now, self._ntp_next) < 0:
            return
        try:
            import ntptime

            if self._ntp_host:
                ntptime.host = self._ntp_host
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
        was = self.clock_source
        self.clock_source = "ntp"
        if self._rtc is not None:
            try:
                self._rtc.write(t)
                self.rtc_state = "ok"
            except (OSError, ValueError):
                self.rtc_state = "absent"
        if was is None and self.on_clock_set is not None:
            self.on_clock_set()

    # -- WiFi with backoff -------------------------------------------------------------------
    def _wifi_step(self, now):
        if self._wlan is None:
            import network

            self._wlan = network.WLAN(network.STA_IF)
            self._wifi_failed = _fail_statuses(network)
        wlan = self._wlan
        if self._net == _DOWN:
            if time.ticks_diff(now, self._net_next) < 0:
                return
            self.wifi_attempts += 1
            try:
                wlan.active(True)
                wlan.connect(self._ssid, self._password)
            except OSError:
                self._retry_later(now)
                return
            self._net = _CONNECTING
            self._net_deadline = time.ticks_add(now, self.CONNECT_MS)
        elif self._net == _CONNECTING:
            if wlan.isconnected():
                self._net = _UP
                self._backoff = self.BACKOFF_MIN_MS
                self._ntp_next = now
                return
            if wlan.status() in self._wifi_failed or time.ticks_diff(now, self._net_deadline) >= 0:
                try:
                    wlan.disconnect()
                except OSError:
                    pass
                self._retry_later(now)
        elif not wlan.isconnected():
            self._net = _DOWN
            self._net_next = now  # one immediate retry, then backoff

    def _retry_later(self, now):
        import random

        self._net = _DOWN
        jitter = random.getrandbits(16) % (self._backoff // 4 + 1)
        self._net_next = time.ticks_add(now, self._backoff + jitter)
        self._backoff = min(self._backoff * 2, self.BACKOFF_MAX_MS)


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
