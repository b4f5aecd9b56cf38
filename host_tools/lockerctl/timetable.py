"""The site's timetable: TOML validation (docs/cli.md) and compilation into the bundle's
`timetable` object (docs/protocol.md) with a UTC-offset table from the time-zone database.

`parse_timetable` returns a normalised, JSON-ready dict (times "HH:MM", dates "YYYY-MM-DD",
defaults filled in, terms and closed dates sorted) that the store keeps; `compile_timetable`
turns it into what a locker runs on (minutes after midnight, YYYYMMDD ints, offsets).
"""

import datetime as dt
import functools
import re
import tomllib
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .bounds import DATE_MAX, DATE_MIN
from .errors import printable

DEFAULT_Y6_RELEASE_MINUTES = 10
DEFAULT_UNCOLLECTED_AFTER_MINUTES = 60
MAX_Y6_RELEASE_MINUTES = 120
MAX_UNCOLLECTED_AFTER_MINUTES = 24 * 60
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


class TimetableError(ValueError):
    """A timetable file that cannot be used: one line per mistake, each naming the file, the key
    (with its line) and the offending value, in line order (`problems`; the message is those
    lines joined)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or [message]
        super().__init__("\n".join(self.problems))


class _Bad(Exception):
    """One mistake found by `_Checker.fail`: (line or 0, message)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _Checker:
    """Builds one-line messages that name the file, the key (with its line when it can be found)
    and the offending value, and collects them so that every mistake is reported at once."""

    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.problems: list[tuple[int, int, str]] = []

    def line_of(self, key: str) -> int | None:
        m = re.search(rf"^[ \t]*{re.escape(key)}[ \t]*=", self.text, re.MULTILINE)
        return self.text.count("\n", 0, m.start()) + 1 if m else None

    def fail(self, key: str, message: str, value=None, *, show_value: bool = True) -> NoReturn:
        top = key.split("[", 1)[0]
        line = self.line_of(top)
        where = f"{self.source} line {line}" if line else self.source
        shown = f" = {_show(value)}" if show_value else ""
        raise _Bad(line or 0, f"{where}: {key}{shown}: {message}")

    def check(self, fn, *args, **kw):
        """fn(*args, **kw), or None with its mistake recorded."""
        try:
            return fn(*args, **kw)
        except _Bad as bad:
            self.problems.append((bad.line, len(self.problems), bad.message))
            return None

    def raise_problems(self) -> None:
        if self.problems:
            ordered = [m for _, _, m in sorted(self.problems)]
            raise TimetableError(ordered[0], ordered)


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _show(value) -> str:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + printable(value) + '"'  # a newline in a value must not break the line
    text = printable(repr(value))
    return text if len(text) <= 40 else text[:40] + "…"


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
    """ "YYYY-MM-DD" (a string or a TOML local date) in the years 2000-2100 -> date."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        day = value
    else:
        if not isinstance(value, str) or not _ISO_DATE.match(value):
            ck.fail(key, "expected a date YYYY-MM-DD", value)
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            ck.fail(key, "not a calendar date", value)
    if not DATE_MIN <= day <= DATE_MAX:
        ck.fail(key, f"dates must be in the years {DATE_MIN.year}-{DATE_MAX.year}", value)
    return day


def _int(ck: _Checker, key: str, value, lo: int, hi: int | None, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        ck.fail(key, "expected a whole number of minutes", value)
    if value < lo or (hi is not None and value > hi):
        ck.fail(key, what, value)
    return value


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _timezone(ck: _Checker, tz) -> str:
    if not isinstance(tz, str) or not tz:
        ck.fail("timezone", 'expected a time-zone name such as "Europe/London"', tz)
    try:
        ZoneInfo(tz)
        known = tz in _zone_names()
    except (ZoneInfoNotFoundError, ValueError, OSError):
        known = False
    if not known:
        ck.fail("timezone", 'unknown time zone (use an IANA name such as "Europe/London")', tz)
    return tz


def _contact(ck: _Checker, contact) -> list[tuple[int, int]]:
    if not isinstance(contact, list):
        ck.fail("contact", 'expected a list of periods [["HH:MM", "HH:MM"], ...]', contact)
    periods: list[tuple[int, int]] = []

    def period_of(i, period):
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

    for i, period in enumerate(contact):
        ck.check(period_of, i, period)
    return periods


def _terms(ck: _Checker, terms_raw) -> list[tuple[dt.date, dt.date, int]]:
    if not isinstance(terms_raw, list):
        ck.fail("terms", 'expected a list of terms [["YYYY-MM-DD", "YYYY-MM-DD"], ...]', terms_raw)
    terms = []

    def term_of(i, term):
        key = f"terms[{i}]"
        if not isinstance(term, list) or len(term) != 2:
            ck.fail(key, 'expected a term ["YYYY-MM-DD", "YYYY-MM-DD"] (first and last day)', term)
        start, end = _date(ck, key, term[0]), _date(ck, key, term[1])
        if start > end:
            ck.fail(key, "first day is after last day", term)
        terms.append((start, end, i))

    for i, term in enumerate(terms_raw):
        ck.check(term_of, i, term)
    terms.sort()
    for (_, end_a, ia), (start_b, _, ib) in zip(terms, terms[1:], strict=False):
        if start_b <= end_a:
            ck.check(ck.fail, f"terms[{ib}]", f"overlaps terms[{ia}]", terms_raw[ib])
    return terms


def _closed(ck: _Checker, closed_raw, terms) -> set[dt.date]:
    if not isinstance(closed_raw, list):
        ck.fail("closed", 'expected a list of dates ["YYYY-MM-DD", ...]', closed_raw)
    closed = set()

    def day_of(i, day):
        key = f"closed[{i}]"
        d = _date(ck, key, day)
        if terms is not None and not any(start <= d <= end for start, end, _ in terms):
            ck.fail(key, "is not inside any term (closed lists days off within terms)", day)
        closed.add(d)

    for i, day in enumerate(closed_raw):
        ck.check(day_of, i, day)
    return closed


def parse_timetable(text: str, source: str) -> dict:
    """Validate a timetable TOML file (docs/cli.md); return its normalised form or raise
    TimetableError naming `source`, and for every mistake its key, line and value.

    Bounds: times of day 00:00-23:59; contact periods in order, not overlapping; home_time not
    before the end of the last contact period; y6_release_minutes 0-120 (and not before
    midnight); uncollected_after_minutes 0-1440 (a day); dates in the years 2000-2100."""
    ck = _Checker(text, source)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TimetableError(f"{source}: not valid TOML: {' '.join(str(e).split())}") from None

    for key in raw:
        if key not in KEYS:
            ck.check(
                ck.fail, key, f"unknown key (expected: {', '.join(KEYS)})", None, show_value=False
            )
    for key in REQUIRED:
        if key not in raw:
            ck.problems.append((0, len(ck.problems), f"{source}: missing key {key!r}"))

    tz = ck.check(_timezone, ck, raw["timezone"]) if "timezone" in raw else None
    home = ck.check(_minutes, ck, "home_time", raw["home_time"]) if "home_time" in raw else None
    y6_max = MAX_Y6_RELEASE_MINUTES if home is None else min(MAX_Y6_RELEASE_MINUTES, home)
    y6 = ck.check(
        _int,
        ck,
        "y6_release_minutes",
        raw.get("y6_release_minutes", DEFAULT_Y6_RELEASE_MINUTES),
        0,
        y6_max,
        f"must be between 0 and home time ({home} minutes after midnight), and at most "
        f"{MAX_Y6_RELEASE_MINUTES}"
        if home is not None
        else f"must be between 0 and {MAX_Y6_RELEASE_MINUTES}",
    )
    uncollected = ck.check(
        _int,
        ck,
        "uncollected_after_minutes",
        raw.get("uncollected_after_minutes", DEFAULT_UNCOLLECTED_AFTER_MINUTES),
        0,
        MAX_UNCOLLECTED_AFTER_MINUTES,
        f"must be 0 or more, and at most {MAX_UNCOLLECTED_AFTER_MINUTES} (a day)",
    )
    periods = ck.check(_contact, ck, raw["contact"]) if "contact" in raw else None
    if home is not None and periods:
        last_end = max(end for _, end in periods)
        if home < last_end:
            ck.check(
                ck.fail,
                "home_time",
                f"is before the end of the last contact period ({_hhmm(last_end)}): home time "
                "comes after lessons",
                raw["home_time"],
            )
    before = len(ck.problems)
    terms = ck.check(_terms, ck, raw["terms"]) if "terms" in raw else None
    whole_terms = terms if len(ck.problems) == before else None  # no knock-on mistakes
    closed = ck.check(_closed, ck, raw.get("closed", []), whole_terms)
    ck.raise_problems()
    # no problem: every required key was there and checked
    assert home is not None and periods is not None and terms is not None

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
    offset = dt.datetime.fromtimestamp(ts, zone).utcoffset()
    assert offset is not None  # an aware datetime always has one
    return int(offset.total_seconds())


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
