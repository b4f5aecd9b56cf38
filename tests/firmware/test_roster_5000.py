# runs-on: micropython
# heapsize: 128k
# (the whole Locker's code sits in this heap on the 64-bit unix port, frozen in flash on an
# ESP32: it needed 112k before the journal's ring (locker/ring.py, 3.4 KB of bytecode) and the
# simulated flash partition the test board keeps it on (hal/sim/flash.py); 128k leaves room for
# fragmentation. What the test checks is the heap the run adds, not this total.)
# 5,000 cards on one locker (docs/memory.md): a bundle made by the host's builder arrives through
# the locker's own config sink in 512-byte chunks, is checked (MAC, header, every card record in
# order) and installed, and cards are looked up in it, without the bundle or the card table ever
# in RAM: the heap the whole run adds stays a few KB while the bundle is 235 KB.
import gc
import json
import os

from fakeboard import FakeBoard, make_locker
from mpytest import fixture, tmpdir

MORNING = 1795478400 + 8 * 3600 + 20 * 60  # Tuesday 2026-11-24 08:20 UTC, before lessons


def _fixtures():
    return os.getenv("MPYTEST_FIXTURES") or "/nonexistent"


def test_a_5000_card_bundle_streams_in_and_cards_are_found_in_a_small_heap():
    locker, board = make_locker(tmpdir("roster_5000"), nbays=4, clock=MORNING)
    assert locker.config_version == 1
    path = _fixtures() + "/bundle-5000.bin"
    size = os.stat(path)[6]
    assert size > 5000 * 48
    assert size <= locker.settings["max_config_bytes"]
    with open(_fixtures() + "/bundle-5000.json") as f:
        picks = json.load(f)
    buf = bytearray(512)
    mv = memoryview(buf)
    gc.collect()
    base = gc.mem_alloc()
    peak = 0
    sink = locker.config_receiver(size)
    assert sink is not None, "refused as too large"
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            sink.write(mv[:n])
            gc.collect()
            peak = max(peak, gc.mem_alloc() - base)
    sink.close()  # verified again from flash, every card record checked, then installed
    gc.collect()
    peak = max(peak, gc.mem_alloc() - base)
    assert locker.config_version == 5, [e.reason for e in locker.journal.unacked(0)][-3:]
    assert locker.bundle.ncards == 5000
    for name in ("first", "middle", "last"):
        from binascii import unhexlify

        card = locker.registry.lookup(unhexlify(picks[name]["uid"]))
        assert card is not None and card.person == picks[name]["person"], (name, card)
        gc.collect()
        peak = max(peak, gc.mem_alloc() - base)
    assert locker.tap_text("05FFFFFF") == {"result": "denied", "reason": "unknown_card"}
    # a pupil whose record is near the end of the table deposits a phone
    r = locker.tap_text(picks["near_end_pupil"]["uid"])
    assert r["result"] == "granted" and r["action"] == "deposit", r
    assert locker.state()["bays"][r["bay"] - 1]["holder"] == picks["near_end_pupil"]["person"]
    gc.collect()
    peak = max(peak, gc.mem_alloc() - base)
    print("5000 cards: bundle {} B, heap added at most {} B".format(size, peak))
    assert peak < 8 * 1024, peak  # the table is 240,000 bytes: none of it is held


def test_a_bundle_the_flash_has_no_room_for_is_refused_and_the_old_one_stays():
    from hal.sim import flash as simflash
    from locker import settings
    from locker.core import Locker

    img = tmpdir("roster_5000_small") + "/flash.img"
    dev = simflash.mount(img, "/r5k", block_count=48)  # 192 KB: no room for a 240 KB bundle
    try:
        with open("/r5k/config.bin", "wb") as f:
            f.write(fixture("bundle-v1.bin"))
        region = simflash.FileBlockDevice(tmpdir("roster_5000_region") + "/journal.img")
        board = FakeBoard("/r5k", 4, region=region)  # the journal's partition beside littlefs
        board.clock = MORNING
        device = {"locker_id": "L1", "site": "school", "bays": 4}
        device["secret"] = fixture("secret.hex").decode()
        locker = Locker(board, device, settings.load(device))
        path = _fixtures() + "/bundle-5000.bin"
        sink = locker.config_receiver(os.stat(path)[6])
        buf = bytearray(512)
        failed = None
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                try:
                    sink.write(memoryview(buf)[:n])
                except Exception as e:  # noqa: BLE001 - what the MQTT client sees
                    failed = e.args[0]
                    sink.abort()  # what the MQTT client does with a sink that raised
                    break
        assert failed == "too_large", failed
        assert locker.config_version == 1
        last = [(e.type, e.reason) for e in locker.journal.unacked(0)][-1]
        assert last == ("config_rejected", "too_large"), last
        assert "config.new" not in os.listdir("/r5k")
        assert locker.tap_text("04A10004")["result"] == "granted"  # the old roster still works
        locker.journal.close()
    finally:
        dev.close()
        os.umount("/r5k")


def test_5000_cards_and_1000_exceptions_stream_in_and_are_read_from_flash():
    """The rule table (consents, exemptions, visitors) is read from flash like the cards: a
    consented pupil near its end deposits without a flag, a pupil without consent is flagged,
    a visitor's card deposits; the heap the run adds stays as small as with cards alone."""
    locker, board = make_locker(tmpdir("roster_5000_rules"), nbays=4, clock=MORNING)
    path = _fixtures() + "/bundle-5000-rules.bin"
    size = os.stat(path)[6]
    assert size > 5000 * 48 + 1000 * 96
    assert size <= locker.settings["max_config_bytes"]
    with open(_fixtures() + "/bundle-5000-rules.json") as f:
        picks = json.load(f)
    buf = bytearray(512)
    mv = memoryview(buf)
    gc.collect()
    base = gc.mem_alloc()
    peak = 0
    sink = locker.config_receiver(size)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            sink.write(mv[:n])
            gc.collect()
            peak = max(peak, gc.mem_alloc() - base)
    sink.close()
    gc.collect()
    peak = max(peak, gc.mem_alloc() - base)
    assert locker.config_version == 6, [e.reason for e in locker.journal.unacked(0)][-3:]
    assert locker.bundle.nrules == 1000
    for name in ("consented", "flagged", "visitor"):
        r = locker.tap_text(picks[name]["uid"])
        assert r["result"] == "granted" and r["action"] == "deposit", (name, r)
        gc.collect()
        peak = max(peak, gc.mem_alloc() - base)
    flagged = [e.person for e in locker.journal.unacked(0) if e.type == "policy_flag"]
    assert flagged == [picks["flagged"]["person"]], flagged
    print("5000 cards, 1000 rules: bundle {} B, heap added at most {} B".format(size, peak))
    assert peak < 8 * 1024, peak
