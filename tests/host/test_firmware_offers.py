"""Firmware offers (docs/protocol.md, `firmware`): the host signs a manifest per locker, the
firmware's `locker/update.py` checks it exactly as `lockerctl.firmware.verify_offer` does; versions
compare as dotted integers on both sides."""

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lockerctl import firmware as fw

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "firmware"))

from locker import update  # noqa: E402
from locker.mac import derive  # noqa: E402

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))


def build(tmp_path, version="1.2.0"):
    d = tmp_path / "build"
    (d / "locker").mkdir(parents=True)
    (d / "main.py").write_text("# the boot loader: never offered\n")
    (d / "locker" / "core.mpy").write_bytes(b"M" * 5000)
    (d / "lib").mkdir()
    (d / "lib" / "x.mpy").write_bytes(b"")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "junk.pyc").write_bytes(b"x")
    return fw.collect_build(d, version)


def both(payload, secret=SECRET, locker="L1", running="1.0.0"):
    """(host's verdict, firmware's verdict): the manifest's version or the refusal reason."""
    try:
        host = fw.verify_offer(payload, secret, locker, running)["version"]
    except fw.OfferRefused as e:
        host = e.reason
    try:
        m = update.check_offer(bytearray(payload), derive(secret, fw.FIRMWARE), locker)
        firm = m["version"] if update.newer(m["version"], running) else "downgrade"
    except update.Refused as e:
        firm = e.args[0]
    return host, firm


def test_build_is_every_file_but_the_boot_loader_with_its_version(tmp_path):
    files = build(tmp_path)
    names = [f.name for f in files]
    assert names == ["lib/x.mpy", "locker/core.mpy", "VERSION"]
    assert files[-1].data == b"1.2.0\n"
    man = fw.manifest("L1", "school", "1.2.0", files)
    assert man["files"][1] == ["locker/core.mpy", 5000, files[1].sha256]
    assert [t for t, _ in fw.chunk_messages("school", files)] == [
        f"firmware/school/{files[1].sha256[:32]}/0",
        f"firmware/school/{files[1].sha256[:32]}/1",
        f"firmware/school/{files[1].sha256[:32]}/2",
        f"firmware/school/{files[2].sha256[:32]}/0",
    ]
    assert b"".join(p for _, p in fw.chunk_messages("school", files[1:2])) == files[1].data


def test_genuine_offer_is_taken_by_host_and_firmware_alike(tmp_path):
    files = build(tmp_path)
    payload = fw.sign_offer(SECRET, fw.manifest("L1", "school", "1.2.0", files))
    assert payload[64:65] == b"\n" and len(payload) < fw.MAX_OFFER
    assert both(payload) == ("1.2.0", "1.2.0")


def test_forged_foreign_older_and_malformed_offers_are_refused_alike(tmp_path):
    files = build(tmp_path)
    man = fw.manifest("L1", "school", "1.2.0", files)
    good = fw.sign_offer(SECRET, man)
    assert both(fw.sign_offer(OTHER, man)) == ("bad_signature", "bad_signature")
    assert both(good, locker="L2") == ("wrong_locker", "wrong_locker")
    assert both(good, running="1.2") == ("downgrade", "downgrade")
    assert both(good, running="1.10.0") == ("downgrade", "downgrade")
    tampered = good[:-3] + b"9}]" if good.endswith(b"]}") else good[:-1] + b" "
    assert both(tampered) == ("bad_signature", "bad_signature")
    assert both(b"x" * 40) == ("malformed", "malformed")
    for bad in (
        dict(man, files=[["../boot.json", 1, "0" * 64], *man["files"]]),
        dict(man, files=[["main.py", 1, "0" * 64], *man["files"]]),
        dict(man, files=[f for f in man["files"] if f[0] != "VERSION"]),
        dict(man, version="1.x"),
        dict(man, files=man["files"] + man["files"][:1]),
    ):
        body = json.dumps(bad).encode()
        tag = fw.keys.hmac_sha256(fw.fw_key(SECRET), body).hex().encode()
        assert both(tag + b"\n" + body) == ("malformed", "malformed"), bad


@pytest.mark.parametrize(
    "a,b,a_newer",
    [
        ("1.0.1", "1.0.0", True),
        ("1.10", "1.9.9", True),
        ("2", "1.99.99.99", True),
        ("1.0", "1.0.0", False),
        ("0.2.0", "0.2", False),
        ("0.9.0", "0.10.0", False),
    ],
)
def test_versions_compare_as_dotted_integers(a, b, a_newer):
    assert fw.newer(a, b) is a_newer
    assert update.newer(a, b) is a_newer


@given(st.text(max_size=12))
def test_any_version_text_is_judged_alike(text):
    try:
        host = fw.version_key(text)
    except fw.FirmwareError:
        host = None
    try:
        firm = update.version_key(text)
    except ValueError:
        firm = None
    assert host == firm


def test_a_build_without_firmware_or_with_a_bad_name_is_refused(tmp_path):
    with pytest.raises(fw.FirmwareError, match="no firmware"):
        (tmp_path / "empty").mkdir()
        fw.collect_build(tmp_path / "empty", "1.0")
    d = tmp_path / "odd"
    d.mkdir()
    (d / "a b.mpy").write_bytes(b"x")
    with pytest.raises(fw.FirmwareError, match="letters, digits"):
        fw.collect_build(d, "1.0")
    with pytest.raises(fw.FirmwareError, match="dotted integers"):
        fw.collect_build(d, "v1")
