"""Exports of the audit trail's events: CSV, JSON Lines and Excel, streamed.

Rows come from `Store.events` (a server-side cursor read in batches) and are written as they
come, so a million events export in bounded memory; the Excel writer is openpyxl's write-only
mode. Columns (CSV header, JSON keys, first sheet row):

    time,locker,bay,event,person_id,name,role,by,reason,seq

`time` is the locker's timestamp in the site's local time, ISO 8601 with its offset
(`2026-09-10T15:05:00+01:00`); when the locker's clock was not trusted, the host's receipt time
followed by ` (received)`; for a `ts` no locker can hold, `invalid time (ts=...)` (`display.py`
decides, for pages and exports alike). `name` and `role` come from the roster (the role on the
person's first roster row). JSON Lines adds `ts` (unix seconds, or null) and `received_at` and
keeps numbers as numbers.

Spreadsheets cannot run what an export holds: in CSV a text cell that begins with `=`, `+`, `-`,
`@`, a tab or a carriage return gets a leading apostrophe (the OWASP advice for CSV injection);
in Excel every text is an explicit string cell (never a formula), characters XML cannot hold
shown as `\\xNN`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from zoneinfo import ZoneInfo

from .bounds import check_date
from .display import CsvWriter, event_time, xlsx_text

COLUMNS = ["time", "locker", "bay", "event", "person_id", "name", "role", "by", "reason", "seq"]
FORMATS = ("csv", "jsonl", "xlsx")
_PROGRESS_EVERY = 1000
# Characters that some line readers take for a line end (NEL, U+2028...): escaped in JSON Lines,
# so that a record is always one line whatever reads it.
_LINE_BREAKERS = re.compile("[\x7f-\x9f\u2028\u2029]")


def local_day_start(day: dt.date, timezone: str) -> int:
    """Unix seconds of local midnight (the first instant of `day` in `timezone`)."""
    return int(dt.datetime.combine(day, dt.time(0), ZoneInfo(timezone)).timestamp())


def date_range(from_day: dt.date | None, to_day: dt.date | None, timezone: str):
    """[start, end) in unix seconds for local dates `from_day`..`to_day`, both inclusive;
    BoundError for a date outside the years 2000-2100."""
    if from_day is not None:
        check_date(from_day, "from")
    if to_day is not None:
        check_date(to_day, "to")
    start = local_day_start(from_day, timezone) if from_day else None
    end = local_day_start(to_day + dt.timedelta(days=1), timezone) if to_day else None
    return start, end


def _plain(value):
    """A stored value as an export writes it: text, a whole number or None (a value of any
    other type, which only a hand edit can leave in a column, as its text)."""
    if value is None or isinstance(value, str) or type(value) is int:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _record(row, timezone: str) -> dict:
    return {
        "time": event_time(row.ts, row.received_at, timezone),
        "locker": _plain(row.locker_id),
        "bay": _plain(row.bay),
        "event": _plain(row.type),
        "person_id": _plain(row.person),
        "name": _plain(row.name),
        "role": _plain(row.role),
        "by": _plain(row.by),
        "reason": _plain(row.reason),
        "seq": _plain(row.seq),
    }


def _cells(rec: dict) -> list:
    return ["" if rec[c] is None else rec[c] for c in COLUMNS]


def write_csv(rows, out, timezone: str, tick: Callable[[], None]) -> int:
    w = CsvWriter(out)
    w.writerow(COLUMNS)
    n = 0
    for row in rows:
        w.writerow(_cells(_record(row, timezone)))
        n += 1
        tick()
    return n


def write_jsonl(rows, out, timezone: str, tick: Callable[[], None]) -> int:
    n = 0
    for row in rows:
        rec = _record(row, timezone)
        rec["ts"] = _plain(row.ts)
        rec["received_at"] = _plain(row.received_at)
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
        out.write(_LINE_BREAKERS.sub(lambda m: f"\\u{ord(m.group()):04x}", line) + "\n")
        n += 1
        tick()
    return n


def write_xlsx(rows, out_binary, timezone: str, tick: Callable[[], None]) -> int:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("events")

    def cell(value):
        if not isinstance(value, str):
            return value
        c = WriteOnlyCell(ws, value=xlsx_text(value))
        c.data_type = "s"  # an explicit string: never a formula, whatever it begins with
        return c

    ws.append(COLUMNS)
    n = 0
    for row in rows:
        ws.append([cell(c) for c in _cells(_record(row, timezone))])
        n += 1
        tick()
    wb.save(out_binary)
    return n


def export_events(
    store,
    site: str,
    fmt: str,
    out,
    *,
    start: int | None = None,
    end: int | None = None,
    locker: str | None = None,
    person: str | None = None,
    timezone: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Writes the site's events to `out` (text for csv/jsonl, binary for xlsx); returns how many.
    `progress(n)` is called now and then with the number of rows written since the last call."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
    timezone = timezone or store.timezone(site)
    pending = [0]

    def tick():
        pending[0] += 1
        if progress is not None and pending[0] >= _PROGRESS_EVERY:
            progress(pending[0])
            pending[0] = 0

    rows = store.events(site, start=start, end=end, locker=locker, person=person)
    try:
        writer = {"csv": write_csv, "jsonl": write_jsonl, "xlsx": write_xlsx}[fmt]
        n = writer(rows, out, timezone, tick)
    finally:
        rows.close()
    if progress is not None and pending[0]:
        progress(pending[0])
    return n
