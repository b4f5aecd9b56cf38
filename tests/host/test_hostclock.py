"""The host's clock for lockers (lockerctl.hostclock): a locker whose clock is unknown gets a
`time` command signed with its own key and carrying its nonce; the firmware's verifier accepts
it; offsets are recorded from live states only; hostile states are ignored without a traceback."""

import json

import pytest
from harness import verify_as_locker
from lockerctl.hostclock import HostClock
from lockerctl.store import Store

SECRET = bytes.fromhex("a5" * 32)
NONCE = "0123456789abcdef"


@pytest.fixture
def store(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    s.add_locker("school", "L1", 4, SECRET, "pw")
    yield s
    s.close()


@pytest.fixture
def clock(store):
    sent = []
    now = [1_795_500_000.25]
    c = HostClock("school", lambda: store, lambda t, p: sent.append((t, p)), lambda: now[0])
    c.sent, c.now = sent, now
    return c


def state(**kw):
    base = {"locker": "L1", "clock_ok": False, "time": None, "clock_nonce": NONCE, "bays": []}
    base.update(kw)
    return json.dumps(base).encode()


def test_an_unknown_clock_gets_the_hosts_time_signed_with_its_nonce(clock):
    clock.on_state("lockers/school/L1/state", state(), retained=False)
    [(topic, payload)] = clock.sent
    assert topic == "lockers/school/L1/cmd"
    cmd = verify_as_locker(payload, SECRET, "L1", 0, None)  # the firmware's own verifier
    assert (cmd["op"], cmd["bay"], cmd["by"]) == ("time", 0, "host")
    assert cmd["reason"] == f"{NONCE} 1795500000"
    assert cmd["exp"] == 1_795_500_000 + 60


def test_the_same_nonce_is_answered_once_then_again_only_after_a_while(clock, monkeypatch):
    clock.on_state("lockers/school/L1/state", state(), retained=True)
    clock.on_state("lockers/school/L1/state", state(), retained=False)
    assert len(clock.sent) == 1
    clock.on_state("lockers/school/L1/state", state(clock_nonce="fedcba9876543210"), False)
    assert len(clock.sent) == 2
    ids = [json.loads(p)["id"] for _, p in clock.sent]
    assert ids[1] > ids[0]  # the locker's command counter only moves forward


def test_a_trusted_clock_is_never_answered(clock):
    clock.on_state("lockers/school/L1/state", state(clock_ok=True, time=1_795_500_000), False)
    clock.on_state("lockers/school/L1/state", state(clock_nonce=None), False)
    assert clock.sent == []


def test_offset_from_live_states_only(clock, store):
    clock.on_state("lockers/school/L1/state", state(clock_ok=True, time=1_795_500_012), True)
    assert store.clock_offsets("school") == {}  # retained: sent whenever
    clock.on_state("lockers/school/L1/state", state(clock_ok=True, time=1_795_500_012), False)
    offset, checked = store.clock_offsets("school")["L1"]
    assert offset == pytest.approx(11.75) and checked == pytest.approx(1_795_500_000.25)
    clock.now[0] += 30
    clock.on_state("lockers/school/L1/state", state(clock_ok=True, time=1_795_500_030), False)
    assert store.clock_offsets("school")["L1"][0] == pytest.approx(-0.25)
    # a state on every tap: an offset that has not moved is not written again at once
    clock.now[0] += 0.5
    clock.on_state("lockers/school/L1/state", state(clock_ok=True, time=1_795_500_030), False)
    assert store.clock_offsets("school")["L1"][1] == pytest.approx(1_795_500_030.25)


@pytest.mark.parametrize(
    "topic,payload",
    [
        ("lockers/school/L1/state", b"\xff\xfe"),
        ("lockers/school/L1/state", b"[1, 2]"),
        ("lockers/school/L1/state", b"{" * 5000),
        ("lockers/school/L1/state", state(clock_nonce="NOT-HEX-AT-ALL!!")),
        ("lockers/school/L1/state", state(clock_nonce=12)),
        ("lockers/school/L1/state", state(time="soon", clock_nonce=None)),
        ("lockers/school/L1/state", state(time=True, clock_nonce=None)),
        ("lockers/school/L9/state", state()),  # not a registered locker
        ("lockers/other/L1/state", state()),  # another site
        ("lockers/school/L1/event", state()),
        ("lockers/school/L1/state", b" " * 70000),
    ],
)
def test_hostile_states_are_ignored(clock, store, topic, payload):
    clock.on_state(topic, payload, retained=False)
    assert clock.sent == []
    assert store.clock_offsets("school") == {}
