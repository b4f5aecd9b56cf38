# A register-level model of the Microchip MCP23017 (datasheet DS20001952, IOCON.BANK = 0) on the
# model I2C bus: power-on values (IODIR = 0xFF: every pin an input), the address pointer that
# increments through a multi-byte access (SEQOP = 0) or toggles within an A/B pair (SEQOP = 1),
# GPIO reads (outputs read their latch, inputs the outside level through IPOL, a floating input
# with its pull-up reads 1), writes to GPIO landing in OLAT, and a reset (the RESET pin or a
# brown-out). `driven` records every change of the pins actually driven high, so a test can prove
# that no lock was ever energised when it should not have been.

_NAMES = (
    "IODIRA",
    "IODIRB",
    "IPOLA",
    "IPOLB",
    "GPINTENA",
    "GPINTENB",
    "DEFVALA",
    "DEFVALB",
    "INTCONA",
    "INTCONB",
    "IOCON",
    "IOCON",
    "GPPUA",
    "GPPUB",
    "INTFA",
    "INTFB",
    "INTCAPA",
    "INTCAPB",
    "GPIOA",
    "GPIOB",
    "OLATA",
    "OLATB",
)


class MCP23017Model:
    def __init__(self):
        self.outside = [None] * 16  # level wired to each pin from outside; None: not connected
        self.absent = False  # no ACK: the chip is unplugged or its address is wrong
        self.fail = False  # the bus hangs
        self.resets = 0
        self.driven = [0]  # history of the mask of pins driving high
        self.reset()

    def reset(self):
        self.regs = bytearray(22)
        self.regs[0] = 0xFF
        self.regs[1] = 0xFF
        self.resets += 1
        self._note()

    # -- pins as the outside world sees them -------------------------------------------------
    def _pair(self, a):
        return self.regs[a] | (self.regs[a + 1] << 8)

    def outputs(self):
        return ~self._pair(0x00) & 0xFFFF

    def high(self):
        """Mask of pins driving high right now."""
        return self.outputs() & self._pair(0x14)

    def _note(self):
        h = self.high()
        if h != self.driven[-1] and len(self.driven) < 512:
            self.driven.append(h)

    def set_input(self, pin, level):
        self.outside[pin] = level

    def _gpio(self, port):
        v = 0
        for bit in range(8):
            pin = port * 8 + bit
            if not (self.regs[port] >> bit) & 1:  # output: reads its latch
                level = (self.regs[0x14 + port] >> bit) & 1
            else:
                level = self.outside[pin]
                if level is None:
                    level = (self.regs[0x0C + port] >> bit) & 1  # pull-up, or 0 floating
                level ^= (self.regs[0x02 + port] >> bit) & 1
            v |= level << bit
        return v

    # -- I2C register access (model_machine's I2C calls these) -----------------------------
    def _next(self, reg):
        if self.regs[0x0A] & 0x20:  # SEQOP = 1: the pointer toggles within the pair
            return reg ^ 1
        return (reg + 1) % 22

    def read_mem(self, reg, n):
        out = bytearray(n)
        for i in range(n):
            if reg in (0x12, 0x13):
                out[i] = self._gpio(reg - 0x12)
            else:
                out[i] = self.regs[reg]
            reg = self._next(reg)
        return out

    def write_mem(self, reg, data):
        for b in data:
            if reg in (0x12, 0x13):
                reg_w = reg + 2  # a write to GPIO lands in OLAT
            elif reg in (0x0E, 0x0F, 0x10, 0x11):
                reg_w = None  # INTF / INTCAP are read-only
            else:
                reg_w = reg
            if reg_w is not None:
                self.regs[reg_w] = b
                if reg_w == 0x0A:
                    self.regs[0x0B] = b
                if reg_w == 0x0B:
                    self.regs[0x0A] = b
            self._note()
            reg = self._next(reg)
