# Every tunable of the locker with its default; device.json's "settings" object overrides them.
# One place to read what the locker's timings are (docs/policy.md gives the first five).

DEFAULTS = {
    "override_s": 20,  # an SLT fob arms an override for this long
    "double_tap_s": 3,  # two taps of an SLT fob within this: emergency open of every occupied bay
    "grant_lapse_s": 30,  # a granted bay whose door is not opened relocks after this
    "door_left_open_s": 60,  # a door open longer than this raises door_left_open
    "tick_ms": 1000,  # time-driven checks (at least every 2 s: docs/policy.md)
    "flash_blocks": 128,  # simulated flash: 128 x 4096 bytes = a 512 KB ESP32 partition
    "journal_segment_bytes": 16384,
    "max_config_bytes": 524288,  # a config larger than this is discarded unread (5,000+ cards)
    "max_cmd_bytes": 1024,
    "ack_timeout_s": 10,  # events not acknowledged within this are sent again
    "keepalive_s": 30,  # MQTT keepalive: PINGREQ after half of it idle, dropped after 1.5 x
    "connect_timeout_s": 5,  # a broker that does not answer CONNECT within this: try again later
    "write_timeout_s": 10,  # a broker that does not take our bytes within this: reconnect
    "backoff_min_s": 1,  # reconnect delay doubles from this (with jitter) ...
    "backoff_max_s": 60,  # ... up to this
    "event_window": 1024,  # events sent and not yet acknowledged, at most
    "event_batch_bytes": 4096,  # an event message (a JSON array of events) at most this long
    "event_qos": 1,  # events go out at QoS 1 (PUBACK not awaited; delivery is assured by ack)
    "journal_bytes": 0,  # the journal's capacity; 0: 384 KB, less on a small filesystem
    "journal_reserve_bytes": 49152,  # kept for essential events (docs/journal.md, Reserve)
    "denial_window_s": 60,  # a card's repeated denials (one reason) within this: one record
    "update_confirm_s": 300,  # a new firmware not online within this is rolled back (fleet.md)
}


REQUIRED = (("locker_id", str), ("bays", int), ("secret", str))


def load(device):
    """Settings for this board; raises ValueError naming what is wrong in device.json."""
    if not isinstance(device, dict):
        raise ValueError("device.json: expected a JSON object")
    for key, kind in REQUIRED:
        if not isinstance(device.get(key), kind):
            raise ValueError("device.json: {} missing or not a {}".format(key, kind.__name__))
    settings = dict(DEFAULTS)
    extra = device.get("settings") or {}
    for key in extra:
        if key not in DEFAULTS:
            raise ValueError("device.json: unknown setting {!r}".format(key))
        settings[key] = extra[key]
    return settings
