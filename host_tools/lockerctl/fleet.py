"""Each locker's health as its retained `state` reports it, and the warnings the dashboard and
`lockerctl locker list` show (docs/fleet.md, "Health warnings"). Pure: no store, no network."""

from __future__ import annotations

from dataclasses import dataclass, field

JOURNAL_WARN = 0.5  # journal more than half full
HEAP_LOW_WARN = 16 * 1024  # heap low-water mark under 16 KB
CLOCK_WARN_S = 5  # clock off by more than 5 s
RESET_LOOP_BOOTS = 3  # this many boots ...
RESET_LOOP_WINDOW_S = 3600  # ... within this long: a reset loop


def _num(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _text(value):
    return value if isinstance(value, str) and len(value) <= 64 else None


@dataclass
class Health:
    version: str | None = None
    uptime_s: int | None = None
    reset_cause: str | None = None
    heap_free: int | None = None
    heap_low: int | None = None
    journal_fill: float | None = None
    rssi: int | None = None
    clock_offset_s: float | None = None  # the host's measurement when it has one
    offered: str | None = None
    progress: float | None = None
    failed: str | None = None
    warnings: list[str] = field(default_factory=list)


def health(state, clock_offset: float | None = None, recent_boots: int = 0) -> Health:
    """What a stored state says about the locker's health, with its warnings. `clock_offset`
    is the host's own measurement of the locker's clock (serve records it), `recent_boots`
    the `boot` events of the last RESET_LOOP_WINDOW_S."""
    h = Health()
    if not isinstance(state, dict):
        state = {}
    h.version = _text(state.get("version"))
    h.uptime_s = _num(state.get("uptime_s"))
    h.reset_cause = _text(state.get("reset_cause"))
    h.heap_free = _num(state.get("heap_free"))
    h.heap_low = _num(state.get("heap_low"))
    h.journal_fill = _num(state.get("journal_fill"))
    h.rssi = _num(state.get("rssi"))
    h.clock_offset_s = clock_offset if clock_offset is not None else None
    if h.clock_offset_s is None:
        h.clock_offset_s = _num(state.get("clock_offset_s"))
    update = state.get("update")
    if isinstance(update, dict):
        h.offered = _text(update.get("offered"))
        h.progress = _num(update.get("progress"))
        h.failed = _text(update.get("failed"))
    if h.journal_fill is not None and h.journal_fill > JOURNAL_WARN:
        h.warnings.append(f"journal {h.journal_fill:.0%} full")
    if h.heap_low is not None and h.heap_low < HEAP_LOW_WARN:
        h.warnings.append(f"heap low-water {h.heap_low // 1024} KB")
    if h.clock_offset_s is not None and abs(h.clock_offset_s) > CLOCK_WARN_S:
        h.warnings.append(f"clock off by {h.clock_offset_s:+.0f} s")
    if recent_boots >= RESET_LOOP_BOOTS:
        h.warnings.append(f"reset loop: {recent_boots} boots in the last hour")
    if h.failed:
        h.warnings.append(f"update {h.failed} failed")
    return h
