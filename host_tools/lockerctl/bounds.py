"""Every bound on what people type, in one place (docs/cli.md lists them): dates, date-times in
the site's local time, free text (names, reasons) and yes/no answers. Each check raises
`BoundError` with a one-line message that names what was wrong; the commands and the dashboard
turn it into their own one-line error or 4xx page.

- Dates: years 2000 to 2100 (an export's --from/--to, a grant's --from/--until, the trail's
  filters, a timetable's terms and closed days).
- A local date-time that does not exist (the hour skipped when the clocks go forward) is
  refused by name; one that happens twice (the clocks go back) is the first of the two.
- Text: no control characters (C0, DEL, C1: NUL, ESC, tab, newline...), no line or paragraph
  separators, and valid UTF-8.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

DATE_MIN = dt.date(2000, 1, 1)
DATE_MAX = dt.date(2100, 12, 31)
YEARS = f"{DATE_MIN.year}-{DATE_MAX.year}"
# C0 controls, DEL, C1 controls, lone surrogates (bytes that were not UTF-8), U+2028/U+2029.
_BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
MAX_BAYS = 64  # bays of one locker bank
_HHMM = r"(?:[01]\d|2[0-3]):[0-5]\d"
_WINDOW_RE = re.compile(rf"({_HHMM})-({_HHMM})\Z")
YES = ("yes", "y", "true", "1")
NO = ("no", "n", "false", "0")


class BoundError(ValueError):
    """A value outside its bounds: the message is one line for the user."""


def check_date(day: dt.date, what: str) -> dt.date:
    if not DATE_MIN <= day <= DATE_MAX:
        raise BoundError(f"{what} {day.isoformat()}: dates must be in the years {YEARS}")
    return day


def parse_date(text: str, what: str) -> dt.date:
    """A YYYY-MM-DD date within the years 2000-2100."""
    try:
        day = dt.date.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise BoundError(f"{what} {text!r}: expected a date YYYY-MM-DD") from None
    return check_date(day, what)


def parse_day(text: str | None, what: str) -> dt.date | None:
    """A date written exactly YYYY-MM-DD in the years 2000-2100, or None for None."""
    if text is None:
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        raise BoundError(f"{what} {text!r}: a date YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError as e:
        raise BoundError(f"{what} {text!r}: {e}") from None
    return check_date(day, what)


def parse_windows(values: tuple[str, ...]) -> list[str]:
    """An exemption's windows (`--window HH:MM-HH:MM` values): each start before its end, at
    most `bundle.MAX_WINDOWS`, none overlapping; returned sorted."""
    from .bundle import MAX_WINDOWS

    if not values:
        raise BoundError("give at least one --window HH:MM-HH:MM")
    if len(values) > MAX_WINDOWS:
        raise BoundError(f"at most {MAX_WINDOWS} --window per exemption, not {len(values)}")
    spans = []
    for v in values:
        m = _WINDOW_RE.match(v.strip())
        if m is None:
            raise BoundError(f"--window {v!r}: HH:MM-HH:MM (00:00-23:59)")
        if m.group(1) >= m.group(2):
            raise BoundError(f"--window {v!r}: its start is not before its end")
        spans.append((m.group(1), m.group(2)))
    spans.sort()
    for a, b in zip(spans, spans[1:], strict=False):
        if b[0] < a[1]:
            raise BoundError(f"--window {a[0]}-{a[1]} and {b[0]}-{b[1]} overlap")
    return [f"{a}-{b}" for a, b in spans]


def _hhmm(t: dt.datetime) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def local_timestamp(when: dt.datetime, timezone: str, what: str) -> int:
    """Unix seconds of `when`; without an offset it is the local time in `timezone`, which
    must exist (BoundError for a time skipped when the clocks go forward)."""
    check_date(when.date(), what)
    if when.tzinfo is None:
        zone = ZoneInfo(timezone)
        aware = when.replace(tzinfo=zone, fold=0)
        back = aware.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
        if back != when.replace(fold=0):
            raise BoundError(
                f"{what}: {_hhmm(when)} does not exist on {when.date().isoformat()} "
                f"(clocks go forward)"
            )
        when = aware
    try:
        return int(when.timestamp())
    except (OverflowError, OSError, ValueError):
        raise BoundError(f"{what}: not a time this host can hold") from None


def parse_local_datetime(text: str, timezone: str, what: str) -> int:
    """Unix seconds of an ISO 8601 date-time (years 2000-2100); without an offset it is the
    site's local time (see `local_timestamp`)."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise BoundError(
            f"{what} {text!r}: expected ISO 8601 like 2026-09-10T15:00 or 2026-09-10T15:00+01:00"
        ) from None
    return local_timestamp(when, timezone, what)


def bad_char(text: str) -> str | None:
    """The first character text may not hold, described (`U+001B`), or None."""
    m = _BAD_CHAR.search(text)
    if m is None:
        return None
    c = m.group()
    if "\ud800" <= c <= "\udfff":
        return "bytes that are not UTF-8"
    return f"a control character (U+{ord(c):04X})"


def check_text(text: str, what: str, limit: int | None = None) -> str:
    """`text` if it holds no control character (and is at most `limit` characters)."""
    bad = bad_char(text)
    if bad is not None:
        raise BoundError(f"{what} contains {bad}")
    if limit is not None and len(text) > limit:
        raise BoundError(f"{what} is longer than {limit} characters")
    return text


def parse_yes_no(text: str) -> bool | None:
    """yes/no, y/n, true/false, 1/0 in any case; '' is None; BoundError otherwise."""
    word = text.strip().lower()
    if word in YES:
        return True
    if word in NO:
        return False
    if word == "":
        return None
    raise BoundError(f"{text!r} must be yes or no (or y/n, true/false, 1/0)")
