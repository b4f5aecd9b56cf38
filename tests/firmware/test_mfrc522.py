# runs-on: micropython
# drivers/mfrc522.py against the register-level model of the chip and of ISO 14443 A cards.
from drivers.mfrc522 import CHIP, MFRC522, MFRC522SPI, NO_CARD
from model_mfrc522 import HALT, Card, MFRC522Model, crc_a


class ModelReader(MFRC522):
    """The driver with the model as its transport, the way MFRC522SPI uses the SPI bus."""

    def __init__(self, model, **kw):
        super().__init__(rst=model.rst, **kw)
        self.model = model

    def read_register(self, reg):
        return self.model.read_register(reg)

    def write_register(self, reg, value):
        self.model.write_register(reg, value)


def _reader(*cards, **kw):
    model = MFRC522Model()
    for c in cards:
        model.field.add(c)
    r = ModelReader(model, **kw)
    assert r.reset()
    return r, model


def _h(s):
    return bytes(int(s[i : i + 2], 16) for i in range(0, len(s), 2))


def test_init_configures_timer_modulation_crc_and_antenna():
    r, m = _reader()
    assert r.version == 0x92
    assert m.resets == 1  # the hard reset through NRSTPD
    assert m.regs[0x2A] & 0x80  # TAuto
    assert (m.regs[0x2C] << 8 | m.regs[0x2D]) > 0
    assert m.regs[0x15] & 0x40  # 100 % ASK
    assert m.regs[0x11] & 0x03 == 0x01  # CRC preset 0x6363
    assert m.regs[0x14] & 0x03 == 0x03  # antenna on
    assert not m.regs[0x0E] & 0x80  # ValuesAfterColl cleared


def test_empty_field_gives_nothing_and_is_not_an_error():
    r, m = _reader()
    for _ in range(5):
        assert r.poll() is None
    assert r.status == NO_CARD
    assert r.errors == 0 and m.resets == 1


def test_crc_coprocessor_matches_iso_14443_vectors():
    r, _ = _reader()
    assert r._crc(b"\x50\x00", 2) == 0xCD57  # HLTA: 50 00 57 CD
    data = b"\x93\x70\x04\xa1\xb2\xc3\xd4"
    assert r._crc(data, len(data)) == crc_a(data)


def test_reads_a_4_byte_uid_once_and_halts_the_card():
    card = Card("04a1b2c3")
    r, m = _reader(card)
    assert r.poll() == _h("04a1b2c3")
    assert card.state == HALT
    assert b"\x50\x00\x57\xcd" in m.log  # HLTA with its CRC_A
    for _ in range(6):
        assert r.poll() is None  # left on the reader: not presented again


def test_reads_7_and_10_byte_uids_over_cascade_levels():
    for uid in ("04112233445566", "0411223344556677889a"):
        card = Card(uid, sak=0x00)
        r, m = _reader(card)
        assert r.poll() == _h(uid), uid
        assert card.state == HALT
        assert r.poll() is None


def test_card_presented_again_after_it_was_taken_away():
    card = Card("deadbeef")
    r, m = _reader(card)
    assert r.poll() == _h("deadbeef")
    m.field.remove(card)
    for _ in range(r.absent_polls):
        assert r.poll() is None
    m.field.add(card)
    assert r.poll() == _h("deadbeef")
    assert r.poll() is None


def test_card_flicker_shorter_than_debounce_is_one_presentation():
    card = Card("deadbeef")
    r, m = _reader(card)
    assert r.poll() == _h("deadbeef")
    m.field.remove(card)
    assert r.poll() is None
    m.field.add(card)  # back after one missed poll: it lost power and answers REQA again
    for _ in range(4):
        assert r.poll() is None


def test_two_cards_at_once_collision_resolved_each_reported_once():
    # same first three bytes: the first collision is in byte 3 (bit 24), past RxAlign's byte
    a, b = Card("11223344"), Card("11223355")
    r, m = _reader(a, b)
    first = r.poll()
    # 0x44 ^ 0x55 = 0x11: bit 0 differs first, and the driver follows the card with a 1
    assert first == _h("11223355")
    # an anticollision frame with a partial byte (NVB not 0x20) was sent
    assert any(f[0] == 0x93 and f[1] not in (0x20, 0x70) for f in m.log)
    assert r.poll() == _h("11223344")
    for _ in range(5):
        assert r.poll() is None


def test_two_cards_colliding_in_the_first_byte():
    a, b = Card("01000000"), Card("02000000")
    r, m = _reader(a, b)
    got = [r.poll(), r.poll(), r.poll()]
    assert got[:2] == [_h("01000000"), _h("02000000")]
    assert got[2] is None


def test_a_4_byte_and_a_7_byte_card_together():
    short, long7 = Card("8a0b0c0d"), Card("04112233445566", sak=0x00)
    r, m = _reader(short, long7)
    seen = set()
    for _ in range(4):
        uid = r.poll()
        if uid is not None:
            assert uid not in seen
            seen.add(uid)
    assert seen == {_h("8a0b0c0d"), _h("04112233445566")}


def test_card_pulled_mid_read_gives_nothing_then_reads_when_back():
    for frames in (1, 2):
        card = Card("04a1b2c3", leave_after=frames)  # hears REQA (+ anticollision), then gone
        r, m = _reader(card)
        assert r.poll() is None, frames
        assert r.errors == 0 and m.resets == 1  # a lost card is not a chip fault
        card.leave_after = None
        m.field.add(card)
        assert r.poll() == _h("04a1b2c3"), frames


def test_7_byte_card_pulled_between_cascade_levels():
    card = Card("04112233445566", sak=0x00, leave_after=4)  # REQA, AC1, SEL1, AC2 ... gone
    r, m = _reader(card)
    assert r.poll() is None
    card.leave_after = None
    m.field.add(card)
    assert r.poll() == _h("04112233445566")


def test_hung_chip_is_reset_by_the_error_counter():
    card = Card("04a1b2c3")
    r, m = _reader(card, timeout_ms=5)
    m.hung = True  # commands never complete: no interrupt request at all
    for _ in range(r.MAX_ERRORS):
        assert r.poll() is None
    assert r.status == CHIP
    assert m.resets == 2  # the boot reset and one from the error counter
    m.hung = False
    assert r.poll() == _h("04a1b2c3")


def test_brownout_loses_configuration_and_driver_recovers():
    card = Card("04a1b2c3")
    r, m = _reader(timeout_ms=5)
    m.brownout()  # registers back to reset values: no timer, antenna off
    m.field.add(card)
    got = None
    for _ in range(r.MAX_ERRORS + 1):
        got = got or r.poll()
    assert got == _h("04a1b2c3")
    assert m.resets == 2


def test_dead_chip_is_retried_later_not_every_poll():
    m = MFRC522Model()
    m.dead = True
    r = ModelReader(m, timeout_ms=5)
    assert not r.reset()
    r.RETRY_MS = 60000
    for _ in range(10):
        assert r.poll() is None
    resets = m.resets
    for _ in range(10):
        assert r.poll() is None
    assert m.resets == resets  # backing off, not hammering the chip


def test_card_pulled_after_select_was_read():
    card = Card("04a1b2c3", leave_after=3)  # REQA, anticollision, SELECT, gone before HLTA
    r, m = _reader(card)
    assert r.poll() == _h("04a1b2c3")
    assert r.errors == 0


def test_spi_transport_frames_addresses_as_the_datasheet_says():
    import gc

    gc.collect()
    import model_machine as mm

    mm.reset()
    model = MFRC522Model()
    model.field.add(Card("04a1b2c3"))
    frames = []

    class Spy:
        def spi_transfer(self, tx):
            frames.append(bytes(tx))
            return model.spi_transfer(tx)

    mm.attach_spi(2, 5, Spy())
    spi = mm.SPI(2, baudrate=1000000, polarity=0, phase=0)
    cs = mm.Pin(5, mm.Pin.OUT, value=1)
    r = MFRC522SPI(spi, cs, rst=model.rst)
    assert r.reset()
    assert r.version == 0x92
    assert b"\xee\x00" in frames  # read VersionReg 0x37: 1 | 0x37 << 1
    assert b"\x2a\x40" in frames  # write TxASKReg 0x15 = 0x40: 0x15 << 1
    assert cs() == 1  # deselected between transfers
    assert r.poll() == _h("04a1b2c3")
    assert r.poll() is None
