# runs-on: micropython
# hal/esp32.py with model `machine`, `network`, `ntptime` and `time` (ESP32 epoch 2000) and
# register models of the MFRC522, the MCP23017 expanders and the DS3231, wired as pinmap.json says.
import model_machine as mm

mm.install()  # before anything imports machine or time

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from locker.bays import CLOSED, OPEN, UNKNOWN  # noqa: E402
from model_mcp23017 import MCP23017Model  # noqa: E402
from model_mfrc522 import Card, MFRC522Model  # noqa: E402
from mpytest import raises, tmpdir  # noqa: E402

ROOT = os.getenv("MPYTEST_ROOT") or "."
with open(ROOT + "/hardware/pinmap.json") as _f:
    PINMAP = json.load(_f)
NOW = 1795546800  # 2026-11-24 19:00:00 UTC


def _bank(bays=8, rtc=None, wifi=None, expanders=(0x20, 0x21, 0x22), pinmap=None, **device):
    from hal.esp32 import Board

    mm.reset()
    exps = {}
    for a in expanders:
        exps[a] = MCP23017Model()
        mm.attach_i2c(0, a, exps[a])
    chip = MFRC522Model()
    mm.attach_spi(2, PINMAP["mfrc522"]["cs"], chip)
    mm.wire(PINMAP["mfrc522"]["rst"], chip.rst)
    if rtc is not None:
        mm.attach_i2c(0, 0x68, rtc)
    dev = {
        "locker_id": "L1",
        "site": "school",
        "board": "esp32",
        "bays": bays,
        "secret": "00" * 32,
        "data_dir": tmpdir("esp32") + "/var/L1",
    }
    if wifi:
        dev["wifi"] = wifi
    dev.update(device)
    board = Board(dev, pinmap=pinmap or PINMAP)
    board.made_at = time.ticks_ms()
    board.reader.PERIOD_MS = 0  # tests poll back to back
    return board, exps, chip


def test_epoch_of_the_model_port_is_2000_and_board_compensates():
    from hal import esp32

    assert time.gmtime(0)[0] == 2000
    assert esp32.EPOCH_OFFSET == 946684800


def test_every_lock_stays_off_from_power_on():
    board, exps, _ = _bank(bays=24)
    for a, chip in exps.items():
        assert chip.driven == [0], a  # never a pin driven high
        assert chip.outputs() == 0x00FF  # port A drives locks, port B reads reeds
        assert chip.regs[0x0D] == 0xFF  # pull-ups on the reeds
    assert board.locks() == [False] * 24
    buzzer = mm.PINS[PINMAP["buzzer"]["pin"]]
    led = mm.PINS[PINMAP["led"]["pin"]]
    assert buzzer.highs == 0 and led.highs == 0
    assert mm.PINS[PINMAP["mfrc522"]["cs"]].history[0] == 1  # reader deselected from the start


def test_only_expanders_of_configured_bays_are_touched():
    board, exps, _ = _bank(bays=8)
    assert exps[0x20].outputs() == 0x00FF
    assert exps[0x21].outputs() == 0 and exps[0x22].outputs() == 0


def test_set_lock_drives_the_pin_the_pin_map_names():
    board, exps, _ = _bank(bays=24)
    assert board.set_lock(1, True)
    assert exps[0x20].high() == 1
    board.set_lock(9, True)
    board.set_lock(24, True)
    assert exps[0x21].high() == 1 and exps[0x22].high() == 0x80
    board.set_lock(1, False)
    assert exps[0x20].high() == 0
    assert board.locks()[8] and board.locks()[23]


def test_door_reads_the_reed_through_the_expander():
    board, exps, _ = _bank(bays=8)
    exps[0x20].set_input(8 + 2, 0)  # reed closed (magnet near): door shut
    assert board.door(3) == CLOSED
    exps[0x20].set_input(8 + 2, None)  # switch open: pull-up
    assert board.door(3) == OPEN


def test_missing_expander_locks_nothing_and_is_picked_up_later():
    board, exps, _ = _bank(bays=16, expanders=(0x20,))
    assert board.door(9) == UNKNOWN
    assert board.set_lock(9, True) is False
    assert board.status()["expanders"] == {"0x20": True, "0x21": False}
    late = MCP23017Model()
    mm.attach_i2c(0, 0x21, late)
    board.service(time.ticks_add(time.ticks_ms(), 5000))
    assert board.bank.expander_ok[0x21]
    assert late.high() == 1  # what the core asked for is applied once it answers
    assert late.driven == [0, 1]


def test_expander_brownout_is_noticed_and_outputs_restored():
    board, exps, _ = _bank(bays=8)
    board.set_lock(2, True)
    exps[0x20].reset()  # every output dropped: the solenoid is off
    assert exps[0x20].high() == 0
    board.service(time.ticks_add(time.ticks_ms(), 5000))
    assert exps[0x20].high() == 1 << 1
    assert board.bank.resets == 1


def test_poll_card_reads_through_spi_once_per_presentation():
    board, _, chip = _bank()
    assert board.poll_card() is None
    chip.field.add(Card("04112233445566", sak=0x00))
    assert board.poll_card() == bytes([4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66])
    assert board.poll_card() is None
    assert board.status()["reader"]["version"] == 0x92


def test_reader_is_not_asked_more_often_than_its_period():
    board, _, chip = _bank()
    board.reader.PERIOD_MS = 60000
    board.reader._next = time.ticks_ms()
    board.poll_card()
    before = chip.transceives
    chip.field.add(Card("04a1b2c3"))
    for _ in range(5):
        assert board.poll_card() is None
    assert chip.transceives == before


def test_dead_reader_does_not_stop_the_board():
    from hal.esp32 import Board

    board, _, chip = _bank()
    chip.dead = True
    board.reader.chip.timeout_ms = 2
    for _ in range(5):
        assert board.poll_card() is None
    assert isinstance(board, Board)


def test_watchdog_started_and_fed_by_service():
    board, _, _ = _bank()
    assert len(mm.WDTS) == 1 and mm.WDTS[0].timeout == PINMAP["watchdog_ms"]
    board.service()
    board.service()
    assert mm.WDTS[0].feeds == 2
    board, _, _ = _bank(watchdog_ms=0)  # bench work at the REPL
    assert mm.WDTS == [] and board.wdt is None
    board.service()


def test_clock_not_trusted_without_ntp_or_a_good_rtc():
    board, _, _ = _bank()
    assert board.now() is None
    board, _, _ = _bank(rtc=mm.DS3231Model(unix=NOW, osf=True))  # oscillator stopped once
    assert board.now() is None
    assert board.status()["rtc"] == "lost"


def test_clock_trusted_from_ds3231_at_boot_and_system_clock_set():
    board, _, _ = _bank(rtc=mm.DS3231Model(unix=NOW, osf=False))
    assert board.clock.source == "rtc"
    assert abs(board.now() - NOW) <= 2
    assert abs(mm.CLOCK.unix() - NOW) <= 2  # the ESP32's own RTC was set from it
    assert abs(time.time() + 946684800 - NOW) <= 2


def test_the_host_setting_a_known_clock_reports_how_far_it_was_off():
    board, _, _ = _bank(rtc=mm.DS3231Model(unix=NOW, osf=False))
    assert board.clock_correction is None
    board.set_clock(NOW + 300)
    assert 298 <= board.clock_correction <= 302  # the state's clock_offset_s
    assert abs(board.now() - (NOW + 300)) <= 2


def test_rtc_reading_before_2024_is_not_believed():
    board, _, _ = _bank(rtc=mm.DS3231Model(unix=mm.EPOCH_2000 + 86400, osf=False))
    assert board.now() is None
    assert board.status()["rtc"] == "invalid"


def _run(board, start, until, step=100):
    """service() at simulated milliseconds start..until after the board was made."""
    t = start
    while t < until:
        board.service(time.ticks_add(board.made_at, t))
        t += step
    return t


def test_wifi_connects_then_ntp_sets_clock_and_steps_the_ds3231():
    rtc = mm.DS3231Model(osf=True)
    board, _, _ = _bank(rtc=rtc, wifi={"ssid": "school", "password": "pw"})
    calls = []
    board.on_clock_set = lambda: calls.append(1)
    mm.NET.aps["school"] = "pw"
    mm.NTP.unix = NOW
    assert board.rssi() is None  # no signal to report before the association
    _run(board, 0, 1000)
    assert board.online()
    assert board.rssi() == -60  # the state's rssi, from the WLAN
    assert board.clock.source == "ntp"
    assert board.clock_correction is None  # the clock was not known before: no offset
    assert abs(board.now() - NOW) <= 2
    assert abs(rtc.unix() - NOW) <= 2  # the DS3231 stepped to NTP time
    assert not rtc.regs[0x0F] & 0x80  # and its oscillator-stop flag cleared
    assert calls == [1]
    assert board.clock.ntp_syncs == 1
    _run(board, 1000, 60000, step=1000)
    assert board.clock.ntp_syncs == 1  # not again before the hour


def test_wifi_backoff_doubles_with_jitter_and_resets_on_success():
    board, _, _ = _bank(wifi={"ssid": "school", "password": "pw"})
    starts = []
    t = 0
    while t < 400000:
        before = board.net.attempts
        board.service(time.ticks_add(board.made_at, t))
        if board.net.attempts != before:
            starts.append(t)
        t += 100
    gaps = [starts[i + 1] - starts[i] for i in range(len(starts) - 1)]
    expect = board.net.BACKOFF_MIN_MS
    for g in gaps:
        assert expect <= g <= expect + expect // 4 + 100, (g, expect)
        expect = min(expect * 2, board.net.BACKOFF_MAX_MS)
    assert len(gaps) >= 6
    mm.NET.aps["school"] = "pw"
    _run(board, t, t + 400000, step=500)
    assert board.online()
    assert board.net._backoff == board.net.BACKOFF_MIN_MS


def test_wrong_password_is_retried_with_backoff_not_hammered():
    board, _, _ = _bank(wifi={"ssid": "school", "password": "nope"})
    mm.NET.aps["school"] = "pw"
    _run(board, 0, 10000)
    assert 2 <= board.net.attempts <= 3
    assert not board.online()


def test_wifi_drop_is_noticed_and_reconnected():
    board, _, _ = _bank(wifi={"ssid": "school", "password": "pw"})
    mm.NET.aps["school"] = "pw"
    _run(board, 0, 1000)
    assert board.online()
    del mm.NET.aps["school"]
    _run(board, 1000, 1500)
    assert not board.online()
    mm.NET.aps["school"] = "pw"
    _run(board, 1500, 20000)
    assert board.online()


def test_ntp_failures_back_off():
    board, _, _ = _bank(wifi={"ssid": "school", "password": "pw"})
    mm.NET.aps["school"] = "pw"
    _run(board, 0, 100000, step=500)
    assert board.now() is None
    assert 3 <= mm.NTP.calls <= 4  # at 0, 15 s, 45 s, 105 s: not every round
    mm.NTP.unix = NOW
    _run(board, 100000, 200000, step=500)
    assert abs(board.now() - NOW) <= 2


def test_feedback_patterns_play_without_blocking():
    board, _, _ = _bank()
    buzzer = mm.PINS[PINMAP["buzzer"]["pin"]]
    led = mm.PINS[PINMAP["led"]["pin"]]
    t0 = time.ticks_ms()
    board.feedback("granted")
    assert buzzer() == 1 and led() == 1
    board.service(time.ticks_add(t0, 200))
    assert buzzer() == 0 and led() == 1
    board.service(time.ticks_add(t0, 2500))
    board.service(time.ticks_add(t0, 2600))
    assert buzzer() == 0 and led() == 0
    t0 = time.ticks_ms()
    board.feedback("denied", "no_free_bay")  # one long tone
    board.service(time.ticks_add(t0, 500))
    assert buzzer() == 1
    board.service(time.ticks_add(t0, 1000))
    assert buzzer() == 0
    for outcome in ("boot", "override", "alarm", "something new"):
        board.feedback(outcome)
        assert buzzer() == 1


def test_more_bays_than_the_pin_map_wires_is_refused():
    with raises(ValueError) as e:
        _bank(bays=25)
    assert "25" in str(e.value)


def test_bad_pin_spec_names_the_bay():
    pm = json.loads(json.dumps(PINMAP))
    pm["bays"][2]["lock"] = "0x20:C1"
    with raises(ValueError) as e:
        _bank(pinmap=pm)
    assert "bay 3 lock" in str(e.value)
    pm["bays"][2]["lock"] = "0x20:B2"  # the reed pin of the same bay
    with raises(ValueError) as e:
        _bank(pinmap=pm)
    assert "0x20" in str(e.value)


def test_small_bank_on_plain_gpio():
    pm = json.loads(json.dumps(PINMAP))
    pm["bays"] = [
        {"bay": 1, "lock": "gpio:32", "reed": "gpio:34"},
        {"bay": 2, "lock": "gpio:33", "reed": "gpio:35"},
    ]
    board, exps, _ = _bank(bays=2, pinmap=pm)
    lock = mm.PINS[32]
    assert lock.history == [0] and lock.mode == mm.Pin.OUT
    board.set_lock(1, True)
    assert lock() == 1 and mm.PINS[33]() == 0
    mm.PINS[34].level = 1
    assert board.door(1) == OPEN
    mm.PINS[34].level = 0
    assert board.door(1) == CLOSED
    assert exps[0x20].outputs() == 0


def test_data_dir_is_created_and_make_board_builds_an_esp32():
    from hal import make_board

    mm.reset()
    mm.attach_i2c(0, 0x20, MCP23017Model())
    d = tmpdir("esp32mk") + "/var/L2"
    board = make_board(
        {
            "locker_id": "L2",
            "board": "esp32",
            "bays": 8,
            "secret": "00" * 32,
            "data_dir": d,
            "pinmap": PINMAP,
        },
        {"tick_ms": 1000},
    )
    assert board.nbays == 8 and board.data_dir == d
    os.stat(d)


def test_the_locker_core_runs_on_the_esp32_board():
    """A card on the MFRC522 model -> the locker's decision -> the expander pin of that bay; the
    reed through the expander; the clock from the DS3231. The same steps as app._reader."""
    import mpytest
    from locker import settings
    from locker.core import Locker

    day = 1795478400  # Tuesday 2026-11-24, a school day (fixture timetable)
    rtc = mm.DS3231Model(unix=day + 7 * 3600 + 50 * 60, osf=False)  # 07:50 UTC
    board, exps, chip = _bank(bays=8, rtc=rtc)
    with open(board.data_dir + "/config.bin", "wb") as f:
        f.write(mpytest.fixture("bundle-v1.bin"))
    device = {
        "locker_id": "L1",
        "site": "school",
        "bays": 8,
        "secret": mpytest.fixture("secret.hex").decode(),
    }
    locker = Locker(board, device, settings.load(device))
    for pin in range(8, 16):
        exps[0x20].set_input(pin, 0)  # every door shut
    assert exps[0x20].high() == 0

    chip.field.add(Card("04A10004"))  # S1, staff
    uid = board.poll_card()
    r = locker.tap(uid)
    assert r["result"] == "granted" and r["action"] == "deposit", r
    bay = r["bay"]
    assert exps[0x20].high() == 1 << (bay - 1)  # that bay's solenoid, and only it
    assert board.indicators.last[0] == "granted"
    assert board.poll_card() is None  # the card still lies on the reader: no second tap

    exps[0x20].set_input(8 + bay - 1, None)  # door opens: the reed's pull-up wins
    locker.door(bay, board.door(bay))
    exps[0x20].set_input(8 + bay - 1, 0)
    locker.door(bay, board.door(bay))
    assert exps[0x20].high() == 0  # locked again, phone inside
    assert locker.state()["bays"][bay - 1]["holder"] == "S1"
    assert locker.state()["clock_ok"] is True
