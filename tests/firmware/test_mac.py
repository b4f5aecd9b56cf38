# runs-on: micropython cpython
# heapsize: 96k
# HMAC-SHA256 against every RFC 4231 test case, incremental use, key derivation, equal().
import binascii

from locker import mac

_TEST7 = (
    b"This is a test using a larger than block-size key and a larger than block-size data. "
    b"The key needs to be hashed before being used by the HMAC algorithm."
)

# (key, data, expected hex, bytes compared): RFC 4231 section 4, test cases 1-7.
RFC4231 = [
    (
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        32,
    ),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        32,
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        32,
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        32,
    ),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b", 16),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        32,
    ),
    (
        b"\xaa" * 131,
        _TEST7,
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        32,
    ),
]


def _hex(b):
    return binascii.hexlify(b).decode()


def test_rfc4231_all_cases():
    for n, (key, data, want, size) in enumerate(RFC4231, 1):
        got = _hex(mac.hmac_sha256(key, data)[:size])
        assert got == want, "test case {}: {}".format(n, got)


def test_rfc4231_incremental_in_odd_pieces():
    for n, (key, data, want, size) in enumerate(RFC4231, 1):
        for step in (1, 3, 64, 1000):
            h = mac.HMAC(key)
            for i in range(0, len(data), step):
                h.update(data[i : i + step])
            assert _hex(h.digest()[:size]) == want, "test case {} step {}".format(n, step)


def test_key_exactly_one_block_and_empty_message():
    # 64-byte key is used as is (not hashed); 65 bytes is hashed: the two must differ.
    a = mac.hmac_sha256(b"k" * 64, b"")
    b = mac.hmac_sha256(b"k" * 65, b"")
    assert len(a) == 32 and a != b
    assert mac.HMAC(b"k" * 64).digest() == a


def test_update_accepts_memoryview_and_bytearray():
    want = mac.hmac_sha256(b"key", b"abcdef")
    buf = bytearray(b"xxabcdefxx")
    h = mac.HMAC(b"key")
    h.update(memoryview(buf)[2:5])
    h.update(bytearray(b"def"))
    assert h.digest() == want


def test_derive_gives_one_key_per_purpose():
    secret = bytes(range(32))
    keys = [mac.derive(secret, label) for label in (mac.CARD, mac.CONFIG, mac.CMD)]
    assert keys[0] == mac.hmac_sha256(secret, b"classlocker card")
    assert len(set(keys)) == 3
    assert all(len(k) == 32 for k in keys)
    assert mac.derive(bytes(32), mac.CARD) != keys[0]


def test_equal():
    assert mac.equal(b"abc", b"abc")
    assert mac.equal(b"", b"")
    assert not mac.equal(b"abc", b"abd")
    assert not mac.equal(b"abc", b"ab")
    assert not mac.equal(b"\x00" * 32, b"\x00" * 31 + b"\x01")
    assert mac.equal(bytearray(b"xy"), b"xy")
