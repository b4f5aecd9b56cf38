# runs-on: micropython
# heapsize: 96k
# drivers/ds3231.py against the DS3231 register model: BCD, the century bit, OSF. The driver takes
# and gives calendar fields (time.gmtime()'s order); the calendar that turns them into seconds is
# the clock user's (the firmware's own, locker/timetable.py, is checked against the model's here).
import model_machine as mm
from drivers.ds3231 import DS3231
from locker.timetable import civil_from_days, days_from_civil
from mpytest import raises


def _rtc(**kw):
    mm.reset()
    chip = mm.DS3231Model(**kw)
    mm.attach_i2c(0, 0x68, chip)
    return DS3231(mm.I2C(0)), chip


def test_calendar_round_trips_and_known_dates():
    assert days_from_civil(1970, 1, 1) == 0
    assert days_from_civil(2000, 1, 1) * 86400 == 946684800
    assert days_from_civil(2026, 11, 24) * 86400 + 19 * 3600 == 1795546800
    assert civil_from_days(days_from_civil(2024, 2, 29)) == (2024, 2, 29)
    for z in range(10950, 11400, 7):  # across 2000 and the leap days around it
        assert days_from_civil(*civil_from_days(z)) == z
        assert mm.civil_from_days(z) == civil_from_days(z)


def test_fresh_chip_reports_lost_time():
    rtc, chip = _rtc()
    assert rtc.lost_time()


def test_write_sets_bcd_registers_and_clears_osf():
    rtc, chip = _rtc()
    t = 1795546800 + 59 * 60 + 58  # 2026-11-24 19:59:58 UTC, a Tuesday
    rtc.write(mm.unix_to_tuple(t))
    assert not rtc.lost_time()
    r = chip.read_mem(0, 7)
    assert bytes(r[1:]) == bytes([0x59, 0x19, 2, 0x24, 0x11, 0x26])
    assert abs(mm.tuple_to_unix(rtc.read()) - t) <= 1
    assert abs(chip.unix() - t) <= 1


def test_read_handles_12_hour_mode_and_century():
    rtc, chip = _rtc(osf=False)
    pm = bytes([0x30, 0x15, 0x40 | 0x20 | 0x03, 5, 0x01, 0x02, 0x27])  # 3:15:30 PM, 12-hour mode
    real = chip.read_mem
    chip.read_mem = lambda reg, n: pm
    assert rtc.read() == (2027, 2, 1, 15, 15, 30)
    chip.read_mem = real
    rtc.write(mm.unix_to_tuple(days_from_civil(2101, 3, 1) * 86400))
    assert chip.regs[5] & 0x80  # century bit
    assert rtc.read() == (2101, 3, 1, 0, 0, 0)


def test_garbage_registers_are_refused():
    rtc, chip = _rtc()
    chip.read_mem = lambda reg, n: bytes([0x00, 0x00, 0x00, 1, 0x00, 0x13, 0x20])
    with raises(ValueError):
        rtc.read()
    with raises(ValueError):
        rtc.write(mm.unix_to_tuple(0))  # 1970: outside what the chip counts


def test_oscillator_enabled_on_battery():
    rtc, chip = _rtc()
    chip.regs[0x0E] = 0x9C  # EOSC set: would stop on the cell
    rtc.enable_oscillator_on_battery()
    assert chip.regs[0x0E] == 0x1C
