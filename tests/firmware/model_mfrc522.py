# A register-level model of the NXP MFRC522 and of ISO/IEC 14443 A cards, written from the
# datasheet (rev. 3.9, sections 9 and 10) and ISO/IEC 14443-3, for testing drivers/mfrc522.py.
#
# What it models:
# - registers with their reset values; CommandReg commands Idle, CalcCRC, Transceive, SoftReset;
#   ComIrqReg / DivIrqReg with the Set1 / Set2 write semantics; ErrorReg cleared when a command
#   starts; the 64-byte FIFO with FlushBuffer, FIFOLevelReg and BufferOvfl.
# - Transceive: starts when StartSend is set with Transceive active; sends the FIFO with
#   BitFramingReg.TxLastBits; received bits are stored from bit RxAlign of the first FIFO byte;
#   ControlReg.RxLastBits gives the valid bits of the last byte; no answer makes the timer run out
#   (TimerIRq) only when TModeReg.TAuto is set and a reload value is programmed, as on the chip.
# - bit collisions: when the cards answering disagree on a bit, ErrorReg.CollErr, ComIrqReg.ErrIRq,
#   and CollReg.CollPos = the position of the first collided bit in the received frame as laid out
#   in the FIFO (1..32 counting from bit 0 of the first FIFO byte, RxAlign included; 0 means 32;
#   CollPosNotValid beyond). With CollReg.ValuesAfterColl = 0 that bit and all after it read 0.
# - the CRC coprocessor (CRC_A polynomial, preset from ModeReg.CRCPreset), result in CRCResultReg.
# - the antenna (TxControlReg Tx1RFEn/Tx2RFEn) and 100 % ASK (TxASKReg.Force100ASK): without them
#   no card is powered or hears anything.
# - SPI framing: address byte (reg << 1) | 0x80 for read; multi-byte reads and writes.
# - a hard reset on NRSTPD's rising edge, SoftReset, a brown-out (registers back to reset values),
#   and a dead chip (reads 0x00 / commands never finish).
# Cards: IDLE, READY (per cascade level), ACTIVE, HALT and the READY*/ACTIVE* variants; REQA/WUPA,
# anticollision with partial bits, SELECT (CRC checked), HLTA; a card can leave the field after a
# given number of frames (pulled mid-read).

_REQA = 0x26
_WUPA = 0x52
_SEL = (0x93, 0x95, 0x97)

IDLE, READY, ACTIVE, HALT = "idle", "ready", "active", "halt"

_RESET_VALUES = {
    0x01: 0x20,  # CommandReg: RcvOff
    0x02: 0x80,
    0x04: 0x14,  # ComIrqReg
    0x0B: 0x08,
    0x0D: 0x00,
    0x0E: 0xA0,  # CollReg: ValuesAfterColl, CollPosNotValid
    0x11: 0x3F,  # ModeReg
    0x14: 0x80,  # TxControlReg: antenna off
    0x15: 0x00,  # TxASKReg
    0x37: 0x92,  # VersionReg: MFRC522 v2.0
}


def crc_a(data, preset=0x6363):
    crc = preset
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc & 0xFFFF


def _bits_of(data, nbits=None):
    out = []
    for b in data:
        for i in range(8):
            out.append((b >> i) & 1)
    return out if nbits is None else out[:nbits]


def _bytes_of(bits):
    out = bytearray((len(bits) + 7) // 8)
    for i, v in enumerate(bits):
        if v:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


class Card:
    """A type A card or fob: uid of 4, 7 or 10 bytes."""

    def __init__(self, uid, sak=0x08, leave_after=None):
        if isinstance(uid, str):
            uid = bytes(int(uid[i : i + 2], 16) for i in range(0, len(uid), 2))
        self.uid = bytes(uid)
        self.sak = sak
        self.leave_after = leave_after  # frames it hears before it is pulled away
        self.field = None
        self.state = IDLE
        self.star = False
        self.level = 0
        self.frames = 0
        # per cascade level: 4 bytes + BCC
        self.levels = []
        u = self.uid
        if len(u) == 4:
            parts = [u]
        elif len(u) == 7:
            parts = [bytes([0x88]) + u[:3], u[3:]]
        else:
            parts = [bytes([0x88]) + u[:3], bytes([0x88]) + u[3:6], u[6:]]
        for p in parts:
            self.levels.append(bytes(p) + bytes([p[0] ^ p[1] ^ p[2] ^ p[3]]))
        self.atqa = bytes([(0x04, 0x44, 0x84)[len(self.levels) - 1], 0x00])

    def _error(self):
        self.state = HALT if self.star else IDLE
        return None

    def hear(self, bits):
        """The card receives a frame (list of bits) and returns its answer (bits) or None."""
        self.frames += 1
        if self.leave_after is not None and self.frames > self.leave_after:
            self.field.remove(self)
            return None
        n = len(bits)
        data = _bytes_of(bits)
        if n == 7:
            cmd = data[0]
            if (cmd == _REQA and self.state == IDLE) or (
                cmd == _WUPA and self.state in (IDLE, HALT)
            ):
                self.star = self.state == HALT
                self.state = READY
                self.level = 0
                return _bits_of(self.atqa)
            if self.state in (READY, ACTIVE):
                return self._error()
            return None
        if self.state == READY:
            if n < 16 or data[0] != _SEL[self.level]:
                return self._error()
            nvb = data[1]
            cl = self.levels[self.level]
            if nvb == 0x70:
                if n != 72 or crc_a(data[:7]) != data[7] | (data[8] << 8):
                    return self._error()
                if data[2:7] != cl:
                    return self._error()
                if self.level + 1 < len(self.levels):
                    self.level += 1
                    sak = 0x04
                else:
                    self.state = ACTIVE
                    sak = self.sak & ~0x04 & 0xFF
                c = crc_a(bytes([sak]))
                return _bits_of(bytes([sak, c & 0xFF, c >> 8]))
            known = ((nvb >> 4) - 2) * 8 + (nvb & 7)
            if known < 0 or known > 32 or n != 16 + known:
                return self._error()
            mine = _bits_of(cl)
            if bits[16:] != mine[:known]:
                return None  # not this card: stays READY, silent
            return mine[known:]
        if self.state == ACTIVE:
            if (
                n == 32
                and data[0] == 0x50
                and data[1] == 0
                and crc_a(data[:2]) == data[2] | (data[3] << 8)
            ):
                self.state = HALT
                return None
            return self._error()
        return None  # IDLE / HALT ignore everything but REQA / WUPA


class Field:
    def __init__(self):
        self.cards = []
        self.powered = False

    def add(self, card):
        card.field = self
        card.state = IDLE  # powered up afresh
        card.frames = 0
        self.cards.append(card)
        return card

    def remove(self, card):
        if card in self.cards:
            self.cards.remove(card)
        card.state = IDLE

    def power(self, on):
        if not on:
            for c in self.cards:
                c.state = IDLE
        self.powered = on


class MFRC522Model:
    def __init__(self, field=None):
        self.field = field or Field()
        self.regs = bytearray(64)
        self.fifo = []
        self.dead = False  # no answer on SPI at all: every register reads 0x00
        self.hung = False  # registers work but no command ever completes
        self.resets = 0
        self.transceives = 0
        self.log = []  # frames sent to the field, as bytes (for tests)
        self._rst_level = 1
        self.power_on()

    # -- reset -------------------------------------------------------------------------------
    def power_on(self):
        for i in range(64):
            self.regs[i] = _RESET_VALUES.get(i, 0)
        self.fifo = []
        self.field.power(False)

    def brownout(self):
        self.power_on()

    def rst(self, value=None):
        """The NRSTPD pin: low = hard power-down, a rising edge resets the chip."""
        if value is None:
            return self._rst_level
        if value and not self._rst_level:
            self.resets += 1
            self.power_on()
        elif not value:
            self.field.power(False)
        self._rst_level = 1 if value else 0

    # -- register access ---------------------------------------------------------------------
    def read_register(self, reg):
        if self.dead:
            return 0x00
        reg &= 0x3F
        if reg == 0x09:
            return self.fifo.pop(0) if self.fifo else 0
        if reg == 0x0A:
            return len(self.fifo)
        return self.regs[reg]

    def write_register(self, reg, value):
        if self.dead:
            return
        reg &= 0x3F
        value &= 0xFF
        r = self.regs
        if reg == 0x01:
            self._command(value & 0x0F, value)
        elif reg in (0x04, 0x05):
            if value & 0x80:
                r[reg] |= value & 0x7F
            else:
                r[reg] &= ~value & 0xFF
        elif reg == 0x09:
            if len(self.fifo) >= 64:
                r[0x06] |= 0x10  # BufferOvfl
            else:
                self.fifo.append(value)
        elif reg == 0x0A:
            if value & 0x80:
                self.fifo = []
                r[0x06] &= ~0x10 & 0xFF
        elif reg == 0x0D:
            r[reg] = value
            if value & 0x80 and r[0x01] & 0x0F == 0x0C:
                self._transceive()
        elif reg in (0x06, 0x07, 0x08, 0x37, 0x21, 0x22):
            pass  # read-only
        elif reg == 0x14:
            r[reg] = value
            self.field.power(value & 0x03 != 0)
        else:
            r[reg] = value

    def _command(self, cmd, value):
        r = self.regs
        if cmd == 0x0F:  # SoftReset
            self.resets += 1
            self.power_on()
            return
        r[0x01] = value & 0x3F
        if self.hung or cmd == 0x00:
            return
        r[0x06] = 0  # ErrorReg: cleared when a command starts
        if cmd == 0x03:  # CalcCRC
            preset = (0x0000, 0x6363, 0xA671, 0xFFFF)[r[0x11] & 0x03]
            c = crc_a(bytes(self.fifo), preset)
            self.fifo = []
            r[0x22] = c & 0xFF
            r[0x21] = c >> 8
            r[0x05] |= 0x04  # CRCIRq
        elif cmd == 0x0C and r[0x0D] & 0x80:
            self._transceive()

    # -- the RF side -------------------------------------------------------------------------
    def _transceive(self):
        if self.hung:
            return
        r = self.regs
        r[0x06] = 0
        data = bytes(self.fifo)
        self.fifo = []
        last = r[0x0D] & 0x07
        align = (r[0x0D] >> 4) & 0x07
        nbits = len(data) * 8 - ((8 - last) if last else 0)
        bits = _bits_of(data, nbits)
        self.transceives += 1
        self.log.append(data)
        answers = []
        if r[0x14] & 0x03 and r[0x15] & 0x40:
            for card in list(self.field.cards):
                a = card.hear(bits)
                if a is not None:
                    answers.append(a)
        r[0x04] |= 0x40  # TxIRq
        if not answers:
            reload = (r[0x2C] << 8) | r[0x2D]
            if r[0x2A] & 0x80 and reload:
                r[0x04] |= 0x01  # TimerIRq
            return
        n = max(len(a) for a in answers)
        got = []
        coll = None
        for i in range(n):
            vals = set(a[i] for a in answers if i < len(a))
            if len(vals) > 1 and coll is None:
                coll = i
            if coll is not None and not r[0x0E] & 0x80:
                got.append(0)
            else:
                got.append(1 if 1 in vals else 0)
        stream = [0] * align + got
        for b in _bytes_of(stream):
            self.fifo.append(b)
        r[0x0C] = (r[0x0C] & 0xF8) | (len(stream) % 8)
        if coll is not None:
            pos = align + coll + 1
            r[0x06] |= 0x08  # CollErr
            if pos <= 32:
                r[0x0E] = (r[0x0E] & 0x80) | (pos & 0x1F)
            else:
                r[0x0E] = (r[0x0E] & 0x80) | 0x20
            r[0x04] |= 0x02  # ErrIRq
        else:
            r[0x0E] = (r[0x0E] & 0x80) | 0x20
        r[0x04] |= 0x20  # RxIRq

    # -- SPI: one chip-select period --------------------------------------------------------
    def spi_transfer(self, tx):
        """Bytes the chip shifts out on MISO while tx arrives on MOSI (datasheet 8.1.2)."""
        rx = bytearray(len(tx))
        if not tx:
            return rx
        addr = tx[0]
        if addr & 0x80:
            for i in range(1, len(tx)):
                rx[i] = self.read_register((addr >> 1) & 0x3F)
                addr = tx[i]
        else:
            for i in range(1, len(tx)):
                self.write_register((addr >> 1) & 0x3F, tx[i])
        return rx
