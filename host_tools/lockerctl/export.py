"""Exports of the audit trail's events: CSV, JSON Lines and Excel, streamed.

Rows come from `Store.events` (a server-side cursor read in batches) and are written as they
come, so a million events export in bounded memory; the Excel writer is `xlsxstream` (each
row deflated into the archive as it is written; why not XlsxWriter: that module's doc).
Columns (CSV header, JSON keys, first sheet row):

    time,locker,bay,event,person_id,name,role,by,reason,seq,time_source,jid,flags

`time` is the locker's timestamp in the site's local time, ISO 8601 with its offset
(`2026-09-10T15:05:00+01:00`). An event the locker journaled while its clock was not trusted has
no timestamp of its own: `time` is then the moment the host received it, and `time_source` says
which it is (`locker` or `received`); `time` is never empty; a `ts` no locker can hold shows as
`invalid time (ts=...)` (`display.py` decides, for pages and exports alike). `name` and `role`
come from the roster (the role on the person's first roster row). `jid` is the locker's journal
id (empty for events stored before journal ids), `flags` says `unknown_type` for an event type no
firmware version sends (stored as it came, marked). JSON Lines adds `ts` (the locker's unix
seconds, or null) and `received_at`, and keeps numbers as numbers.

Spreadsheets cannot run what an export holds: in CSV a text cell that begins with `=`, `+`, `-`,
`@`, a tab or a carriage return gets a leading apostrophe (the OWASP advice for CSV injection);
in Excel every text is an explicit string cell (never a formula), characters XML cannot hold
shown as `\\xNN`. A sheet holds 1,048,576 rows with its header: a longer export continues on
sheets `events 2`, `events 3`..., each beginning with the header.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import re
from collections.abc import Callable, Iterable
from zoneinfo import ZoneInfo

from . import xlsxstream
from .bounds import check_date
from .display import CsvWriter, event_time, valid_ts, xlsx_text

COLUMNS = ["time", "locker", "bay", "event", "person_id", "name", "role", "by", "reason", "seq"]
# After the fixed ten: where `time` comes from (`locker`, or `received` when the locker's clock
# was not trusted), the locker's journal id (a wiped or replaced board starts a new journal, seq
# from 1 again) and the row's marks (`unknown_type`: a type no firmware version knows).
EXTRA_COLUMNS = ["time_source", "jid", "flags"]
HEADER = COLUMNS + EXTRA_COLUMNS
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
    """An event row of `Store.events`, or a host action (`store.lookup.ActionRow`), as the
    export writes it."""
    from .store.lookup import ActionRow

    received = row.received_at
    source: str | None
    if isinstance(row, ActionRow):
        source = row.time_source  # `host`
    elif row.ts is not None:
        source = "locker"
    else:
        source = "received" if valid_ts(received) else None
    return {
        "time": event_time(row.ts, received, timezone, mark=False),
        "locker": _plain(row.locker_id),
        "bay": _plain(row.bay),
        "event": _plain(row.type),
        "person_id": _plain(row.person),
        "name": _plain(row.name),
        "role": _plain(row.role),
        "by": _plain(row.by),
        "reason": _plain(row.reason),
        "seq": _plain(row.seq),
        "time_source": source,
        "jid": _plain(row.jid) or "",
        "flags": "unknown_type" if row.unknown_type else "",
    }


def _when(row) -> int:
    return row.sort_ts


def _cells(rec: dict) -> list:
    return ["" if rec[c] is None else rec[c] for c in HEADER]


def write_csv(rows, out, timezone: str, tick: Callable[[], None]) -> int:
    w = CsvWriter(out)
    w.writerow(HEADER)
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


# Rows a worksheet holds, the header's included (Excel's limit). An export of more rows continues
# on further sheets, `events 2`, `events 3`..., each with the header (a test lowers it).
SHEET_ROWS = 1_048_576
# Whole numbers a spreadsheet holds exactly (a double's 53 bits); a larger one (only a hand edit
# can store it) is written as its text, so that no digit is lost.
_EXACT_INT = 2**53
_CR = re.compile("\r\n?")


def write_xlsx(
    rows, out_binary, timezone: str, tick: Callable[[], None], checkpoint: str | None = None
) -> int:
    """The rows as an Excel workbook (`xlsxstream`, streamed): sheet `events` (then `events 2`...
    past SHEET_ROWS rows), and sheet "Checkpoint" when a checkpoint is given."""
    wb = xlsxstream.Workbook(out_binary)
    per_sheet = SHEET_ROWS - 1  # data rows on a sheet below its header
    if per_sheet < 1:
        raise ValueError("SHEET_ROWS must leave room for a row below the header")

    def cells_of(values):
        out = []
        for value in values:
            if value.__class__ is str:
                # an inline string cell: never a formula, whatever it begins with; line ends as
                # XML reads them (a carriage return is a line feed, as openpyxl wrote it). Every
                # character these change is unprintable: the usual text skips both.
                if not value.isprintable():
                    value = xlsx_text(_CR.sub("\n", value))
            elif not -_EXACT_INT < value < _EXACT_INT:
                value = str(value)
            out.append(value)
        return out

    sheets = 1
    wb.add_sheet("events")
    wb.row(HEADER)
    n = r = 0
    for row in rows:
        if r == per_sheet:
            sheets += 1
            wb.add_sheet(f"events {sheets}")
            wb.row(HEADER)
            r = 0
        r += 1
        wb.row(cells_of(_cells(_record(row, timezone))))
        n += 1
        tick()
    if checkpoint is not None:  # the signed checkpoint the export was cut from, line by line
        wb.add_sheet("Checkpoint")
        for line in checkpoint.split("\n")[:-1]:
            wb.row(cells_of([line]))
    wb.close()
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
    checkpoint: str | None = None,
    actions: Iterable | None = None,
) -> int:
    """Writes the site's events to `out` (text for csv/jsonl, binary for xlsx); returns how many.
    `progress(n)` is called now and then with the number of rows written since the last call.
    `checkpoint` (a signed note) goes in the workbook's sheet "Checkpoint"; CSV and JSON Lines
    carry nothing but rows (the caller states it beside them). `actions`: host-side actions
    as rows (store.lookup.action_rows, in time order), merged in by time."""
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
    merged = rows if actions is None else heapq.merge(rows, actions, key=_when)
    try:
        if fmt == "xlsx":
            n = write_xlsx(merged, out, timezone, tick, checkpoint)
        else:
            writer = {"csv": write_csv, "jsonl": write_jsonl}[fmt]
            n = writer(merged, out, timezone, tick)
    finally:
        rows.close()
    if progress is not None and pending[0]:
        progress(pending[0])
    return n
