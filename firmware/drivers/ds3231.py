# Maxim DS3231 real-time clock on I2C, kept in UTC.
#
# The clock counts on its CR2032 through power cuts. Its oscillator-stop flag (OSF, status bit 7)
# is set whenever the oscillator stopped (first power-up, a flat cell) and stays set until the time
# is written: a clock with OSF set is not to be trusted. Times cross this driver as the chip keeps
# them, plain calendar fields in UTC, in the order of the port's time.gmtime() tuple: the driver
# knows no epoch; turning fields into seconds is its user's business (hal/esp32.py, the port's own
# time.mktime and time.gmtime).
from micropython import const

_SECONDS = const(0x00)
_CONTROL = const(0x0E)
_STATUS = const(0x0F)
_OSF = const(0x80)
_CENTURY = const(0x80)


def _bcd(v):
    return (v >> 4) * 10 + (v & 0x0F)


def _to_bcd(v):
    return ((v // 10) << 4) | (v % 10)


class DS3231:
    def __init__(self, i2c, address=0x68):
        self.i2c = i2c
        self.address = address
        self._buf = bytearray(7)
        self._one = bytearray(1)

    def lost_time(self):
        """True when the oscillator stopped since the time was last set (OSF)."""
        self.i2c.readfrom_mem_into(self.address, _STATUS, self._one)
        return bool(self._one[0] & _OSF)

    def read(self):
        """(year, month, day, hour, minute, second) UTC as the clock has them (check lost_time()
        before trusting them). ValueError when the registers hold no valid date."""
        b = self._buf
        self.i2c.readfrom_mem_into(self.address, _SECONDS, b)
        sec = _bcd(b[0] & 0x7F)
        minute = _bcd(b[1] & 0x7F)
        h = b[2]
        if h & 0x40:  # 12-hour mode (not how we set it, but a clock set elsewhere may be)
            hour = _bcd(h & 0x1F) % 12 + (12 if h & 0x20 else 0)
        else:
            hour = _bcd(h & 0x3F)
        day = _bcd(b[4] & 0x3F)
        month = _bcd(b[5] & 0x1F)
        year = 2000 + _bcd(b[6]) + (100 if b[5] & _CENTURY else 0)
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 60):
            raise ValueError("DS3231 holds no valid date")
        return year, month, day, hour, minute, sec

    def write(self, tm):
        """Sets the clock (24-hour mode) and clears OSF. tm: (year, month, day, hour, minute,
        second, weekday 0..6 with Monday 0, ...) UTC, as time.gmtime() returns it."""
        year, month, day, hour, minute, sec, weekday = tm[:7]
        if not 2000 <= year <= 2199:
            raise ValueError("DS3231 counts years 2000-2199, not {}".format(year))
        b = self._buf
        b[0] = _to_bcd(sec)
        b[1] = _to_bcd(minute)
        b[2] = _to_bcd(hour)  # bit 6 clear: 24-hour mode
        b[3] = weekday + 1  # the chip's day of week 1..7, Monday = 1
        b[4] = _to_bcd(day)
        b[5] = _to_bcd(month) | (_CENTURY if year >= 2100 else 0)
        b[6] = _to_bcd(year % 100)
        self.i2c.writeto_mem(self.address, _SECONDS, b)
        self.i2c.readfrom_mem_into(self.address, _STATUS, self._one)
        self._one[0] &= ~_OSF & 0xFF
        self.i2c.writeto_mem(self.address, _STATUS, self._one)

    def enable_oscillator_on_battery(self):
        """EOSC (control bit 7) must be 0, or the clock stops when main power goes."""
        self.i2c.readfrom_mem_into(self.address, _CONTROL, self._one)
        if self._one[0] & 0x80:
            self._one[0] &= 0x7F
            self.i2c.writeto_mem(self.address, _CONTROL, self._one)
