# runs-on: micropython cpython
# heapsize: 96k
# Event codes, the binary record and the MQTT `event` payload.
import json

from locker import events as E
from mpytest import raises


def test_roundtrip_every_type_and_reason():
    seq = 1
    for kind in E.TYPES:
        for reason in (None,) + E.REASONS:
            ev = E.Event(seq, 1795549393, kind, 3, "P0123", "S01", reason)
            assert E.decode(E.encode(ev)) == ev
            seq += 1


def test_free_text_type_and_reason_and_missing_fields():
    ev = E.Event(4294967295, None, "a_new_kind", None, None, None, "médical: called by office")
    back = E.decode(E.encode(ev))
    assert back == ev
    assert back.ts is None and back.bay is None and back.person is None and back.by is None
    assert back.reason == "médical: called by office"
    assert E.decode(E.encode(E.Event(7, 0, "boot"))) == E.Event(7, 0, "boot")


def test_codes_are_indexes_and_stable():
    # codes are on flash: the first words must keep their numbers
    assert E.TYPES[0] == "boot" and E.TYPES[1] == "deposit" and E.TYPES[2] == "retrieve"
    assert E.REASONS[0] == "contact_hours" and E.REASONS[1] == "unknown_card"
    raw = E.encode(E.Event(1, None, "retrieve", 2, None, None, "unknown_card"))
    assert raw[5] == 2  # type code right after flags and seq
    assert raw[-1] == 1  # reason code last
    for word in (
        "deposit",
        "retrieve",
        "override",
        "denied",
        "policy_flag",
        "uncollected",
        "door_forced",
        "door_left_open",
        "emergency_open",
        "cmd_rejected",
        "cancelled",
        "boot",
    ):
        assert word in E.TYPES, word
    assert len(set(E.TYPES)) == len(E.TYPES) and len(set(E.REASONS)) == len(E.REASONS)


def test_typical_deposit_is_compact():
    raw = E.encode(E.Event(123456, 1795549393, "deposit", 3, "P0123"))
    assert len(raw) == 17


def test_to_json_is_the_contract_payload():
    ev = E.Event(12, 1795549393, "deposit", 3, "P0123", None, None)
    text = E.to_json(ev)
    assert text == (
        '{"seq": 12, "ts": 1795549393, "type": "deposit", "bay": 3, '
        '"person": "P0123", "by": null, "reason": null}'
    )
    odd = E.Event(13, None, "override", None, 'a"b\\c', "S1", "fire\nalarm")
    obj = json.loads(E.to_json(odd))
    assert obj == {
        "seq": 13,
        "ts": None,
        "type": "override",
        "bay": None,
        "person": 'a"b\\c',
        "by": "S1",
        "reason": "fire\nalarm",
    }


# Test vectors for the event's and the ack's MAC (docs/protocol.md): computed with CPython's
# hmac module, not with the firmware's code, so a second implementation can check against them.
SECRET = bytes(range(32))  # device.json "secret": "000102...1f"
JID = "0123456789abcdef"
VECTORS = (
    (E.Event(7, 1795549393, "deposit", 3, "P0123", None, "pupil"),
     "36b969aeefd01450caee8a6f0b17c619"),
    (E.Event(1, None, "boot"), "98da3e8ccd0fa99c7663c4f814e5c19b"),
    (E.Event(12, 1795549400, "emergency_open", 2, "P7", "O1", "fire drill \u2013 hall 2"),
     "d102319576cb6e87de01db752d82b668"),
)  # fmt: skip


def test_event_mac_matches_the_fixed_vectors():
    from locker.mac import derive

    key = derive(SECRET, b"event")
    assert key == bytes.fromhex("e2ba5ff05fa8619c82d8d99f6242084a5b17b329381722ad100792a14dc8aedc")
    for ev, mac in VECTORS:
        obj = json.loads(E.to_json(ev, JID, key))
        assert obj["jid"] == JID and obj["mac"] == mac, (ev, obj["mac"])
        assert obj["seq"] == ev.seq and obj["reason"] == ev.reason
    assert E.to_json(VECTORS[0][0], JID, key) == (
        '{"seq": 7, "ts": 1795549393, "type": "deposit", "bay": 3, "person": "P0123", '
        '"by": null, "reason": "pupil", "jid": "0123456789abcdef", '
        '"mac": "36b969aeefd01450caee8a6f0b17c619"}'
    )
    # any field changed, or another journal or key: another MAC
    other = E.Event(7, 1795549393, "deposit", 4, "P0123", None, "pupil")
    assert json.loads(E.to_json(other, JID, key))["mac"] != VECTORS[0][1]
    assert json.loads(E.to_json(VECTORS[0][0], "f" * 16, key))["mac"] != VECTORS[0][1]
    bad_key = derive(bytes(32), b"event")
    assert json.loads(E.to_json(VECTORS[0][0], JID, bad_key))["mac"] != VECTORS[0][1]


def test_ack_mac_matches_the_fixed_vector():
    from binascii import hexlify

    from locker.mac import derive, hmac_sha256

    key = derive(SECRET, b"ack")
    mac = hexlify(hmac_sha256(key, b"7|" + JID.encode())[:16])
    assert mac == b"131598634f7322bda0c01017fba0e361"


def test_bad_fields_are_named():
    cases = (
        (E.Event(0 - 1, None, "boot"), "seq"),
        (E.Event(1, -5, "boot"), "ts"),
        (E.Event(1, None, "boot", 256), "bay"),
        (E.Event(1, None, "boot", "3"), "bay"),
        (E.Event(1, None, "boot", None, "x" * 256), "person"),
        (E.Event(1, None, "boot", None, None, 7), "by"),
        (E.Event(1, None, "", None), "type"),
        (E.Event(1, None, "boot", None, None, None, "é" * 200), "reason"),
    )
    for ev, field in cases:
        with raises(ValueError) as e:
            E.encode(ev)
        assert field in str(e.value), (field, str(e.value))


def test_decode_never_misreads_a_cut_or_padded_record():
    raw = E.encode(E.Event(99, 1795549393, "override", 3, "P0123", "S01", "office note"))
    for n in range(len(raw)):
        with raises(ValueError):
            E.decode(raw[:n])
    with raises(ValueError):
        E.decode(raw + b"\x00")
    bad_code = bytearray(E.encode(E.Event(1, None, "boot")))
    bad_code[5] = 250
    with raises(ValueError):
        E.decode(bad_code)
    with raises(ValueError):
        E.decode(b"\xff" * 12)


def test_decode_a_slice_of_a_buffer():
    raw = E.encode(E.Event(5, 10, "denied", None, None, None, "revoked"))
    buf = bytearray(b"xx" + raw + b"yyyy")
    assert E.decode(buf, 2, 2 + len(raw)) == E.Event(5, 10, "denied", None, None, None, "revoked")
