# NXP MFRC522 reader for ISO/IEC 14443 A cards and fobs (UIDs of 4 and 7 bytes).
#
# The base class holds the protocol; a transport subclass implements only read_register and
# write_register (MFRC522SPI below for the ESP32; the tests drive a register-level model of the
# chip). One call to poll() does a short, bounded exchange and never waits for a card: it returns a
# UID once when a card is newly presented, and nothing while the same card stays on the reader.
#
# Exchange per poll: REQA (cards that are not halted answer) -> anticollision and SELECT over the
# cascade levels -> HLTA, so a card left on the reader stays quiet. Cards already reported are
# then checked with WUPA + a SELECT of their known UID (+ HLTA): present, or counted as absent;
# only after `absent_polls` misses in a row does the same card count as presented again.
#
# Chip failures (no interrupt at all within the deadline, CRC unit stuck, a wrong VersionReg) are
# counted; after MAX_ERRORS in a row the chip is reset and initialised again (hard reset through
# NRSTPD when the pin is given). A chip that stays dead is retried every RETRY_MS, not every poll.
import time

from micropython import const

# Registers (datasheet section 9)
_CommandReg = const(0x01)
_ComIrqReg = const(0x04)
_DivIrqReg = const(0x05)
_ErrorReg = const(0x06)
_FIFODataReg = const(0x09)
_FIFOLevelReg = const(0x0A)
_ControlReg = const(0x0C)
_BitFramingReg = const(0x0D)
_CollReg = const(0x0E)
_ModeReg = const(0x11)
_TxControlReg = const(0x14)
_TxASKReg = const(0x15)
_CRCResultRegH = const(0x21)
_CRCResultRegL = const(0x22)
_TModeReg = const(0x2A)
_TPrescalerReg = const(0x2B)
_TReloadRegH = const(0x2C)
_TReloadRegL = const(0x2D)
_VersionReg = const(0x37)

# Commands (CommandReg)
_CMD_IDLE = const(0x00)
_CMD_CALC_CRC = const(0x03)
_CMD_TRANSCEIVE = const(0x0C)
_CMD_SOFT_RESET = const(0x0F)
_POWER_DOWN = const(0x10)

# ComIrqReg / DivIrqReg bits
_IRQ_RX = const(0x20)
_IRQ_IDLE = const(0x10)
_IRQ_TIMER = const(0x01)
_IRQ_CRC = const(0x04)

# ErrorReg bits
_ERR_BUFFER_OVFL = const(0x10)
_ERR_COLL = const(0x08)
_ERR_PARITY = const(0x02)
_ERR_PROTOCOL = const(0x01)

# CollReg bits
_COLL_VALUES_AFTER = const(0x80)
_COLL_POS_NOT_VALID = const(0x20)

# ISO/IEC 14443-3 A
_REQA = const(0x26)
_WUPA = const(0x52)
_HLTA = const(0x50)
_CT = const(0x88)  # cascade tag: the UID continues at the next level
_SAK_CASCADE = const(0x04)

# Results of one exchange
OK = const(0)
NO_CARD = const(1)  # the chip's timer ran out: nobody answered
ERROR = const(2)  # an answer arrived but was wrong (parity, framing, CRC, BCC, length)
COLLISION = const(3)
CHIP = const(4)  # the chip itself did not respond

_SEL = (0x93, 0x95, 0x97)


class MFRC522:
    MAX_ERRORS = 3
    RETRY_MS = 5000
    MAX_TRACKED = 4  # cards tracked as "still on the reader"

    def __init__(self, rst=None, timeout_ms=30, absent_polls=3):
        self._rst = rst
        self.timeout_ms = timeout_ms  # host-side deadline, beyond the chip's own 5 ms timer
        self.absent_polls = absent_polls
        self._buf = bytearray(9)  # SEL NVB uid0..3 BCC CRC CRC
        self._rx = bytearray(16)
        self._rx_n = 0
        self._rx_bits = 0
        self._uid = bytearray(10)
        self._part = bytearray(4)  # a known UID's bytes for one cascade level
        self._present = []  # [[uid bytes, misses], ...]
        self.version = 0
        self.errors = 0  # chip failures in a row
        self.resets = 0
        self.alive = False
        self._retry_at = None

    # -- transport (subclasses) -------------------------------------------------------------
    def read_register(self, reg):
        raise NotImplementedError

    def write_register(self, reg, value):
        raise NotImplementedError

    # -- chip set-up ------------------------------------------------------------------------
    def reset(self):
        """Hard reset (NRSTPD low, high) when the pin is wired, else SoftReset; then init."""
        rst = self._rst
        if rst is not None:
            rst(0)
            time.sleep_ms(1)
            rst(1)
        else:
            self.write_register(_CommandReg, _CMD_SOFT_RESET)
        # oscillator start-up; PowerDown reads 1 until the chip is ready
        t0 = time.ticks_ms()
        while self.read_register(_CommandReg) & _POWER_DOWN:
            if time.ticks_diff(time.ticks_ms(), t0) > 50:
                break
            time.sleep_ms(1)
        return self.init()

    def init(self):
        """Configure timer, modulation, CRC preset and antenna. True when the chip answered."""
        self.version = self.read_register(_VersionReg)
        if self.version in (0x00, 0xFF):
            self.alive = False
            return False
        # timer: starts at the end of each transmission, 13.56 MHz / (2*169+1) = 40 kHz,
        # 200 ticks = 5 ms. ISO 14443-3 answers (ATQA, UID, SAK) come within ~0.1 ms; no card
        # (and HLTA, which is never answered) costs the full 5 ms, so keep it short.
        self.write_register(_TModeReg, 0x80)
        self.write_register(_TPrescalerReg, 0xA9)
        self.write_register(_TReloadRegH, 0x00)
        self.write_register(_TReloadRegL, 0xC8)
        self.write_register(_TxASKReg, 0x40)  # 100 % ASK, as type A cards expect
        self.write_register(_ModeReg, 0x3D)  # CRC preset 0x6363 (CRC_A)
        # clear received bits after a collision, so the first collision position is exact
        self.write_register(_CollReg, self.read_register(_CollReg) & ~_COLL_VALUES_AFTER & 0xFF)
        tx = self.read_register(_TxControlReg)
        if tx & 0x03 != 0x03:
            self.write_register(_TxControlReg, tx | 0x03)  # antenna on (TX1, TX2)
        self.alive = True
        self.errors = 0
        return True

    def antenna_off(self):
        self.write_register(_TxControlReg, self.read_register(_TxControlReg) & 0xFC)

    def _chip_failed(self):
        self.errors += 1
        if self.errors >= self.MAX_ERRORS:
            self.resets += 1
            if not self.reset():
                self._retry_at = time.ticks_add(time.ticks_ms(), self.RETRY_MS)
            self.errors = 0

    # -- one exchange ---------------------------------------------------------------------------
    def _transceive(self, data, n, tx_bits=0, rx_align=0):
        """Send data[:n] (last byte: tx_bits bits, 0 = 8); the answer lands in self._rx."""
        wr = self.write_register
        rd = self.read_register
        wr(_CommandReg, _CMD_IDLE)
        wr(_ComIrqReg, 0x7F)  # Set1 = 0: clears every interrupt request bit
        wr(_FIFOLevelReg, 0x80)  # flush
        for i in range(n):
            wr(_FIFODataReg, data[i])
        framing = (rx_align << 4) | tx_bits
        wr(_BitFramingReg, framing)
        wr(_CommandReg, _CMD_TRANSCEIVE)
        wr(_BitFramingReg, 0x80 | framing)  # StartSend
        t0 = time.ticks_ms()
        while True:
            irq = rd(_ComIrqReg)
            if irq & (_IRQ_RX | _IRQ_IDLE):
                break
            if irq & _IRQ_TIMER:
                wr(_CommandReg, _CMD_IDLE)
                return NO_CARD
            if time.ticks_diff(time.ticks_ms(), t0) > self.timeout_ms:
                return CHIP
        wr(_BitFramingReg, framing)
        wr(_CommandReg, _CMD_IDLE)
        err = rd(_ErrorReg)
        if err & (_ERR_BUFFER_OVFL | _ERR_PARITY | _ERR_PROTOCOL):
            return ERROR
        level = rd(_FIFOLevelReg) & 0x7F
        if level > len(self._rx):
            return ERROR
        for i in range(level):
            self._rx[i] = rd(_FIFODataReg)
        self._rx_n = level
        self._rx_bits = rd(_ControlReg) & 0x07
        return COLLISION if err & _ERR_COLL else OK

    def _crc(self, data, n):
        """CRC_A of data[:n] from the chip's coprocessor, or -1 when it did not finish."""
        wr = self.write_register
        wr(_CommandReg, _CMD_IDLE)
        wr(_DivIrqReg, _IRQ_CRC)  # Set2 = 0: clear CRCIRq
        wr(_FIFOLevelReg, 0x80)
        for i in range(n):
            wr(_FIFODataReg, data[i])
        wr(_CommandReg, _CMD_CALC_CRC)
        t0 = time.ticks_ms()
        while not self.read_register(_DivIrqReg) & _IRQ_CRC:
            if time.ticks_diff(time.ticks_ms(), t0) > self.timeout_ms:
                return -1
        wr(_CommandReg, _CMD_IDLE)
        return self.read_register(_CRCResultRegL) | (self.read_register(_CRCResultRegH) << 8)

    def _append_crc(self, buf, n):
        crc = self._crc(buf, n)
        if crc < 0:
            return False
        buf[n] = crc & 0xFF
        buf[n + 1] = crc >> 8
        return True

    # -- ISO 14443-3 A ------------------------------------------------------------------------
    def request(self, wake=False):
        """REQA (or WUPA, which also wakes halted cards). OK / COLLISION mean a card answered."""
        self._buf[0] = _WUPA if wake else _REQA
        st = self._transceive(self._buf, 1, 7)
        if st == OK and (self._rx_n != 2 or self._rx_bits):
            return ERROR
        return st

    def _select_level(self, level, known_uid=None):
        """Anticollision + SELECT at one cascade level; returns (status, SAK).

        With known_uid (the level's 4 bytes), skips anticollision and selects that card.
        The level's 4 UID bytes are left in self._buf[2:6].
        """
        buf = self._buf
        buf[0] = _SEL[level]
        if known_uid is not None:
            for i in range(4):
                buf[2 + i] = known_uid[i]
            buf[6] = buf[2] ^ buf[3] ^ buf[4] ^ buf[5]
        else:
            known = 0  # UID bits of this level already settled
            for _ in range(33):
                nbytes = known >> 3
                nbits = known & 7
                buf[1] = ((2 + nbytes) << 4) | nbits
                st = self._transceive(buf, 2 + nbytes + (1 if nbits else 0), nbits, nbits)
                if st not in (OK, COLLISION):
                    return st, 0
                rx = self._rx
                at = 2 + nbytes
                if self._rx_n == 0 or at + self._rx_n > 7:
                    return ERROR, 0
                keep = (1 << nbits) - 1  # bits of the first byte we sent ourselves
                buf[at] = (buf[at] & keep) | (rx[0] & ~keep & 0xFF)
                for i in range(1, self._rx_n):
                    buf[at + i] = rx[i]
                if st == COLLISION:
                    coll = self.read_register(_CollReg)
                    if coll & _COLL_POS_NOT_VALID:
                        return ERROR, 0
                    pos = coll & 0x1F or 32
                    bit = nbytes * 8 + pos - 1  # collided bit, 0-based within the level's UID
                    if bit < known or bit >= 32:
                        return ERROR, 0
                    # follow the cards with a 1 there; the others wait for a later poll
                    i = 2 + (bit >> 3)
                    buf[i] = (buf[i] | (1 << (bit & 7))) & ((2 << (bit & 7)) - 1)
                    known = bit + 1
                    continue
                if at + self._rx_n != 7 or self._rx_bits:
                    return ERROR, 0
                if buf[2] ^ buf[3] ^ buf[4] ^ buf[5] != buf[6]:
                    return ERROR, 0
                break
            else:
                return ERROR, 0
        buf[1] = 0x70  # SELECT: NVB says all 40 bits follow
        if not self._append_crc(buf, 7):
            return CHIP, 0
        st = self._transceive(buf, 9)
        if st != OK:
            return (ERROR if st == COLLISION else st), 0
        if self._rx_n != 3 or self._rx_bits:
            return ERROR, 0
        sak = self._rx[0]
        crc = self._crc(self._rx, 1)
        if crc < 0:
            return CHIP, 0
        if crc != self._rx[1] | (self._rx[2] << 8):
            return ERROR, 0
        return OK, sak

    def select(self, known=None):
        """Selects a card in READY state; returns (status, uid bytes or None)."""
        uid = self._uid
        n = 0
        for level in range(3):
            part = None
            if known is not None:
                rest = len(known) - n
                if rest > 4:
                    part = self._part
                    part[0] = _CT
                    for i in range(3):
                        part[1 + i] = known[n + i]
                else:
                    part = known[n : n + 4]
            st, sak = self._select_level(level, part)
            if st != OK:
                return st, None
            b = self._buf
            if sak & _SAK_CASCADE:
                if b[2] != _CT:
                    return ERROR, None
                uid[n : n + 3] = b[3:6]
                n += 3
                continue
            uid[n : n + 4] = b[2:6]
            return OK, bytes(uid[: n + 4])
        return ERROR, None

    def halt(self):
        """HLTA: a selected card goes quiet until WUPA or until it leaves the field."""
        buf = self._buf
        buf[0] = _HLTA
        buf[1] = 0
        if not self._append_crc(buf, 2):
            return CHIP
        st = self._transceive(buf, 4)
        # a card acknowledges HLTA by saying nothing
        return OK if st == NO_CARD else (CHIP if st == CHIP else ERROR)

    def read_uid(self, wake=False):
        """One card's UID (bytes) via REQA/WUPA + select, or None; status in self.status."""
        st = self.request(wake)
        if st in (OK, COLLISION):
            st, uid = self.select()
        else:
            uid = None
        self.status = st
        if st == CHIP:
            self._chip_failed()
        elif uid is not None:
            self.errors = 0
        return uid

    def _still_there(self, uid):
        st = self.request(True)
        if st in (OK, COLLISION):
            st, got = self.select(uid)
            if st == OK:
                self.halt()
                return True
        if st == CHIP:
            self._chip_failed()
        return False

    # -- the poll the locker runs ------------------------------------------------------------
    def poll(self):
        """A UID (bytes) when a card is newly presented, else None. Short and bounded."""
        if self._retry_at is not None:
            if time.ticks_diff(time.ticks_ms(), self._retry_at) < 0:
                return None
            self._retry_at = None
            self.resets += 1
            if not self.reset():
                self._retry_at = time.ticks_add(time.ticks_ms(), self.RETRY_MS)
                return None
        if not self.alive:
            if not self.init():
                self._chip_failed()
                return None
        uid = self.read_uid()
        fresh = None
        if uid is not None:
            self.halt()
            entry = self._entry(uid)
            if entry is None:
                fresh = uid
                if len(self._present) >= self.MAX_TRACKED:
                    self._present.pop(0)
                self._present.append([uid, 0])
            else:
                entry[1] = 0  # it only lost power for a moment: the same presentation
        # cards reported earlier and halted: still on the reader?
        for entry in self._present:
            if uid is not None and entry[0] == uid:
                continue
            if self._still_there(entry[0]):
                entry[1] = 0
            else:
                entry[1] += 1
        i = len(self._present)
        while i:
            i -= 1
            if self._present[i][1] >= self.absent_polls:
                self._present.pop(i)  # gone long enough: its next tap is a new one
        return fresh

    def _entry(self, uid):
        for e in self._present:
            if e[0] == uid:
                return e
        return None


class MFRC522SPI(MFRC522):
    """The MFRC522 on SPI (mode 0, MSB first, up to 10 MHz); cs is a Pin, rst a Pin or None."""

    def __init__(self, spi, cs, rst=None, **kw):
        super().__init__(rst, **kw)
        self._spi = spi
        self._cs = cs
        self._tx = bytearray(2)
        self._rxb = bytearray(2)
        cs(1)

    def read_register(self, reg):
        tx = self._tx
        tx[0] = 0x80 | (reg << 1)  # MSB 1: read; address in bits 6..1
        tx[1] = 0
        self._cs(0)
        try:
            self._spi.write_readinto(tx, self._rxb)
        finally:
            self._cs(1)
        return self._rxb[1]

    def write_register(self, reg, value):
        tx = self._tx
        tx[0] = (reg << 1) & 0x7E
        tx[1] = value
        self._cs(0)
        try:
            self._spi.write(tx)
        finally:
            self._cs(1)
