"""The site's timetable: TOML validation (CONTRACT §5) and compilation into the bundle's
`timetable` object (docs/protocol.md) with a UTC-offset table from the time-zone database.

`parse_timetable` returns a normalised, JSON-ready dict (times "HH:MM", dates "YYYY-MM-DD",
defaults filled in, terms and closed dates sorted) that the store keeps; `compile_timetable`
turns it into what a locker runs on (minutes after midnight, YYYYMMDD ints, offsets).
"""

import datetime as dt
import functools
import re
import tomllib
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .clibase import UserError

DEFAULT_Y6_RELEASE_MINUTES = 10
DEFAULT_UNCOLLECTED_AFTER_MINUTES = 60
KEYS = (
    "timezone",
    "home_time",
    "y6_release_minutes",
    "uncollected_after_minutes",
    "contact",
    "terms",
    "closed",
)
REQUIRED = ("timezone", "home_time", "contact", "terms")
YEAR_S = 365 * 86400
_HHMM = re.compile(r"^([0-9]{1,2}):([0-9]{2})$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class TimetableError(UserError):
    """A timetable file that cannot be used: one line naming the file, the key and the value."""


class _Checker:
    """Builds one-line messages that name the file, the key (with its line when it can be found)
    and the offending value."""

    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source

    def line_of(self, key: str) -> int | None:
        m = re.search(rf"^[ \t]*{re.escape(key)}[ \t]*=", self.text, re.MULTILINE)
        return self.text.count("\n", 0, m.start()) + 1 if m else None

    def fail(self, key: str, message: str, value=None, *, show_value: bool = True):
        top = key.split("[", 1)[0]
        line = self.line_of(top)
        where = f"{self.source} line {line}" if line else self.source
        shown = f" = {_show(value)}" if show_value else ""
        raise TimetableError(f"{where}: {key}{shown}: {message}")


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _show(value) -> str:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


def _minutes(ck: _Checker, key: str, value) -> int:
    """ "HH:MM" (a string or a TOML local time without seconds) -> minutes after midnight."""
    if isinstance(value, dt.time):
        if value.second or value.microsecond or value.tzinfo:
            ck.fail(key, "expected a time of day HH:MM", value)
        return value.hour * 60 + value.minute
    m = _HHMM.match(value) if isinstance(value, str) else None
    if not m:
        ck.fail(key, "expected a time of day HH:MM", value)
    h, mi = int(m.group(1)), int(m.group(2))
    if h > 23 or mi > 59:
        ck.fail(key, "not a time of day (00:00 to 23:59)", value)
    return h * 60 + mi


def _date(ck: _Checker, key: str, value) -> dt.date:
    """ "YYYY-MM-DD" (a string or a TOML local date) -> date."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        ck.fail(key, "expected a date YYYY-MM-DD", value)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        ck.fail(key, "not a calendar date", value)


def _int(ck: _Checker, key: str, value, lo: int, hi: int | None, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        ck.fail(key, "expected a whole number of minutes", value)
    if value < lo or (hi is not None and value > hi):
        ck.fail(key, what, value)
    return value


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_timetable(text: str, source: str) -> dict:
    """Validate a timetable TOML file (CONTRACT §5); return its normalised form or raise
    TimetableError naming `source`, the key and the value."""
    ck = _Checker(text, source)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TimetableError(f"{source}: not valid TOML: {' '.join(str(e).split())}") from None

    for key in raw:
        if key not in KEYS:
            ck.fail(key, f"unknown key (expected: {', '.join(KEYS)})", show_value=False)
    for key in REQUIRED:
        if key not in raw:
            raise TimetableError(f"{source}: missing key {key!r}")

    tz = raw["timezone"]
    if not isinstance(tz, str) or not tz:
        ck.fail("timezone", 'expected a time-zone name such as "Europe/London"', tz)
    try:
        ZoneInfo(tz)
        known = tz in _zone_names()
    except (ZoneInfoNotFoundError, ValueError, OSError):
        known = False
    if not known:
        ck.fail("timezone", 'unknown time zone (use an IANA name such as "Europe/London")', tz)

    home = _minutes(ck, "home_time", raw["home_time"])
    y6 = _int(
        ck,
        "y6_release_minutes",
        raw.get("y6_release_minutes", DEFAULT_Y6_RELEASE_MINUTES),
        0,
        home,
        f"must be between 0 and home time ({home} minutes after midnight)",
    )
    uncollected = _int(
        ck,
        "uncollected_after_minutes",
        raw.get("uncollected_after_minutes", DEFAULT_UNCOLLECTED_AFTER_MINUTES),
        0,
        None,
        "must be 0 or more",
    )

    contact = raw["contact"]
    if not isinstance(contact, list):
        ck.fail("contact", 'expected a list of periods [["HH:MM", "HH:MM"], ...]', contact)
    periods = []
    for i, period in enumerate(contact):
        key = f"contact[{i}]"
        if not isinstance(period, list) or len(period) != 2:
            ck.fail(key, 'expected a period ["HH:MM", "HH:MM"]', period)
        start = _minutes(ck, key, period[0])
        end = _minutes(ck, key, period[1])
        if start >= end:
            ck.fail(key, "start is not before end", period)
        if periods and start < periods[-1][1]:
            ck.fail(
                key,
                f"overlaps or comes before contact[{i - 1}] (periods must be in order)",
                period,
            )
        periods.append((start, end))

    terms_raw = raw["terms"]
    if not isinstance(terms_raw, list):
        ck.fail("terms", 'expected a list of terms [["YYYY-MM-DD", "YYYY-MM-DD"], ...]', terms_raw)
    terms = []
    for i, term in enumerate(terms_raw):
        key = f"terms[{i}]"
        if not isinstance(term, list) or len(term) != 2:
            ck.fail(key, 'expected a term ["YYYY-MM-DD", "YYYY-MM-DD"] (first and last day)', term)
        start, end = _date(ck, key, term[0]), _date(ck, key, term[1])
        if start > end:
            ck.fail(key, "first day is after last day", term)
        terms.append((start, end, i))
    terms.sort()
    for (_, end_a, ia), (start_b, _, ib) in zip(terms, terms[1:], strict=False):
        if start_b <= end_a:
            ck.fail(f"terms[{ib}]", f"overlaps terms[{ia}]", terms_raw[ib])

    closed_raw = raw.get("closed", [])
    if not isinstance(closed_raw, list):
        ck.fail("closed", 'expected a list of dates ["YYYY-MM-DD", ...]', closed_raw)
    closed = set()
    for i, day in enumerate(closed_raw):
        key = f"closed[{i}]"
        d = _date(ck, key, day)
        if not any(start <= d <= end for start, end, _ in terms):
            ck.fail(key, "is not inside any term (closed lists days off within terms)", day)
        closed.add(d)

    return {
        "timezone": tz,
        "home_time": _hhmm(home),
        "y6_release_minutes": y6,
        "uncollected_after_minutes": uncollected,
        "contact": [[_hhmm(s), _hhmm(e)] for s, e in periods],
        "terms": [[s.isoformat(), e.isoformat()] for s, e, _ in terms],
        "closed": sorted(d.isoformat() for d in closed),
    }


def _offset_at(zone: ZoneInfo, ts: int) -> int:
    return int(dt.datetime.fromtimestamp(ts, zone).utcoffset().total_seconds())


def utc_offsets(timezone: str, start: int, end: int, step: int = 6 * 3600) -> list[list[int]]:
    """[[utc_seconds, offset_seconds], ...]: the offset in force at `start`, then every change of
    offset up to `end`, each found to the second by bisection between `step`-spaced samples."""
    zone = ZoneInfo(timezone)
    current = _offset_at(zone, start)
    table = [[start, current]]
    t = start
    while t < end:
        nxt = min(t + step, end)
        off = _offset_at(zone, nxt)
        if off != current:
            lo, hi = t, nxt  # offset(lo) == current, offset(hi) != current
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_at(zone, mid) == current:
                    lo = mid
                else:
                    hi = mid
            current = _offset_at(zone, hi)
            table.append([hi, current])
            t = hi
            continue
        t = nxt
    return table


def _yyyymmdd(iso: str) -> int:
    return int(iso.replace("-", ""))


def _mins(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def compile_timetable(tt: dict, start_utc: int, years: int = 10) -> dict:
    """The bundle header's `timetable` object for a parsed timetable; its offset table runs from a
    year before `start_utc` to `years` years after it."""
    start = int(start_utc) - YEAR_S
    end = int(start_utc) + years * YEAR_S + 2 * 86400  # a little over: leap days
    return {
        "timezone": tt["timezone"],
        "offsets": utc_offsets(tt["timezone"], start, end),
        "home_time": _mins(tt["home_time"]),
        "y6_release_minutes": tt.get("y6_release_minutes", DEFAULT_Y6_RELEASE_MINUTES),
        "uncollected_after_minutes": tt.get(
            "uncollected_after_minutes", DEFAULT_UNCOLLECTED_AFTER_MINUTES
        ),
        "contact": [[_mins(s), _mins(e)] for s, e in tt.get("contact", [])],
        "terms": [[_yyyymmdd(s), _yyyymmdd(e)] for s, e in tt.get("terms", [])],
        "closed": [_yyyymmdd(d) for d in tt.get("closed", [])],
    }


def local_iso(ts: int | float, timezone: str) -> str:
    """ISO 8601 local time with its offset, e.g. "2026-09-10T15:05:00+01:00"."""
    return dt.datetime.fromtimestamp(ts, ZoneInfo(timezone)).isoformat()
