"""Exports of the audit trail's events: CSV, JSON Lines and Excel, streamed.

Rows come from `Store.events` (a server-side cursor read in batches) and are written as they
come, so a million events export in bounded memory; the Excel writer is openpyxl's write-only
mode. Columns (CSV header, JSON keys, first sheet row):

    time,locker,bay,event,person_id,name,role,by,reason,seq,time_source,jid,flags

`time` is the locker's timestamp in the site's local time, ISO 8601 with its offset
(`2026-09-10T15:05:00+01:00`). An event the locker journaled while its clock was not trusted has
no timestamp of its own: `time` is then the moment the host received it, and `time_source` says
which it is (`locker` or `received`); `time` is never empty. `name` and `role` come from the
roster (the role on the person's first roster row). `jid` is the locker's journal id (empty for
events stored before journal ids), `flags` says `unknown_type` for an event type no firmware
version sends (stored as it came, marked). JSON Lines adds `ts` (the locker's unix
seconds, or null) and keeps numbers as numbers.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable
from zoneinfo import ZoneInfo

COLUMNS = ["time", "locker", "bay", "event", "person_id", "name", "role", "by", "reason", "seq"]
# After the fixed ten: where `time` comes from (`locker`, or `received` when the locker's clock
# was not trusted), the locker's journal id (a wiped or replaced board starts a new journal, seq
# from 1 again) and the row's marks (`unknown_type`: a type no firmware version knows).
EXTRA_COLUMNS = ["time_source", "jid", "flags"]
HEADER = COLUMNS + EXTRA_COLUMNS
FORMATS = ("csv", "jsonl", "xlsx")
_PROGRESS_EVERY = 1000

try:
    from .timetable import local_iso
except ImportError:  # pragma: no cover - the timetable module ships with the package

    def local_iso(ts, timezone):
        return dt.datetime.fromtimestamp(ts, ZoneInfo(timezone)).isoformat()


def local_day_start(day: dt.date, timezone: str) -> int:
    """Unix seconds of local midnight (the first instant of `day` in `timezone`)."""
    return int(dt.datetime.combine(day, dt.time(0), ZoneInfo(timezone)).timestamp())


def date_range(from_day: dt.date | None, to_day: dt.date | None, timezone: str):
    """[start, end) in unix seconds for local dates `from_day`..`to_day`, both inclusive."""
    start = local_day_start(from_day, timezone) if from_day else None
    end = local_day_start(to_day + dt.timedelta(days=1), timezone) if to_day else None
    return start, end


def _record(row, timezone: str) -> dict:
    received = getattr(row, "received_at", None)
    if row.ts is not None:
        when, source = local_iso(row.ts, timezone), "locker"
    elif received is not None:
        when, source = local_iso(received, timezone), "received"
    else:
        when, source = "", None
    return {
        "time": when,
        "locker": row.locker_id,
        "bay": row.bay,
        "event": row.type,
        "person_id": row.person,
        "name": row.name,
        "role": row.role,
        "by": row.by,
        "reason": row.reason,
        "seq": row.seq,
        "time_source": source,
        "jid": getattr(row, "jid", "") or "",
        "flags": "unknown_type" if getattr(row, "unknown_type", False) else "",
    }


def _cells(rec: dict) -> list:
    return ["" if rec[c] is None else rec[c] for c in HEADER]


def write_csv(rows, out, timezone: str, tick: Callable[[], None]) -> int:
    w = csv.writer(out, lineterminator="\n")
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
        rec["time"] = rec["time"] or None
        rec["ts"] = row.ts
        out.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
        tick()
    return n


def write_xlsx(
    rows, out_binary, timezone: str, tick: Callable[[], None], checkpoint: str | None = None
) -> int:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("events")
    ws.append(HEADER)
    n = 0
    for row in rows:
        ws.append(_cells(_record(row, timezone)))
        n += 1
        tick()
    if checkpoint is not None:  # the signed checkpoint the export was cut from, line by line
        sheet = wb.create_sheet("Checkpoint")
        for line in checkpoint.split("\n")[:-1]:
            sheet.append([line])
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
    checkpoint: str | None = None,
) -> int:
    """Writes the site's events to `out` (text for csv/jsonl, binary for xlsx); returns how many.
    `progress(n)` is called now and then with the number of rows written since the last call.
    `checkpoint` (a signed note) goes in the workbook's sheet "Checkpoint"; CSV and JSON Lines
    carry nothing but rows (the caller states it beside them)."""
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
        if fmt == "xlsx":
            n = write_xlsx(rows, out, timezone, tick, checkpoint)
        else:
            writer = {"csv": write_csv, "jsonl": write_jsonl}[fmt]
            n = writer(rows, out, timezone, tick)
    finally:
        rows.close()
    if progress is not None and pending[0]:
        progress(pending[0])
    return n
