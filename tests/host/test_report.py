"""The policy report (`lockerctl report`, lockerctl/report.py) over a simulated fortnight written
into a real store through the store's ingest path: its counts per day and year group, per week
and per locker are checked against the trail (the events as `lockerctl export` reads them), and
what the generator put in; the HTML carries the charts and prints on A4; the CSV has the same
figures; bad ranges are one-line errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter

import pytest
from click.testing import CliRunner
from fortnight import FIRST, GROUP, LAST, SITE, ZONE, make_fortnight


@pytest.fixture
def fortnight(tmp_path):
    return make_fortnight(tmp_path)


def trail_counts(db) -> Counter:
    """The figures, counted from the trail itself (every stored event)."""
    from lockerctl.store import Store

    st = Store.open(db)
    out: Counter = Counter()
    try:
        for r in st.events(SITE):
            when = dt.datetime.fromtimestamp(r.sort_ts, ZONE)
            day, group = when.date(), GROUP[r.person]
            late = when.replace(hour=16, minute=15, second=0)  # 15:15 + 60 minutes
            if r.type == "deposit":
                out[(day, group, "deposits")] += 1
            elif r.type == "policy_flag":
                out[(day, group, "policy_flags")] += 1
            elif r.type == "override":
                out[(day, group, "overrides")] += 1
            elif r.type in ("door_forced", "door_left_open", "emergency_open"):
                out[(day, group, "incidents")] += 1
            elif r.type == "retrieve" and r.reason in ("grant", "exemption"):
                out[(day, group, r.reason + "s")] += 1
            elif r.type == "retrieve" and when >= late:
                out[(day, group, "late_collections")] += 1
    finally:
        st.close()
    return out


def run(*args):
    from lockerctl.cli import _load_commands, cli

    _load_commands()
    return CliRunner().invoke(cli, ["report", *args], catch_exceptions=False)


def test_the_fortnights_report_matches_the_trail(fortnight, tmp_path):
    from lockerctl.report import MEASURES

    db, made = fortnight
    expected = trail_counts(db)
    assert +expected == +made  # the trail holds what the fortnight did
    out = tmp_path / "report.csv"
    r = run("--from", str(FIRST), "--to", str(LAST), "--format", "csv", "-o", str(out), "--db", db)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    got: Counter = Counter()
    for row in (x for x in rows if x["section"] == "day"):
        for m in MEASURES:
            got[(dt.date.fromisoformat(row["day"]), row["group"], m)] += int(row[m])
    assert +got == +expected
    # per day totals, per week, per locker and bay
    totals = {x["day"]: x for x in rows if x["section"] == "day_total"}
    for day in {d for d, _, _ in expected}:
        for m in MEASURES:
            want = sum(n for (d, _, mm), n in expected.items() if d == day and mm == m)
            assert int(totals[day.isoformat()][m]) == want, (day, m)
    weeks = {x["day"]: int(x["incidents"]) for x in rows if x["section"] == "week"}
    assert set(weeks) == {"2026-11-02", "2026-11-09"}
    for monday in weeks:
        start = dt.date.fromisoformat(monday)
        want = sum(
            n
            for (d, _, m), n in expected.items()
            if m == "incidents" and start <= d < start + dt.timedelta(days=7)
        )
        assert weeks[monday] == want
    deposits_per_bay: Counter = Counter()
    from lockerctl.store import Store

    st = Store.open(db)
    alerts_per_locker: Counter = Counter()
    for e in st.events(SITE):
        if e.type == "deposit":
            deposits_per_bay[(e.locker_id, str(e.bay))] += 1
        if e.type in ("door_forced", "emergency_open"):
            alerts_per_locker[e.locker_id] += 1
    st.close()
    bays = {(x["locker"], x["bay"]): int(x["deposits"]) for x in rows if x["section"] == "bay"}
    assert bays == dict(deposits_per_bay)
    lockers = {x["locker"]: int(x["alerts"]) for x in rows if x["section"] == "locker"}
    assert lockers == {"L1": alerts_per_locker["L1"], "L2": alerts_per_locker["L2"]}
    # 9 school days (2 Nov closed), the Saturday club days listed too, not the Sundays
    assert dt.date(2026, 11, 2).isoformat() not in totals
    assert "2026-11-07" in totals and "2026-11-08" not in totals


def test_the_html_report_has_its_charts_and_prints_on_a4(fortnight, tmp_path):
    db, made = fortnight
    out = tmp_path / "report.html"
    r = run("--from", str(FIRST), "--to", str(LAST), "-o", str(out), "--db", db)
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert "<script" not in html
    assert "@page { size: A4" in html and "@media print" in html
    deposits_chart = html.split('<figure class="deposits">')[1].split("</figure>")[0]
    assert deposits_chart.count('<rect class="bar"') == 11  # 9 school days, 2 Saturdays
    incidents_chart = html.split('<figure class="incidents">')[1].split("</figure>")[0]
    assert incidents_chart.count('<rect class="bar"') == 2  # two weeks
    total_deposits = sum(n for (_, _, m), n in made.items() if m == "deposits")
    assert f'<th scope="row" class="g">Phones deposited</th><td>{total_deposits}</td>' in html
    assert "phone_not_allowed" not in html and "policy_flag" not in html
    assert "Sat 07 Nov (not a school day)" in html


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "2026-11-10", "--to", "2026-11-01"], "is after --to"),
        (["--from", "2026-11-01", "--to", "2200-01-01"], "2000-2100"),
        (["--from", "2026-01-01", "--to", "2027-12-31"], "at most 400 days"),
        (["--from", "2026-02-30", "--to", "2026-03-01"], "Invalid value for '--from'"),
    ],
)
def test_bad_ranges_are_one_line_errors(tmp_path, args, message):
    r = run(*args, "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert "Traceback" not in r.output
