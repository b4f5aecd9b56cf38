"""How stored values are shown: every page, export and report goes through these, so that no row
the store can hold (whatever a locker sent, whatever an old version or a hand edit left) breaks
a page or an export.

- Times: a locker's `ts` is shown in the site's local time when it is a time a locker can hold
  (0 to 2^32 - 1 seconds, the journal's u32); anything else shows as `invalid time (ts=...)`.
  An event without a `ts` (the locker's clock was not trusted) shows the host's receipt time
  marked `(received)`. `event_time` is the one place that decides this.
- A locker's retained `state`: `read_state` keeps what it can make sense of (bays that are
  objects with a whole `bay` number and a text or null `holder`) and says when it cannot
  (`unreadable`), whatever the JSON's shape.
- Spreadsheet cells: `inert_csv` makes a text that a spreadsheet would run as a formula (one that
  begins with `=`, `+`, `-`, `@`, a tab or a carriage return) inert, the OWASP way: a leading
  apostrophe. The Excel export writes every text as an explicit string cell instead.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

TS_MIN = 0
TS_MAX = 2**32 - 1  # the journal's u32: a locker cannot hold a later time

STYLES = {
    "iso": None,  # 2026-09-10T15:05:00+01:00
    "seconds": "%Y-%m-%d %H:%M:%S",
    "minutes": "%Y-%m-%d %H:%M",
}
RECEIVED = "(received)"
SKEW_SHOWN = 60  # seconds: past this the locker's own time is shown beside the receipt time
CLOCK_UNKNOWN = "clock unknown"
_SHOWN_TS = 40  # characters of an impossible ts quoted in its message


def valid_ts(ts) -> bool:
    """True for a number of seconds a locker (or the host) can have recorded."""
    return (
        isinstance(ts, int | float)
        and not isinstance(ts, bool)
        and ts == ts  # not NaN
        and TS_MIN <= ts <= TS_MAX
    )


def local_datetime(ts, timezone: str) -> dt.datetime | None:
    """`ts` as an aware local datetime, or None when it is not a time (see `valid_ts`)."""
    if not valid_ts(ts):
        return None
    try:
        return dt.datetime.fromtimestamp(ts, ZoneInfo(timezone))
    except (OverflowError, OSError, ValueError):
        return None


def invalid_time(ts) -> str:
    text = repr(ts) if not isinstance(ts, str) else ts
    if len(text) > _SHOWN_TS:
        text = text[:_SHOWN_TS] + "…"
    return f"invalid time (ts={text})"


def format_ts(ts, timezone: str, style: str = "iso") -> str:
    """`ts` in the site's local time ('' for None, `invalid time (ts=...)` for a non-time)."""
    if ts is None:
        return ""
    when = local_datetime(ts, timezone)
    if when is None:
        return invalid_time(ts)
    fmt = STYLES[style]
    if fmt is None:
        return when.replace(microsecond=0).isoformat()
    return when.strftime(fmt)


class IsoTimes:
    """`format_ts(ts, timezone)` (style "iso") for many times, the same text made faster for a
    long export: the zone's offset is looked up once per UTC hour (an hour whose first and last
    second have different offsets, a clock change within it, is formatted time by time as
    `format_ts` does), a date's text once per local day; anything but a whole number of seconds
    a locker can hold goes through `format_ts`. No zone changes its offset twice within an hour."""

    def __init__(self, timezone: str):
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._hours: dict[int, tuple[int, str] | None] = {}  # UTC hour -> (offset s, its text)
        self._days: dict[int, str] = {}  # local day since 1970-01-01 -> "YYYY-MM-DDT"

    def _hour(self, hour: int) -> tuple[int, str] | None:
        try:
            first = dt.datetime.fromtimestamp(hour * 3600, self._zone)
            last = dt.datetime.fromtimestamp(hour * 3600 + 3599, self._zone)
        except (OverflowError, OSError, ValueError):
            return None
        offset = first.utcoffset()
        if offset is None or offset != last.utcoffset() or offset.microseconds:
            return None
        return offset.days * 86400 + offset.seconds, first.isoformat()[19:]

    def __call__(self, ts) -> str:
        if ts.__class__ is not int or not TS_MIN <= ts <= TS_MAX:
            return format_ts(ts, self.timezone)
        hour = ts // 3600
        try:
            found = self._hours[hour]
        except KeyError:
            found = self._hours[hour] = self._hour(hour)
        if found is None:
            return format_ts(ts, self.timezone)
        offset, tail = found
        day, second = divmod(ts + offset, 86400)
        try:
            date = self._days[day]
        except KeyError:
            date = self._days[day] = f"{_EPOCH + dt.timedelta(days=day):%Y-%m-%d}T"
        return date + _MINUTES[second // 60] + _SECONDS[second % 60] + tail


_EPOCH = dt.date(1970, 1, 1)
_MINUTES = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
_SECONDS = [f"{s:02d}" for s in range(60)]


def event_time(ts, received_at, timezone: str, style: str = "iso", mark: bool = True) -> str:
    """What an event's time column shows: the locker's `ts`; without one, the host's receipt
    time marked `(received)` (unmarked with mark=False: an export says so in a column of its
    own); `invalid time (ts=...)` for a `ts` no locker can send."""
    if ts is not None:
        return format_ts(ts, timezone, style)
    if valid_ts(received_at):
        when = format_ts(received_at, timezone, style)
        return f"{when} {RECEIVED}" if mark else when
    return CLOCK_UNKNOWN


def received_time(received_at, ts, timezone: str, style: str = "seconds") -> str:
    """What a page's event list shows (pages list events by the time the host received them):
    that time, with the locker's own time beside it when the two differ by more than
    `SKEW_SHOWN` seconds ("2026-11-05 10:02:05 (locker's clock: 2026-11-05 09:40:00)"); an
    event without a locker time, or without a valid receipt time, as `event_time` shows it."""
    if ts is None or not valid_ts(received_at) or not valid_ts(ts):
        return event_time(ts, received_at, timezone, style)
    shown = format_ts(received_at, timezone, style)
    if abs(ts - received_at) > SKEW_SHOWN:
        shown += f" (locker's clock: {format_ts(ts, timezone, style)})"
    return shown


# -- a locker's retained state ---------------------------------------------------------------


@dataclass
class LockerState:
    """What a page can show of a locker's `state`, whatever was stored."""

    unreadable: bool = False  # not an object with a list of bays at all
    bays: list[dict] = field(default_factory=list)  # each {"bay", "locked", "door", "holder"}
    skipped: int = 0  # bay entries that made no sense
    clock_ok: bool | None = None
    pending: int | None = None
    config: int | None = None


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_state(state) -> LockerState:
    """The bays of a stored `state` that make sense; `unreadable` when it is not a state."""
    if state is None:
        return LockerState()
    if not isinstance(state, dict) or not isinstance(state.get("bays", []), list):
        return LockerState(unreadable=True)
    out = LockerState()
    if isinstance(state.get("clock_ok"), bool):
        out.clock_ok = state["clock_ok"]
    if _whole(state.get("pending")) and state["pending"] >= 0:
        out.pending = state["pending"]
    if _whole(state.get("config")):
        out.config = state["config"]
    seen = set()
    for b in state.get("bays", []):
        holder = b.get("holder") if isinstance(b, dict) else None
        if (
            not isinstance(b, dict)
            or not _whole(b.get("bay"))
            or b["bay"] in seen
            or not (holder is None or isinstance(holder, str))
        ):
            out.skipped += 1
            continue
        seen.add(b["bay"])
        locked = b.get("locked")
        door = b.get("door")
        out.bays.append(
            {
                "bay": b["bay"],
                "locked": locked if isinstance(locked, bool) else True,  # as bays boot
                "door": door if door in ("open", "closed") else None,
                "holder": holder or None,
            }
        )
    return out


# -- spreadsheet cells -----------------------------------------------------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_csv(value):
    """A CSV cell a spreadsheet cannot run: text beginning with a formula character gets a
    leading apostrophe (numbers and other text are unchanged)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class CsvWriter:
    """csv.writer for exports: every cell through `inert_csv`, and a row with a carriage return
    in a cell written fully quoted (the csv module quotes only what the line terminator, `\n`
    here, holds, and a bare `\r` would end the row for every reader)."""

    def __init__(self, out):
        self._plain = csv.writer(out, lineterminator="\n")
        self._quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, cells) -> None:
        cells = [inert_csv(c) for c in cells]
        cr = any(isinstance(c, str) and "\r" in c for c in cells)
        (self._quoted if cr else self._plain).writerow(cells)


# Characters an XLSX (XML 1.0) cell cannot hold: shown as \xNN instead.
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xlsx_text(value: str) -> str:
    return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def person_label(names: dict, person_id: str | None, sees_names: bool) -> str:
    """ "Pia Pupil (P001)" for the roles that see names, else the id alone ("" for none)."""
    if not person_id:
        return ""
    known = names.get(person_id)
    if sees_names and known and known[0]:
        return f"{known[0]} ({person_id})"
    return person_id
