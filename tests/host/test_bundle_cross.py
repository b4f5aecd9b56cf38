"""The host builds, the locker reads: bundles made by `lockerctl.bundle` are received, verified
and searched by the firmware's `locker.bundle` / `locker.registry`, under CPython and under
MicroPython with an ESP32-sized heap; the host's keys are the firmware's keys."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lockerctl import bundle as hb
from lockerctl import keys
from lockerctl.timetable import compile_timetable, parse_timetable

ROOT = Path(__file__).resolve().parents[2]
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
sys.path.insert(0, str(ROOT / "firmware"))

from locker import mac  # noqa: E402
from locker.bundle import Bundle, BundleError  # noqa: E402
from locker.receiver import Receiver  # noqa: E402
from locker.registry import Registry, parse_uid  # noqa: E402

SECRET = bytes.fromhex("5e" * 16 + "a1" * 16)
NOW = 1795549393
TOML = """\
timezone = "Europe/London"
home_time = "15:15"
y6_release_minutes = 10
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["2026-09-03", "2026-10-23"], ["2026-11-02", "2026-12-18"]]
closed = ["2026-11-02"]
"""
GRANTS = [{"id": 3, "person": "P0007", "from": NOW, "until": NOW + 3600, "by": "S0001"}]
ROLES = ("pupil", "pupil", "pupil", "staff", "slt", "office")

RFC4231 = [
    (
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. "
        b"The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


def uid_of(i: int) -> str:
    """Card i's UID: even cards 4-byte, odd cards 7-byte (the MicroPython script agrees)."""
    return f"{0x8A000000 + i:08X}" if i % 2 == 0 else f"04{i * 7919:012X}"


def roster(n: int) -> list[tuple]:
    return [
        (
            uid_of(i),
            f"P{i:04d}",
            ROLES[i % 6],
            (i % 6) + 1 if ROLES[i % 6] == "pupil" else 0,
            i % 3 == 0,
            i % 7 == 6,
        )
        for i in range(n)
    ]


def timetable() -> dict:
    return compile_timetable(parse_timetable(TOML, "t.toml"), NOW)


def make(n=600, version=7, locker="L1", secret=SECRET, cards=None) -> bytes:
    return hb.build_bundle(
        secret,
        locker,
        "school",
        version,
        NOW,
        timetable(),
        roster(n) if cards is None else cards,
        GRANTS,
    )


def receive(directory: Path, data: bytes, chunk=512, current=None, max_bytes=1 << 20):
    r = Receiver(str(directory), keys.config_key(SECRET), "L1", current, max_bytes)
    try:
        for i in range(0, len(data), chunk):
            r.write(data[i : i + chunk])
        return r.finish()
    except BundleError:
        r.abort()
        raise


# -- keys -----------------------------------------------------------------------------------


def test_rfc4231_on_the_host():
    for n, (key, data, want) in enumerate(RFC4231, 1):
        assert keys.hmac_sha256(key, data).hex()[: len(want)] == want, n
        assert mac.hmac_sha256(key, data).hex()[: len(want)] == want, n


def test_host_and_firmware_derive_the_same_keys():
    for label, host in (
        (mac.CARD, keys.card_key),
        (mac.CONFIG, keys.config_key),
        (mac.CMD, keys.cmd_key),
    ):
        assert host(SECRET) == mac.derive(SECRET, label)
    reg = Registry(mac.derive(SECRET, mac.CARD))
    for uid in ("04A1B2C3", "04a1b2c3d4e5f6"):
        assert keys.card_hash(SECRET, uid) == reg.card_hash(parse_uid(uid))
    assert keys.card_hash(SECRET, "04A1B2C3") != keys.card_hash(keys.new_secret(), "04A1B2C3")


def test_normalise_uid_and_secrets():
    assert keys.normalise_uid(" 04a1b2c3 ") == "04A1B2C3"
    assert keys.normalise_uid("04a1b2c3d4e5f6") == "04A1B2C3D4E5F6"
    for bad in ("", "04A1B2C", "04A1B2C3D", "04:A1:B2:C3", "04A1B2CG", "04A1B2C3D4E5F6A7"):
        with pytest.raises(ValueError, match="8 or 14 hex digits"):
            keys.normalise_uid(bad)
    s = keys.new_secret()
    assert len(s) == 32 and s != keys.new_secret()
    assert keys.parse_secret(s.hex()) == s
    with pytest.raises(ValueError):
        keys.parse_secret("abcd")


# -- building -------------------------------------------------------------------------------


def test_host_bundle_layout():
    data = make(n=5, version=9)
    assert data[:8] == b"CLCF\x01\x30\x00\x00"
    assert int.from_bytes(data[8:12], "big") == 9 and int.from_bytes(data[12:16], "big") == 5
    hlen = int.from_bytes(data[16:20], "big")
    header = json.loads(data[20 : 20 + hlen])
    assert header["locker"] == "L1" and header["version"] == 9 and header["grants"] == GRANTS
    assert header["timetable"]["home_time"] == 915
    assert len(data) == 20 + hlen + 5 * 48 + 32
    assert data[-32:] == keys.hmac_sha256(keys.config_key(SECRET), data[:-32])
    decoded = hb.read_bundle(SECRET, data)
    hashes = [c["hash"] for c in decoded["cards"]]
    assert hashes == sorted(hashes)
    assert {c["person_id"] for c in decoded["cards"]} == {f"P{i:04d}" for i in range(5)}


def test_builder_refuses_bad_cards():
    row = ("04A1B2C3", "P1", "pupil", 3, True, False)
    with pytest.raises(ValueError, match="at most 28"):
        make(cards=[("04A1B2C3", "P" * 29, "pupil", 3, True, False)])
    with pytest.raises(ValueError, match="at most 28"):
        make(cards=[("04A1B2C3", "é" * 15, "pupil", 3, True, False)])  # 30 bytes of UTF-8
    make(cards=[("04A1B2C3", "é" * 14, "pupil", 3, True, False)])  # 28 bytes: fine
    with pytest.raises(ValueError, match="role"):
        make(cards=[("04A1B2C3", "P1", "janitor", 0, False, False)])
    with pytest.raises(ValueError, match="UID"):
        make(cards=[("04A1B2", "P1", "pupil", 3, False, False)])
    with pytest.raises(ValueError, match="twice"):
        make(cards=[row, ("04a1b2c3", "P2", "staff", 0, False, False)])
    with pytest.raises(ValueError, match="version"):
        make(cards=[row], version=0)
    with pytest.raises(ValueError, match="header"):
        hb.build_bundle(SECRET, "L1", "school", 1, NOW, None, [row], GRANTS * 400)


# -- the firmware reads what the host wrote (CPython) ----------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 512])
def test_firmware_reads_600_host_cards(tmp_path, chunk):
    data = make(600)
    assert receive(tmp_path, data, chunk=chunk) == 7
    assert (tmp_path / "config.bin").read_bytes() == data
    b = Bundle.load(str(tmp_path), keys.config_key(SECRET))
    assert b.ncards == 600 and b.header["site"] == "school" and b.grants == GRANTS
    assert b.timetable == json.loads(json.dumps(timetable()))
    reg = Registry(keys.card_key(SECRET))
    reg.use(b)
    for uid, person, role, year, walk_home, revoked in roster(600):
        card = reg.lookup(parse_uid(uid))
        assert (card.person, card.role, card.year, card.walk_home, card.revoked) == (
            person,
            role,
            year,
            walk_home,
            revoked,
        )
    for i in range(600, 700):
        assert reg.lookup(parse_uid(uid_of(i))) is None
    reg.use(None)


def test_every_flip_and_cut_of_a_host_bundle_leaves_config_bin_alone(tmp_path):
    receive(tmp_path, make(n=2, version=1))
    before = (tmp_path / "config.bin").read_bytes()
    data = make(n=4, version=2)
    reasons = set()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x04
        with pytest.raises(BundleError) as e:
            receive(tmp_path, bytes(bad), chunk=64, current=1)
        reasons.add(e.value.reason)
    for cut in range(0, len(data), 5):
        with pytest.raises(BundleError, match="truncated"):
            receive(tmp_path, data[:cut], chunk=64, current=1)
    for bad, reason in (
        (make(n=4, version=2, locker="L9"), "wrong_locker"),
        (make(n=4, version=1), "stale"),
        (make(n=4, version=2, secret=keys.new_secret()), "bad_signature"),
    ):
        with pytest.raises(BundleError, match=reason):
            receive(tmp_path, bad, current=1)
    with pytest.raises(BundleError, match="too_large"):
        receive(tmp_path, data, current=1, max_bytes=len(data) - 1)
    assert (tmp_path / "config.bin").read_bytes() == before
    assert not (tmp_path / "config.new").exists()
    assert "bad_signature" in reasons
    assert receive(tmp_path, data, current=1) == 2


# -- and under MicroPython with a 96k heap ---------------------------------------------------

MPY_SCRIPT = r"""
import gc, json, sys
sys.path.insert(0, ROOT + "/firmware")
from binascii import unhexlify
from locker import mac
from locker.bundle import Bundle
from locker.receiver import Receiver
from locker.registry import Registry

def uid_of(i):
    if i % 2 == 0:
        return unhexlify("{:08X}".format(0x8A000000 + i))
    return unhexlify("04{:012X}".format(i * 7919))

secret = unhexlify(SECRET)
gc.collect()
free0 = gc.mem_free()
r = Receiver(DIR, mac.derive(secret, mac.CONFIG), "L1", None, 65536)
buf = bytearray(512)
peak_recv = 0
with open(BUNDLE, "rb") as f:
    while True:
        n = f.readinto(buf)
        if not n:
            break
        r.write(memoryview(buf)[:n])
        gc.collect()  # what stays allocated while receiving (garbage aside)
        peak_recv = max(peak_recv, free0 - gc.mem_free())
version = r.finish()
del r
gc.collect()
free1 = gc.mem_free()
reg = Registry(mac.derive(secret, mac.CARD))
reg.use(Bundle.load(DIR, mac.derive(secret, mac.CONFIG)))
gc.collect()
resident = free1 - gc.mem_free()
found = {}
for i in range(600):
    c = reg.lookup(uid_of(i))
    found[c.role] = found.get(c.role, 0) + 1
    assert c.person == "P{:04d}".format(i), i
    if i % 50 == 0:
        gc.collect()
unknown = sum(1 for i in range(600, 700) if reg.lookup(uid_of(i)) is None)
print(json.dumps({"version": version, "found": found, "unknown": unknown,
                  "resident": resident, "receive": peak_recv,
                  "ncards": reg.bundle.ncards}))
"""


def test_micropython_96k_heap_reads_600_host_cards(tmp_path):
    if not MICROPYTHON.exists():
        pytest.skip("no .venv/bin/micropython (make deps)")
    data = make(600)
    (tmp_path / "bundle.bin").write_bytes(data)
    flash = tmp_path / "flash"
    flash.mkdir()
    script = (
        f"ROOT = {str(ROOT)!r}\nDIR = {str(flash)!r}\nBUNDLE = "
        f"{str(tmp_path / 'bundle.bin')!r}\nSECRET = {SECRET.hex()!r}\n" + MPY_SCRIPT
    )
    (tmp_path / "run.py").write_text(script)
    proc = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=96k", str(tmp_path / "run.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("micropython registry:", result)
    assert result["version"] == 7 and result["ncards"] == 600 and result["unknown"] == 100
    assert result["found"] == {"pupil": 300, "staff": 100, "slt": 100, "office": 100}
    assert (flash / "config.bin").read_bytes() == data
    # nothing per card in RAM: the bundle's header and a few small buffers only
    assert result["resident"] < 8192, result
    assert result["receive"] < 8192, result
