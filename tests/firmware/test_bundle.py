# runs-on: micropython cpython
# heapsize: 96k
# The signed config bundle: streamed reception, every way a bundle can be refused (config.bin
# untouched each time), reading cards back from flash; and the card registry on top of it.
import gc
import json
import os
import struct

from locker import mac
from locker.bundle import Bundle, BundleError
from locker.receiver import Receiver
from locker.registry import Registry, parse_uid
from mpytest import raises, tmpdir

SECRET = bytes(range(32))
CARD_KEY = mac.derive(SECRET, mac.CARD)
CONFIG_KEY = mac.derive(SECRET, mac.CONFIG)
ROLE = {"pupil": 1, "staff": 2, "slt": 3, "office": 4}


def uid_of(i):
    return struct.pack(">I", 0x04A00000 + i)


def record(uid, person, role, year=0, walk_home=False, revoked=False):
    h = mac.hmac_sha256(CARD_KEY, uid)[:16]
    pid = person.encode()
    flags = (1 if walk_home else 0) | (2 if revoked else 0)
    return h + bytes([ROLE[role], year, flags, len(pid)]) + pid + bytes(28 - len(pid))


def build(records, locker="L1", version=2, key=CONFIG_KEY, header=None, sort=True, nfix=None):
    """A bundle made by hand (the host's builder is CPython only; test_bundle_cross uses it)."""
    if sort:
        records = sorted(records)
    hdr = {
        "locker": locker,
        "site": "school",
        "version": version,
        "issued": 1795549393,
        "timetable": {"timezone": "Europe/London", "home_time": 915},
        "grants": [],
    }
    if header:
        hdr.update(header)
    hj = json.dumps(hdr).encode()
    n = len(records) if nfix is None else nfix
    gc.collect()
    body = bytearray(b"CLCF" + bytes([1, 48, 0, 0]) + struct.pack(">III", version, n, len(hj)))
    body.extend(hj)
    for r in records:
        body.extend(r)
    body.extend(mac.hmac_sha256(key, body))
    return bytes(body)


def small_roster(n=3):
    roles = ("pupil", "staff", "slt", "office")
    return [
        record(
            uid_of(i),
            "P{:04d}".format(i),
            roles[i % 4],
            year=(i % 6 + 1) if i % 4 == 0 else 0,
            walk_home=i % 3 == 0,
            revoked=i % 5 == 4,
        )
        for i in range(n)
    ]


def receive(directory, data, chunk=512, current=1, max_bytes=65536, locker="L1"):
    r = Receiver(directory, CONFIG_KEY, locker, current, max_bytes)
    try:
        for i in range(0, len(data), chunk):
            r.write(data[i : i + chunk])
    except BundleError as e:
        assert r.failed == e.args[0]
        return r, e.args[0]
    return r, None


def install(directory, data, **kw):
    r, _ = receive(directory, data, **kw)
    return r.finish()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def refused(directory, data, **kw):
    """Feeds data; returns the reason it was refused. Asserts nothing of it reached config.bin."""
    before = read(directory + "/config.bin") if exists(directory + "/config.bin") else None
    r, failed = receive(directory, data, **kw)
    with raises(BundleError) as e:
        r.finish()  # after a refused write(), finish() gives the same reason
    reason = e.value.args[0]
    assert r.failed == reason
    after = read(directory + "/config.bin") if exists(directory + "/config.bin") else None
    assert after == before, "config.bin changed"
    assert not exists(directory + "/config.new"), "config.new left behind"
    return reason


def installed(directory, version=1):
    d = tmpdir(directory)
    assert install(d, build(small_roster(2), version=version), current=None) == version
    return d


# -- reception ------------------------------------------------------------------------------


def test_streams_in_chunks_of_1_7_512_and_installs():
    recs = small_roster(14)  # > 512 bytes; the 600-card case is in tests/host
    data = build(recs, version=9)
    for chunk in (1, 7, 512, len(data)):
        d = tmpdir("bundle_chunks_{}".format(chunk))
        assert install(d, data, chunk=chunk) == 9
        assert read(d + "/config.bin") == data
        assert not exists(d + "/config.new")
        b = Bundle.load(d, CONFIG_KEY)
        assert b.version == 9 and b.ncards == 14
        for rec in recs:
            card = b.lookup(rec[:16])
            assert card is not None and card.person == bytes(rec[20 : 20 + rec[19]]).decode()
        b.close()


def test_accepts_bytearray_and_memoryview_chunks():
    data = build(small_roster(5))
    d = tmpdir("bundle_mv")
    r = Receiver(d, CONFIG_KEY, "L1", 1, 65536)
    buf = bytearray(data)
    r.write(memoryview(buf)[:100])
    r.write(bytearray(buf[100:]))
    assert r.finish() == 2


def test_first_bundle_accepted_when_none_yet():
    d = tmpdir("bundle_first")
    assert install(d, build(small_roster(1), version=1), current=None) == 1


def test_every_single_byte_flip_is_refused():
    d = installed("bundle_flip")
    data = build(small_roster(3), version=2)
    reasons = {}
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01 if i % 2 else 0x80
        reason = refused(d, bytes(bad))
        reasons[reason] = reasons.get(reason, 0) + 1
    assert reasons.get("bad_signature", 0) > len(data) // 2, reasons
    assert Bundle.load(d, CONFIG_KEY).version == 1


def test_truncation_anywhere_is_refused_as_truncated():
    d = installed("bundle_trunc")
    data = build(small_roster(4), version=2)
    for cut in list(range(0, 60)) + list(range(60, len(data), 13)) + [len(data) - 1]:
        assert refused(d, data[:cut], chunk=7) == "truncated", cut
    assert Bundle.load(d, CONFIG_KEY).version == 1


def test_extra_bytes_after_the_mac_are_refused():
    d = installed("bundle_extra")
    data = build(small_roster(2), version=2)
    assert refused(d, data + b"\0") in ("malformed", "bad_signature")


def test_wrong_locker_stale_and_forged():
    d = installed("bundle_reasons", version=5)
    assert refused(d, build(small_roster(2), locker="L2", version=6), current=5) == "wrong_locker"
    assert refused(d, build(small_roster(2), version=5), current=5) == "stale"
    assert refused(d, build(small_roster(2), version=4), current=5) == "stale"
    other = mac.derive(bytes(32), mac.CONFIG)
    assert refused(d, build(small_roster(2), version=6, key=other), current=5) == "bad_signature"
    assert install(d, build(small_roster(2), version=6), current=5) == 6


def test_too_large_is_refused_while_streaming():
    d = installed("bundle_large")
    data = build(small_roster(30), version=2)
    # the declared size is over the limit: refused on the 20th byte, before filling flash
    assert refused(d, data, chunk=7, max_bytes=len(data) - 1) == "too_large"
    r = Receiver(d, CONFIG_KEY, "L1", 1, 100)
    with raises(BundleError) as e:
        r.write(data[:20])
    assert e.value.args[0] == "too_large"
    assert not exists(d + "/config.new")
    # exactly at the limit is fine
    assert install(d, data, max_bytes=len(data)) == 2


def test_signed_but_inconsistent_bundles_are_malformed():
    d = installed("bundle_malformed")
    recs = small_roster(6)
    unsorted = sorted(recs)
    unsorted[2], unsorted[3] = unsorted[3], unsorted[2]
    assert refused(d, build(unsorted, sort=False)) == "malformed"
    assert refused(d, build(recs + recs[:1])) == "malformed"  # a card twice
    assert refused(d, build(recs, header={"version": 3})) == "malformed"  # header != fixed
    assert refused(d, build(recs, header={"locker": 7})) == "malformed"
    assert refused(d, build(recs, header={"grants": {}})) == "malformed"
    assert refused(d, build(recs, header={"timetable": [1]})) == "malformed"
    bad_role = bytearray(recs[0])
    bad_role[16] = 9
    assert refused(d, build([bytes(bad_role)] + recs[1:])) == "malformed"
    # declared card count disagrees with what is there (but the MAC is right)
    assert refused(d, build(recs, nfix=5)) == "malformed"
    body = b"CLCX" + build(recs)[4:-32]
    assert refused(d, body + mac.hmac_sha256(CONFIG_KEY, body)) == "malformed"
    hj = b"not json"
    body = b"CLCF" + bytes([1, 48, 0, 0]) + struct.pack(">III", 2, 0, len(hj)) + hj
    assert refused(d, body + mac.hmac_sha256(CONFIG_KEY, body)) == "malformed"


def test_abort_discards_the_partial_bundle():
    d = installed("bundle_abort")
    data = build(small_roster(3), version=2)
    r = Receiver(d, CONFIG_KEY, "L1", 1, 65536)
    r.write(data[:50])
    assert exists(d + "/config.new")
    r.abort()
    r.abort()
    assert not exists(d + "/config.new")
    assert Bundle.load(d, CONFIG_KEY).version == 1
    assert r.failed == "truncated"
    with raises(BundleError):
        r.write(data[50:])
    with raises(BundleError) as e:
        r.finish()
    assert e.value.args[0] == "truncated"


def test_an_interrupted_reception_is_replaced_by_the_next():
    d = installed("bundle_restart")
    data = build(small_roster(3), version=2)
    Receiver(d, CONFIG_KEY, "L1", 1, 65536).write(data[:77])  # power lost here
    assert install(d, data) == 2
    assert read(d + "/config.bin") == data


# -- reading ----------------------------------------------------------------------------------


def test_load_without_config_is_none():
    assert Bundle.load(tmpdir("bundle_none"), CONFIG_KEY) is None


def test_load_refuses_a_rotten_config_bin():
    d = installed("bundle_rot")
    good = read(d + "/config.bin")
    bad = bytearray(good)
    bad[len(good) - 40] ^= 0x10  # inside the last card record
    with open(d + "/config.bin", "wb") as f:
        f.write(bad)
    assert Bundle.load(d, CONFIG_KEY) is None
    with raises(BundleError) as e:
        Bundle.open(d + "/config.bin", CONFIG_KEY)
    assert e.value.args[0] == "bad_signature"
    with open(d + "/config.bin", "wb") as f:
        f.write(good[:-1])
    assert Bundle.load(d, CONFIG_KEY) is None
    assert Bundle.load(d) is None  # even without the key, lengths are checked


def test_card_fields_and_header():
    recs = [
        record(uid_of(1), "P0001", "pupil", year=6, walk_home=True),
        record(uid_of(2), "S0002", "staff"),
        record(uid_of(3), "SLT03", "slt", revoked=True),
        record(uid_of(4), "Zoë-Ł" + "x" * 20, "office"),  # 28 bytes of UTF-8
        record(uid_of(5), "", "pupil", year=1),
    ]
    grants = [{"id": 3, "person": "P0001", "from": 1, "until": 2, "by": "SLT03"}]
    d = tmpdir("bundle_fields")
    install(d, build(recs, version=4, header={"grants": grants}))
    b = Bundle.load(d, CONFIG_KEY)
    assert b.header["locker"] == "L1" and b.header["issued"] == 1795549393
    assert b.timetable["home_time"] == 915
    assert b.grants == grants
    c = b.lookup(recs[0][:16])
    assert (c.person, c.role, c.year, c.walk_home, c.revoked) == ("P0001", "pupil", 6, True, False)
    c = b.lookup(recs[1][:16])
    assert (c.person, c.role, c.year, c.walk_home, c.revoked) == (
        "S0002",
        "staff",
        0,
        False,
        False,
    )
    c = b.lookup(recs[2][:16])
    assert (c.role, c.revoked) == ("slt", True)
    c = b.lookup(recs[3][:16])
    assert c.person == "Zoë-Ł" + "x" * 20 and c.role == "office"
    assert b.lookup(recs[4][:16]).person == ""
    b.close()


def test_lookup_of_unknown_hashes_and_empty_roster():
    recs = small_roster(25)
    d = tmpdir("bundle_unknown")
    install(d, build(recs))
    b = Bundle.load(d, CONFIG_KEY)
    hashes = sorted(r[:16] for r in recs)
    assert b.lookup(b"\x00" * 16) is None
    assert b.lookup(b"\xff" * 16) is None
    for h in hashes:
        near = bytearray(h)
        near[15] ^= 1
        if bytes(near) not in hashes:
            assert b.lookup(bytes(near)) is None
    b.close()
    d = tmpdir("bundle_empty")
    install(d, build([]))
    b = Bundle.load(d, CONFIG_KEY)
    assert b.ncards == 0 and b.lookup(hashes[0]) is None


def test_an_open_bundle_keeps_reading_after_a_newer_one_is_installed():
    d = installed("bundle_swap", version=1)
    old = Bundle.load(d, CONFIG_KEY)
    recs = small_roster(2)
    new_recs = [record(uid_of(100 + i), "N{}".format(i), "staff") for i in range(20)]
    install(d, build(new_recs, version=2), current=1)
    assert old.lookup(recs[0][:16]).person == "P0000"  # the one it opened
    new = Bundle.load(d, CONFIG_KEY)
    assert new.version == 2 and new.lookup(recs[0][:16]) is None
    old.close()
    new.close()


# -- registry ---------------------------------------------------------------------------------


def test_parse_uid():
    assert parse_uid("04A1B2C3") == b"\x04\xa1\xb2\xc3"
    assert parse_uid("04a1b2c3d4e5f6") == bytes([4, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6])
    assert parse_uid(" 04A1B2C3\n") == b"\x04\xa1\xb2\xc3"
    for bad in (
        "",
        "04A1B2C",
        "04A1B2C3D",
        "04A1B2C3D4E5F6A7",
        "04A1B2CG",
        "04:A1:B2",
        "0x04A1B2",
    ):
        with raises(ValueError):
            parse_uid(bad)


def test_registry_finds_cards_by_uid():
    d = tmpdir("registry")
    recs = [record(uid_of(i), "P{}".format(i), "pupil", year=3) for i in range(30)]
    install(d, build(recs))
    reg = Registry(CARD_KEY)
    assert reg.lookup(uid_of(1)) is None  # no configuration yet: every card unknown
    first = Bundle.load(d, CONFIG_KEY)
    reg.use(first)
    for i in range(30):
        assert reg.lookup(uid_of(i)).person == "P{}".format(i)
    assert reg.lookup(uid_of(999)) is None
    assert reg.lookup(parse_uid("04A0000500000A")) is None  # 7-byte UID
    assert reg.card_hash(uid_of(3)) == mac.hmac_sha256(CARD_KEY, uid_of(3))[:16]
    # another locker's key makes the same cards unknown
    assert Registry(mac.derive(bytes(32), mac.CARD)).lookup(uid_of(1)) is None
    reg.use(Bundle.load(d, CONFIG_KEY))
    assert reg.lookup(uid_of(2)).person == "P2"
    with raises(Exception):
        first.lookup(recs[0][:16])  # the bundle it replaced was closed
    reg.use(None)
    assert reg.lookup(uid_of(2)) is None
