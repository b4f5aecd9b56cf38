# Models of the ESP32 port's hardware modules for tests under the unix port: `machine` (Pin, SPI,
# I2C, WDT, RTC), `network` (WLAN), `ntptime` and a `time` whose clock is the model RTC with the
# ESP32's epoch (2000-01-01, so time.gmtime(0) is in 2000 as on the board).
#
#     import model_machine as mm
#     mm.install()            # before importing hal.esp32 or anything that imports machine
#     mm.reset()              # fresh state for one test
#
# Devices are attached by the test: mm.attach_spi(bus, cs_pin, device) (device.spi_transfer(tx)),
# mm.attach_i2c(bus, address, device) (device.read_mem(reg, n) / device.write_mem(reg, data)).
import sys
import time as _rt

EPOCH_2000 = 946684800  # unix seconds at 2000-01-01T00:00:00Z


class _Mod:
    pass


def _module(name, **attrs):
    m = _Mod()
    m.__name__ = name
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


# -- calendar (written independently of the firmware's) ------------------------------------------
def days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def unix_to_tuple(t):
    days, rem = divmod(t, 86400)
    y, m, d = civil_from_days(days)
    wd = (days + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    yd = days - days_from_civil(y, 1, 1) + 1
    return (y, m, d, rem // 3600, rem // 60 % 60, rem % 60, wd, yd)


def tuple_to_unix(tm):
    return days_from_civil(tm[0], tm[1], tm[2]) * 86400 + tm[3] * 3600 + tm[4] * 60 + tm[5]


# -- the clock behind RTC and time.time() --------------------------------------------------------
class Clock:
    def __init__(self):
        self.set_unix(EPOCH_2000)  # an ESP32 powers up at 2000-01-01

    def set_unix(self, t):
        self.base = t
        self.at = _rt.ticks_ms()
        self.sets = getattr(self, "sets", -1) + 1

    def unix(self):
        return self.base + _rt.ticks_diff(_rt.ticks_ms(), self.at) // 1000

    def advance(self, s):
        self.base += s


CLOCK = Clock()


def _time():
    return CLOCK.unix() - EPOCH_2000


def _gmtime(t=None):
    return unix_to_tuple(CLOCK.unix() if t is None else t + EPOCH_2000)


def _mktime(tm):
    return tuple_to_unix(tm) - EPOCH_2000


time_model = _module(
    "time",
    ticks_ms=_rt.ticks_ms,
    ticks_us=_rt.ticks_us,
    ticks_diff=_rt.ticks_diff,
    ticks_add=_rt.ticks_add,
    sleep=_rt.sleep,
    sleep_ms=_rt.sleep_ms,
    sleep_us=_rt.sleep_us,
    time=_time,
    gmtime=_gmtime,
    localtime=_gmtime,
    mktime=_mktime,
)


# -- machine --------------------------------------------------------------------------------
PINS = {}
WIRES = {}  # pin id -> function called with every level driven (a chip's input wired to it)
SPI_DEVICES = {}
I2C_DEVICES = {}
WDTS = []


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = None
        self.pull = None
        self._out = 0
        self.level = 0  # what an input reads
        self.history = []  # the first levels driven, in order
        self.drives = 0
        self.highs = 0  # how many times it was driven high
        self.watchers = [WIRES[id]] if id in WIRES else []
        PINS[id] = self
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self.mode = mode
        if pull != -1:
            self.pull = pull
        if value is not None:
            self._drive(value)

    def _drive(self, v):
        v = 1 if v else 0
        self._out = v
        self.drives += 1
        self.highs += v
        if len(self.history) < 64:  # the first levels driven (power-on behaviour)
            self.history.append(v)
        for w in self.watchers:
            w(v)

    def value(self, v=None):
        if v is None:
            return self._out if self.mode == Pin.OUT else self.level
        self._drive(v)

    __call__ = value

    def on(self):
        self._drive(1)

    def off(self):
        self._drive(0)


class SPI:
    MSB = 0

    def __init__(self, id, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0, **pins):
        self.id = id
        self.baudrate = baudrate
        self.polarity = polarity
        self.phase = phase
        self.pins = pins

    def _xfer(self, tx):
        chosen = [d for cs, d in SPI_DEVICES.get(self.id, ()) if cs in PINS and not PINS[cs]._out]
        if len(chosen) > 1:
            raise AssertionError("two chips selected on SPI bus {}".format(self.id))
        if not chosen:
            return b"\xff" * len(tx)  # MISO floats high
        return chosen[0].spi_transfer(bytes(tx))

    def write(self, buf):
        self._xfer(buf)

    def write_readinto(self, wbuf, rbuf):
        rx = self._xfer(wbuf)
        for i in range(len(rbuf)):
            rbuf[i] = rx[i]

    def readinto(self, buf, write=0):
        rx = self._xfer(bytes([write]) * len(buf))
        for i in range(len(buf)):
            buf[i] = rx[i]

    def read(self, n, write=0):
        buf = bytearray(n)
        self.readinto(buf, write)
        return bytes(buf)


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id
        self.freq = freq
        self.scl = scl
        self.sda = sda

    def _dev(self, addr):
        d = I2C_DEVICES.get(self.id, {}).get(addr)
        if d is None or getattr(d, "absent", False):
            raise OSError(19)  # ENODEV: no ACK for the address
        if getattr(d, "fail", False):
            raise OSError(116)  # ETIMEDOUT: a stuck bus
        return d

    def scan(self):
        return sorted(
            a for a, d in I2C_DEVICES.get(self.id, {}).items() if not getattr(d, "absent", 0)
        )

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        data = self._dev(addr).read_mem(reg, len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom_mem(self, addr, reg, n, addrsize=8):
        return bytes(self._dev(addr).read_mem(reg, n))

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self._dev(addr).write_mem(reg, bytes(buf))


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        WDTS.append(self)

    def feed(self):
        self.feeds += 1


class RTC:
    def datetime(self, dt=None):
        if dt is None:
            tm = unix_to_tuple(CLOCK.unix())
            return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0)
        y, mo, d, _wd, h, mi, s = dt[:7]
        CLOCK.set_unix(tuple_to_unix((y, mo, d, h, mi, s)))

    def init(self, dt):
        self.datetime(dt)


def _reset():
    raise SystemExit("machine.reset()")


machine_model = _module(
    "machine",
    Pin=Pin,
    SPI=SPI,
    I2C=I2C,
    SoftI2C=I2C,
    WDT=WDT,
    RTC=RTC,
    reset=_reset,
    freq=lambda *a: 240000000,
    unique_id=lambda: b"\x24\x0a\xc4\x00\x00\x01",
)


def attach_spi(bus, cs, device):
    SPI_DEVICES.setdefault(bus, []).append((cs, device))


def wire(pin, fn):
    WIRES[pin] = fn


def attach_i2c(bus, address, device):
    I2C_DEVICES.setdefault(bus, {})[address] = device


# -- network --------------------------------------------------------------------------------
class _Net:
    def __init__(self):
        self.aps = {}  # ssid -> password of the access points in range
        self.delay = 1  # isconnected() calls before an association completes
        self.attempts = []  # (ssid, ticks_ms) of every connect()
        self.active = False
        self.status = 1000
        self.pending = 0
        self.connected = False
        self.ssid = None


NET = _Net()

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202


class WLAN:
    def __init__(self, iface=0):
        self.iface = iface

    def active(self, v=None):
        if v is None:
            return NET.active
        NET.active = bool(v)
        if not v:
            NET.connected = False
            NET.status = STAT_IDLE

    def connect(self, ssid=None, key=None, **kw):
        if not NET.active:
            raise OSError("WiFi Internal Error")
        NET.attempts.append((ssid, _rt.ticks_ms()))
        NET.ssid = ssid
        NET.connected = False
        if ssid not in NET.aps:
            NET.status = STAT_NO_AP_FOUND
        elif NET.aps[ssid] != key:
            NET.status = STAT_WRONG_PASSWORD
        else:
            NET.status = STAT_CONNECTING
            NET.pending = NET.delay

    def disconnect(self):
        NET.connected = False
        NET.status = STAT_IDLE

    def isconnected(self):
        if NET.status == STAT_CONNECTING:
            if NET.ssid not in NET.aps:
                NET.status = STAT_NO_AP_FOUND
            elif NET.pending <= 0:
                NET.status = STAT_GOT_IP
                NET.connected = True
            else:
                NET.pending -= 1
        elif NET.connected and NET.ssid not in NET.aps:
            NET.connected = False  # the access point went away
            NET.status = STAT_NO_AP_FOUND
        return NET.connected

    def status(self, param=None):
        if param == "rssi":
            return -60
        return NET.status

    def config(self, *a, **kw):
        if a and a[0] == "mac":
            return b"\x24\x0a\xc4\x00\x00\x01"
        return None

    def ifconfig(self, *a):
        return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")


network_model = _module(
    "network",
    WLAN=WLAN,
    STA_IF=0,
    AP_IF=1,
    STAT_IDLE=STAT_IDLE,
    STAT_CONNECTING=STAT_CONNECTING,
    STAT_GOT_IP=STAT_GOT_IP,
    STAT_NO_AP_FOUND=STAT_NO_AP_FOUND,
    STAT_WRONG_PASSWORD=STAT_WRONG_PASSWORD,
    STAT_BEACON_TIMEOUT=200,
    STAT_ASSOC_FAIL=203,
    STAT_HANDSHAKE_TIMEOUT=204,
    hostname=lambda *a: "classlocker",
)


# -- ntptime (micropython-lib): time() in the port's epoch, settime() sets the RTC ----------------
class _Ntp:
    def __init__(self):
        self.unix = None  # the true time the server gives; None: no answer
        self.calls = 0


NTP = _Ntp()


def _ntp_time():
    NTP.calls += 1
    if NTP.unix is None or not NET.connected:
        raise OSError(110)  # ETIMEDOUT
    return NTP.unix - EPOCH_2000


def _ntp_settime():
    t = _ntp_time()
    tm = _gmtime(t)
    RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))


ntptime_model = _module(
    "ntptime", host="pool.ntp.org", timeout=1, time=_ntp_time, settime=_ntp_settime
)


def install():
    sys.modules["machine"] = machine_model
    sys.modules["network"] = network_model
    sys.modules["ntptime"] = ntptime_model
    sys.modules["time"] = time_model


def reset():
    """Fresh hardware: no pins, no devices, clock at 2000-01-01, no WiFi, no NTP answer."""
    PINS.clear()
    WIRES.clear()
    SPI_DEVICES.clear()
    I2C_DEVICES.clear()
    WDTS.clear()
    CLOCK.set_unix(EPOCH_2000)
    CLOCK.sets = 0
    NET.__init__()
    NTP.__init__()


# -- a DS3231 on the model I2C bus ----------------------------------------------------------------
def _bcd(v):
    return ((v // 10) << 4) | (v % 10)


def _unbcd(b):
    return (b >> 4) * 10 + (b & 0x0F)


class DS3231Model:
    """Registers 0x00-0x12 of the DS3231: time in BCD (24 h), OSF in status bit 7 (set at first
    power-up, cleared only by writing 0 to it), EOSC in control bit 7, the address pointer that
    increments and wraps at 0x12."""

    def __init__(self, unix=EPOCH_2000, osf=True):
        self.regs = bytearray(0x13)
        self.regs[0x0E] = 0x1C
        self.regs[0x0F] = 0x80 if osf else 0x00
        self.absent = False
        self.fail = False
        self.writes = 0
        self.set_unix(unix)

    def set_unix(self, t):
        self.base = t
        self.at = _rt.ticks_ms()

    def unix(self):
        return self.base + _rt.ticks_diff(_rt.ticks_ms(), self.at) // 1000

    def _encode(self):
        tm = unix_to_tuple(self.unix())
        r = self.regs
        r[0], r[1], r[2] = _bcd(tm[5]), _bcd(tm[4]), _bcd(tm[3])
        r[3] = tm[6] + 1
        r[4] = _bcd(tm[2])
        r[5] = _bcd(tm[1]) | (0x80 if tm[0] >= 2100 else 0)
        r[6] = _bcd(tm[0] % 100)

    def _decode(self):
        r = self.regs
        y = 2000 + _unbcd(r[6]) + (100 if r[5] & 0x80 else 0)
        self.set_unix(
            tuple_to_unix(
                (
                    y,
                    _unbcd(r[5] & 0x1F),
                    _unbcd(r[4]),
                    _unbcd(r[2] & 0x3F),
                    _unbcd(r[1]),
                    _unbcd(r[0]),
                )
            )
        )

    def read_mem(self, reg, n):
        self._encode()
        out = bytearray(n)
        for i in range(n):
            out[i] = self.regs[reg]
            reg = (reg + 1) % 0x13
        return out

    def write_mem(self, reg, data):
        self._encode()
        touched_time = False
        for b in data:
            if reg == 0x0F:
                self.regs[reg] = (b & 0x7F) | (self.regs[reg] & b & 0x80)  # OSF: write 0 only
            elif reg <= 0x06:
                self.regs[reg] = b
                touched_time = True
            elif reg < 0x11:
                self.regs[reg] = b
            reg = (reg + 1) % 0x13
        self.writes += 1
        if touched_time:
            self._decode()
