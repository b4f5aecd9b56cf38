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

import csv
import datetime as dt
import heapq
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from zoneinfo import ZoneInfo

from . import xlsxstream
from .bounds import check_date
from .display import (
    FORMULA_START,
    TS_MAX,
    TS_MIN,
    CsvWriter,
    IsoTimes,
    event_time,
    valid_ts,
    xlsx_text,
)

COLUMNS = ["time", "locker", "bay", "event", "person_id", "name", "role", "by", "reason", "seq"]
# After the fixed ten: where `time` comes from (`locker`, or `received` when the locker's clock
# was not trusted), the locker's journal id (a wiped or replaced board starts a new journal, seq
# from 1 again) and the row's marks (`unknown_type`: a type no firmware version knows).
EXTRA_COLUMNS = ["time_source", "jid", "flags"]
HEADER = COLUMNS + EXTRA_COLUMNS
FORMATS = ("csv", "jsonl", "xlsx")
_PROGRESS_EVERY = 1000
_BATCH = 1000  # rows read from the store at a time
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


# The stored values a row's cells are made of, in the order of HEADER's plain columns.
_PLAIN_FIELDS = ("locker_id", "bay", "type", "person", "name", "role", "by", "reason", "seq")
_REST_FIELDS = ("jid", "ts", "received_at")
_PLAIN_TYPES = frozenset({str, int, type(None)})
# A row's cells a writer may take as they are once seen (not `time`, not `seq`: nearly every
# row has its own, and the fast path makes `time` itself).
_REPEATED = itemgetter(1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12)
_SEEN_MAX = 4096  # cells remembered as needing no care, then forgotten (bounded memory)


def _export_cells(rows, timezone: str) -> Iterator[tuple[bool, list]]:
    """`(fast, cells)` for each row: `_cells(_record(row))` exactly, made faster for the usual
    event row (text, whole numbers and nulls; a locker or receipt time a locker can hold): the
    time from `IsoTimes`, no dict. `fast` says the row took that path, so its `time` is an ISO
    time or `clock unknown` (no writer's care needed); any other row (a host action, a value of
    another type) goes through `_record`."""
    iso = IsoTimes(timezone)
    row_class = None
    plain = rest = itemgetter(0)  # set from the first row of the store's
    for row in rows:
        if row.__class__ is not row_class:
            fields = getattr(row, "_fields", ())  # the store's rows (named tuples)
            if row_class is not None or not set(_PLAIN_FIELDS).union(_REST_FIELDS) <= set(fields):
                yield False, _cells(_record(row, timezone))
                continue
            row_class = row.__class__
            plain = itemgetter(*(fields.index(f) for f in _PLAIN_FIELDS))
            rest = itemgetter(*(fields.index(f) for f in _REST_FIELDS))
        values = plain(row)
        jid, ts, received = rest(row)
        if ts is not None:
            fast = ts.__class__ is int and TS_MIN <= ts <= TS_MAX
            source = "locker"
        else:
            fast = received.__class__ is int and TS_MIN <= received <= TS_MAX
            source = "received"
        if (
            not fast
            or not _PLAIN_TYPES.issuperset(map(type, values))
            or jid.__class__
            not in (
                str,
                int,
            )
        ):
            yield False, _cells(_record(row, timezone))
            continue
        locker, bay, kind, person, name, role, by, reason, seq = values
        yield (
            True,
            [
                iso(received if ts is None else ts),
                "" if locker is None else locker,
                "" if bay is None else bay,
                "" if kind is None else kind,
                "" if person is None else person,
                "" if name is None else name,
                "" if role is None else role,
                "" if by is None else by,
                "" if reason is None else reason,
                "" if seq is None else seq,
                source,
                jid or "",
                "unknown_type" if row.unknown_type else "",
            ],
        )


def _csv_plain(cell) -> bool:
    """True when CsvWriter writes `cell` as csv.writer does (no apostrophe, no quoting all)."""
    return cell.__class__ is not str or not (cell.startswith(FORMULA_START) or "\r" in cell)


def write_csv(rows, out, timezone: str, tick: Callable[[], None]) -> int:
    w = CsvWriter(out)
    w.writerow(HEADER)
    direct = csv.writer(out, lineterminator="\n")
    seen: set = set()
    n = 0
    for fast, cells in _export_cells(rows, timezone):
        repeated = _REPEATED(cells)
        seq = cells[9]
        if fast and seen.issuperset(repeated) and (seq.__class__ is int or _csv_plain(seq)):
            direct.writerow(cells)
        else:
            w.writerow(cells)
            if fast:
                if len(seen) > _SEEN_MAX:
                    seen.clear()
                seen.update(c for c in repeated if _csv_plain(c))
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

    def as_is(value) -> bool:  # cells_of leaves it unchanged
        if value.__class__ is str:
            return value.isprintable()
        return value.__class__ is int and -_EXACT_INT < value < _EXACT_INT

    seen: set = set()
    sheets = 1
    wb.add_sheet("events")
    wb.row(HEADER)
    n = r = 0
    for fast, cells in _export_cells(rows, timezone):
        if r == per_sheet:
            sheets += 1
            wb.add_sheet(f"events {sheets}")
            wb.row(HEADER)
            r = 0
        r += 1
        repeated = _REPEATED(cells)
        if fast and seen.issuperset(repeated) and as_is(cells[9]):
            wb.row(cells)
        else:
            wb.row(cells_of(cells))
            if fast:
                if len(seen) > _SEEN_MAX:
                    seen.clear()
                seen.update(c for c in repeated if as_is(c))
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

    batches = store.events(
        site, start=start, end=end, locker=locker, person=person, batch=_BATCH, batches=True
    )
    rows = itertools.chain.from_iterable(batches)
    merged = rows if actions is None else heapq.merge(rows, actions, key=_when)
    try:
        if fmt == "xlsx":
            n = write_xlsx(merged, out, timezone, tick, checkpoint)
        else:
            writer = {"csv": write_csv, "jsonl": write_jsonl}[fmt]
            n = writer(merged, out, timezone, tick)
    finally:
        batches.close()
    if progress is not None and pending[0]:
        progress(pending[0])
    return n
