"""Each locker's health from its state and the warnings shown for it (docs/fleet.md)."""

from lockerctl.fleet import health

GOOD = {
    "version": "1.2.0",
    "uptime_s": 7200,
    "reset_cause": "update",
    "heap_free": 40000,
    "heap_low": 30000,
    "journal_fill": 0.12,
    "rssi": -61,
    "clock_offset_s": 1,
    "update": {"offered": "1.3.0", "progress": 0.4, "failed": None},
}


def test_a_healthy_locker_has_no_warnings():
    h = health(GOOD)
    assert (h.version, h.uptime_s, h.reset_cause, h.heap_low, h.rssi) == (
        "1.2.0",
        7200,
        "update",
        30000,
        -61,
    )
    assert (h.offered, h.progress, h.failed) == ("1.3.0", 0.4, None)
    assert h.warnings == []


def test_each_warning_and_its_threshold():
    assert health(dict(GOOD, journal_fill=0.5)).warnings == []
    assert health(dict(GOOD, journal_fill=0.51)).warnings == ["journal 51% full"]
    assert health(dict(GOOD, heap_low=16384)).warnings == []
    assert health(dict(GOOD, heap_low=16383)).warnings == ["heap low-water 15 KB"]
    assert health(GOOD, clock_offset=-5).warnings == []
    assert health(GOOD, clock_offset=-6.2).warnings == ["clock off by -6 s"]
    assert health(dict(GOOD, clock_offset_s=9)).warnings == ["clock off by +9 s"]
    assert health(GOOD, recent_boots=2).warnings == []
    assert health(GOOD, recent_boots=3).warnings == ["reset loop: 3 boots in the last hour"]
    failed = dict(GOOD, update={"offered": None, "progress": None, "failed": "1.3.0"})
    assert health(failed).warnings == ["update 1.3.0 failed"]


def test_a_state_of_any_shape_gives_no_health_rather_than_an_error():
    for state in (None, [], "x", {"heap_low": "lots", "update": [1], "version": 7}):
        h = health(state)
        assert h.heap_low is None and h.version is None and h.offered is None
        assert h.warnings == []
    assert health({"journal_fill": True}).journal_fill is None
