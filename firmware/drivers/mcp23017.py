# Microchip MCP23017: 16 GPIO on I2C, the lock and reed expander of a locker bank.
#
# At power-on and after a reset every pin is an input (IODIR = 0xFF), so a lock driver's gate sees
# only its pull-down resistor and every solenoid is off. setup() keeps it that way: the output
# latches are written 0 *before* the pins are turned into outputs, so no pin ever drives high until
# write() is told to. Registers are addressed with IOCON.BANK = 0 (the reset state): A/B pairs are
# adjacent, and a two-byte access covers port A then port B.
from micropython import const

_IODIR = const(0x00)
_IPOL = const(0x02)
_GPINTEN = const(0x04)
_IOCON = const(0x0A)
_GPPU = const(0x0C)
_GPIO = const(0x12)
_OLAT = const(0x14)


def parse_pin(name):
    """'A0'..'A7' -> 0..7, 'B0'..'B7' -> 8..15."""
    if len(name) != 2 or name[0] not in "AB" or name[1] not in "01234567":
        raise ValueError("expander pin {!r}: expected A0..A7 or B0..B7".format(name))
    return (8 if name[0] == "B" else 0) + int(name[1])


class MCP23017:
    def __init__(self, i2c, address=0x20):
        self.i2c = i2c
        self.address = address
        self._buf = bytearray(2)
        self._outputs = 0  # pin mask of outputs
        self._pullups = 0
        self.olat = 0  # what the firmware wants on the output latches

    # -- transport ---------------------------------------------------------------------------
    def read_register(self, reg):
        """A 16-bit register pair: port A in bits 0-7, port B in bits 8-15."""
        self.i2c.readfrom_mem_into(self.address, reg, self._buf)
        return self._buf[0] | (self._buf[1] << 8)

    def write_register(self, reg, value):
        self._buf[0] = value & 0xFF
        self._buf[1] = (value >> 8) & 0xFF
        self.i2c.writeto_mem(self.address, reg, self._buf)

    # -- set-up --------------------------------------------------------------------------------
    def setup(self, outputs, pullups=0, initial=0):
        """Pins in mask `outputs` become outputs at the levels in `initial` (default low);
        inputs in `pullups` get the 100 k pull-up."""
        self._outputs = outputs & 0xFFFF
        self._pullups = pullups & 0xFFFF
        self.olat = initial & self._outputs
        self.write_register(_IOCON, 0)  # BANK 0, sequential addressing (both halves of the pair)
        self.write_register(_OLAT, self.olat)  # latches first ...
        self.write_register(_IPOL, 0)
        self.write_register(_GPINTEN, 0)
        self.write_register(_GPPU, self._pullups)
        self.write_register(_IODIR, ~self._outputs & 0xFFFF)  # ... then outputs

    def configured(self):
        """False when the chip lost its set-up (a reset or a brown-out): re-run setup()."""
        return self.read_register(_IODIR) == (~self._outputs & 0xFFFF) and (
            self.read_register(_GPPU) == self._pullups
        )

    def restore(self):
        """setup() again, then the outputs as they were meant to be."""
        self.setup(self._outputs, self._pullups, self.olat)

    # -- pins --------------------------------------------------------------------------------
    def write(self, pin, value):
        if not (self._outputs >> pin) & 1:
            raise ValueError("expander 0x{:02x} pin {} is not an output".format(self.address, pin))
        want = (self.olat | (1 << pin)) if value else (self.olat & ~(1 << pin))
        self.write_register(_OLAT, want)
        self.olat = want

    def read_all(self):
        """The 16 pin levels (GPIO A in bits 0-7, B in 8-15)."""
        return self.read_register(_GPIO)

    def read(self, pin):
        return (self.read_register(_GPIO) >> pin) & 1

    def latches(self):
        return self.read_register(_OLAT)
