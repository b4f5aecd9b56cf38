# runs-on: micropython
# heapsize: 96k
# drivers/mcp23017.py against the register model on the model I2C bus.
import model_machine as mm
from drivers.mcp23017 import MCP23017, parse_pin
from model_mcp23017 import MCP23017Model
from mpytest import raises

LOCKS = 0x00FF  # port A drives the lock MOSFETs
REEDS = 0xFF00  # port B reads the reed switches


def _expander(address=0x20):
    mm.reset()
    chip = MCP23017Model()
    mm.attach_i2c(0, address, chip)
    return MCP23017(mm.I2C(0, freq=400000), address), chip


def test_parse_pin_names():
    assert parse_pin("A0") == 0 and parse_pin("A7") == 7
    assert parse_pin("B0") == 8 and parse_pin("B7") == 15
    for bad in ("C0", "A8", "B", "a1", "A10"):
        with raises(ValueError) as e:
            parse_pin(bad)
        assert bad in str(e.value)


def test_power_on_every_pin_is_an_input_nothing_driven():
    _, chip = _expander()
    assert chip.outputs() == 0 and chip.high() == 0


def test_setup_makes_outputs_without_ever_driving_them_high():
    exp, chip = _expander()
    chip.regs[0x14] = 0xFF  # latches left high by an earlier run (no reset in between)
    chip.regs[0x15] = 0xFF
    exp.setup(LOCKS, pullups=REEDS)
    assert chip.outputs() == LOCKS
    assert chip.driven == [0]  # no pin was driven high at any moment
    assert chip.regs[0x0C] == 0 and chip.regs[0x0D] == 0xFF  # pull-ups on the reed side only
    assert exp.configured()


def test_write_drives_one_lock_and_leaves_the_others():
    exp, chip = _expander()
    exp.setup(LOCKS, pullups=REEDS)
    exp.write(2, 1)
    assert chip.high() == 1 << 2
    exp.write(5, 1)
    exp.write(2, 0)
    assert chip.high() == 1 << 5
    assert exp.latches() == 1 << 5
    with raises(ValueError):
        exp.write(9, 1)  # a reed input


def test_reads_reed_levels_with_pullups():
    exp, chip = _expander()
    exp.setup(LOCKS, pullups=REEDS)
    for pin in range(8, 16):
        chip.set_input(pin, 0)  # reed closed to ground: door shut
    chip.set_input(11, None)  # switch open: the pull-up wins
    levels = exp.read_all()
    assert (levels >> 8) == 1 << 3
    assert exp.read(11) == 1 and exp.read(12) == 0


def test_reset_is_detected_and_restore_brings_outputs_back():
    exp, chip = _expander()
    exp.setup(LOCKS, pullups=REEDS)
    exp.write(0, 1)
    chip.reset()  # brown-out: every pin an input again, the solenoid drops out
    assert chip.high() == 0
    assert not exp.configured()
    exp.restore()
    assert exp.configured()
    assert chip.high() == 1


def test_sequential_and_toggle_addressing_agree():
    exp, chip = _expander()
    exp.setup(LOCKS, pullups=REEDS)
    chip.regs[0x0A] = chip.regs[0x0B] = 0x20  # SEQOP = 1: pointer toggles within the pair
    exp.write(1, 1)
    assert chip.high() == 2
    assert exp.read_register(0x00) == 0xFF00


def test_missing_expander_raises_oserror():
    mm.reset()
    exp = MCP23017(mm.I2C(0), 0x21)
    with raises(OSError):
        exp.setup(LOCKS, pullups=REEDS)
