# runs-on: micropython
# What the firmware does to stay small (docs/memory.md) changes nothing anyone can see: the state
# written as JSON piece by piece is the state, a bay's resting fields live on its class, and the
# modules left out of the boot (settings once read, signed commands until one arrives) still work.
import json
import sys

from fakeboard import make_locker
from mpytest import tmpdir

DAY = 1795478400  # Tuesday 2026-11-24 00:00 UTC, a school day in term
S1, P7 = "04A10004", "04A1B2C3D4E5F6"


def _same(locker):
    assert json.loads(bytes(locker.state_json())) == locker.state()


def test_state_json_is_the_state_in_every_bay_state():
    locker, board = make_locker(tmpdir("memory_state0"), nbays=4, clock=None, config=False)
    _same(locker)  # no config, clock unknown, offline
    locker, board = make_locker(tmpdir("memory_state1"), nbays=4, clock=DAY + 8 * 3600)
    locker.online = True
    _same(locker)
    r = locker.tap_text(S1)  # granted: the bay is open for the deposit
    assert r["result"] == "granted"
    _same(locker)
    locker.door(r["bay"], 1)
    _same(locker)
    locker.door(r["bay"], 0)  # occupied
    _same(locker)
    locker.door(4, 2)  # a failed reed switch
    state = json.loads(bytes(locker.state_json()))
    assert state == locker.state()
    assert state["bays"][r["bay"] - 1]["holder"] is not None
    assert state["bays"][3]["door"] == "unknown"
    mine = bytearray(b"left over from before")
    assert locker.state_json(mine) is mine  # the link's own buffer, emptied and refilled
    assert json.loads(bytes(mine)) == locker.state()
    assert locker.state_json() is locker.state_json()  # the locker's buffer, reused


def test_bays_hold_only_what_differs_from_rest():
    from locker import bays as B

    a, b = B.Bay(1), B.Bay(2)
    assert (a.state, a.holder, a.door, a.uncollected_day) == (B.FREE, None, B.CLOSED, 0)
    a.grant_deposit("P1", "pupil", 1000)
    assert (a.holder, a.state) == ("P1", B.OPEN_DEPOSIT)
    assert (b.holder, b.state, B.Bay.holder) == (None, B.FREE, None)  # the class is untouched


def test_settings_module_is_dropped_once_read():
    import app

    settings = app.load_settings({"locker_id": "L1", "bays": 4, "secret": "00" * 32})
    assert settings["tick_ms"] == 1000
    assert "locker.settings" not in sys.modules


def test_signed_commands_load_their_module_on_first_use():
    locker, board = make_locker(tmpdir("memory_cmd"), nbays=4, clock=DAY + 8 * 3600)
    assert locker._commands is None
    assert locker.command(b"not json") is False  # refused and recorded, module loaded for it
    assert locker.commands.last == 0


def test_the_config_receiver_is_loaded_while_a_bundle_arrives_only():
    from mpytest import fixture

    locker, board = make_locker(tmpdir("memory_config"), nbays=4, clock=DAY + 8 * 3600)
    assert "locker.receiver" not in sys.modules  # not needed to run on a stored config
    v2 = fixture("bundle-v2.bin")
    sink = locker.config_receiver(len(v2))
    assert "locker.receiver" in sys.modules
    for i in range(0, len(v2), 100):
        sink.write(v2[i : i + 100])
    sink.close()
    assert locker.state()["config"] == 2
    assert "locker.receiver" not in sys.modules
    stale = locker.config_receiver(len(v2))  # the broker's retained copy again: refused unread
    raised = None
    try:
        stale.write(v2[:64])
    except Exception as e:  # noqa: BLE001 - the bundle's own error, as the MQTT client sees it
        raised = e.args[0]
    assert raised == "stale"
    stale.abort()  # what the MQTT client does with a sink that raised
    stale.abort()  # and twice is harmless
    assert "locker.receiver" not in sys.modules
    assert locker.state()["config"] == 2
    from locker.receiver import Receiver

    assert Receiver.MAX_HEADER == 16384
