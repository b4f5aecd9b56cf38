"""The command line's options driven with arbitrary input (issue 14): every run either succeeds
or fails with a one-line reason per mistake on stderr (each `lockerctl: ...`, or a roster file's
`FILE:LINE: ...` lines before it), a non-zero exit and no traceback; nothing is half applied.
(The dashboard's forms have their own property test.)"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
import traceback

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from harness import budget, free_port
from hypothesis import example, given
from hypothesis import strategies as st
from lockerctl.cli import _load_commands
from lockerctl.clibase import cli

_load_commands()

ROSTER = (
    "person_id,name,role,year,walk_home,card_uid\n"
    "P1,Ann Smith,pupil,6,yes,04A1B2C3\n"
    "H1,Hana Head,staff,,no,11223344\n"
    "H1,Hana Head,slt,,no,55667788\n"
)
TIMETABLE = """\
timezone = "Europe/London"
home_time = "15:15"
contact = [["08:45", "12:00"], ["13:00", "15:15"]]
terms = [["2026-09-03", "2026-12-18"]]
"""
# Any text an argument can hold: control characters, lone surrogates (bytes that were not
# UTF-8 on the command line), line separators, and the shapes the options expect.
anything = st.one_of(
    st.text(st.characters(blacklist_characters="\x00"), max_size=40),
    st.text(string.digits + "-:T+Z. ", max_size=25),
    st.sampled_from(["\x1b[2J", "a\nb", "\udcff", "\u2028", "=1+1", "'", "", " "]),
)
dates = st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(dt.date.isoformat)
datetimes = st.one_of(
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)).map(
        lambda d: d.isoformat(timespec="minutes")
    ),
    st.sampled_from(
        [
            "2027-03-28T01:30",  # does not exist in Europe/London (clocks go forward)
            "2027-10-31T01:30",  # happens twice (clocks go back)
            "9999-12-31T23:59",
            "2100-12-31T23:59+14:00",
            "2040-01-01T00:00",
        ]
    ),
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("cliprops")
    db = f"sqlite:///{d / 'lockers.db'}"
    (d / "roster.csv").write_text(ROSTER)
    (d / "tt.toml").write_text(TIMETABLE)
    for args in (
        ["roster", "import", str(d / "roster.csv")],
        ["timetable", "set", str(d / "tt.toml")],
        ["locker", "add", "L1", "--bays", "4"],
    ):
        r = CliRunner().invoke(cli, [*args, "--db", db])
        assert r.exit_code == 0, r.output
    return d, db


def invoke(site, *args, input=None, lines_of_detail=False):
    """Runs `lockerctl ARGS --db ...`; asserts success or one-line failure; the result."""
    d, db = site
    r = CliRunner().invoke(cli, [*args, "--db", db], input=input)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        pytest.fail("traceback:\n" + "".join(traceback.format_exception(r.exception)) + repr(args))
    if r.exit_code == 0:
        return r
    lines = r.stderr.split("\n")
    assert lines[-1] == "" and len(lines) >= 2, (args, r.stderr)
    lines = lines[:-1]
    if not lines_of_detail:
        assert len(lines) == 1, (args, r.stderr)
    assert lines[-1].startswith("lockerctl: "), (args, r.stderr)
    assert "Traceback" not in r.stderr
    for line in lines:  # nothing that moves a terminal's cursor or splits a line
        assert not any(c < " " or "\x7f" <= c <= "\x9f" for c in line), repr(line)
    return r


def trail_size(site) -> int:
    from lockerctl.store import Store
    from lockerctl.store.tables import trail_entries

    with Store.open(site[1]) as st_:
        with st_.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(trail_entries)).scalar()


@budget(40)
@given(lines=st.lists(st.lists(anything, max_size=7).map(",".join), max_size=5))
@example(lines=["P2,Bob,pupil,3,no,AABBCCDD", "P2,Bob,pupil,4,no,AABBCCDE"])
@example(lines=["P2,Bob,pupil,3,YES,AABBCCDD", "P2,Bob,pupil,3,n,AABBCCDE"])
@example(lines=["P2,Bob\x00,pupil,3,no,AABBCCDD", "P3,\x1b[31mEve,staff,,no,AABBCCDE"])
def test_roster_import_with_any_lines(site, lines):
    d, _ = site
    f = d / "any.csv"
    f.write_bytes(
        ("person_id,name,role,year,walk_home,card_uid\n" + "\n".join(lines)).encode(
            "utf-8", "surrogatepass"
        )
    )
    before = trail_size(site)
    r = invoke(site, "roster", "import", str(f), lines_of_detail=True)
    assert (trail_size(site) > before) == (r.exit_code == 0)  # all or nothing
    if r.exit_code == 0:  # put the known roster back for the other tests
        invoke(site, "roster", "import", str(d / "roster.csv"))


toml_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["99999999999999999999", "121", "1441", "900", "-1", "0", "120", "1440"]),
    st.sampled_from(['"15:00"', '"16:00"', '"23:59"', '"00:00"', "15:15:00", '"25:00"']),
    dates.map(json.dumps),
    st.lists(st.tuples(dates, dates), max_size=2).map(
        lambda xs: json.dumps([list(x) for x in xs])
    ),
    st.text(max_size=10).map(json.dumps),
    st.sampled_from(["[]", "true", "1.5", "{}", '[["08:45", "16:00"]]', "1999-01-01"]),
)


@budget(40)
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "home_time",
                "y6_release_minutes",
                "uncollected_after_minutes",
                "contact",
                "terms",
                "closed",
                "timezone",
                "lunch",
            ]
        ),  # fmt: skip
        toml_values,
        max_size=4,
    )
)
def test_timetable_set_with_any_values(site, changes):
    d, _ = site
    base = {
        "timezone": '"Europe/London"',
        "home_time": '"15:15"',
        "contact": '[["08:45", "12:00"], ["13:00", "15:15"]]',
        "terms": '[["2026-09-03", "2026-12-18"]]',
    }
    base.update(changes)
    f = d / "any.toml"
    f.write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
    r = invoke(site, "timetable", "set", str(f), lines_of_detail=True)
    if r.exit_code:  # every mistake named, each on its own line, in line order
        lines = [int(m.group(1)) for m in re.finditer(r"\.toml line ([0-9]+): ", r.stderr)]
        assert lines == sorted(lines)
    else:
        invoke(site, "timetable", "set", str(d / "tt.toml"))


@budget(40)
@given(frm=st.one_of(st.none(), dates, anything), to=st.one_of(st.none(), dates, anything))
@example(frm=None, to="9999-12-31")
@example(frm="0001-01-01", to=None)
def test_export_with_any_dates(site, frm, to):
    args = ["export", "--format", "csv"]
    if frm is not None:
        args += ["--from", frm]
    if to is not None:
        args += ["--to", to]
    r = invoke(site, *args)
    for day in (frm, to):
        if not day or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", day):
            continue
        try:
            year = dt.date.fromisoformat(day).year
        except ValueError:
            continue  # not a calendar date: click's own one-line refusal
        if not 2000 <= year <= 2100:
            assert r.exit_code != 0  # the other option's mistake may be the one named
    if frm is None and to == "9999-12-31":
        assert r.stderr == "lockerctl: --to 9999-12-31: dates must be in the years 2000-2100\n"


@budget(40)
@given(
    frm=st.one_of(datetimes, anything),
    until=st.one_of(datetimes, anything),
    reason=anything,
    by=st.one_of(st.just("H1"), anything),
)
@example(frm="2027-03-28T01:30", until="2027-03-28T02:00", reason="trip", by="H1")
def test_grant_with_any_options(site, frm, until, reason, by):
    before = trail_size(site)
    r = invoke(
        site, "grant", "P1", "--from", frm, "--until", until, "--by", by, "--reason", reason
    )
    assert (trail_size(site) > before) == (r.exit_code == 0)
    if (frm, reason, by) == ("2027-03-28T01:30", "trip", "H1"):
        assert "01:30 does not exist on 2027-03-28 (clocks go forward)" in r.stderr
    if r.exit_code == 0:
        assert not any(c < " " for c in reason)


@budget(30)
@given(reason=anything, bay=st.one_of(st.just("1"), anything), expires=anything)
def test_open_with_any_reason(site, reason, bay, expires):
    # nothing listens on the broker port: a valid request fails to connect, in one line
    closed = f"127.0.0.1:{free_port()}"
    args = ["open", "L1", bay, "--by", "H1", "--reason", reason, "--broker", closed]
    if expires:
        args += ["--expires", expires]
    before = trail_size(site)
    invoke(site, *args)
    assert trail_size(site) == before  # nothing sent, nothing recorded


# `user add` with any name: tests/web/test_cli_user_names.py (it needs the accounts' tables).
