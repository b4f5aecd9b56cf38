"""The timetable file (docs/cli.md): a good file parses and compiles; every mistake is one line
that names the file, the key and the value."""

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lockerctl.clibase import UserError
from lockerctl.timetable import (
    KEYS,
    TimetableError,
    compile_timetable,
    local_iso,
    parse_timetable,
    utc_offsets,
)

GOOD = """\
timezone = "Europe/London"
home_time = "15:15"
y6_release_minutes = 10
uncollected_after_minutes = 60
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["2026-09-03", "2026-10-23"], ["2026-11-02", "2026-12-18"]]
closed = ["2026-11-02"]          # INSET and other closed days inside terms
"""

SPRING_2026 = 1774746000  # 2026-03-29 01:00 UTC
AUTUMN_2026 = 1792890000  # 2026-10-25 01:00 UTC


def replace(line_start: str, new_line: str | None, text: str = GOOD) -> str:
    out = []
    for line in text.splitlines():
        if line.startswith(line_start):
            if new_line is not None:
                out.append(new_line)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_good_file_parses_to_its_normal_form():
    tt = parse_timetable(GOOD, "school.toml")
    assert tt == {
        "timezone": "Europe/London",
        "home_time": "15:15",
        "y6_release_minutes": 10,
        "uncollected_after_minutes": 60,
        "contact": [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]],
        "terms": [["2026-09-03", "2026-10-23"], ["2026-11-02", "2026-12-18"]],
        "closed": ["2026-11-02"],
    }
    assert json.loads(json.dumps(tt)) == tt  # the store keeps it as JSON


def test_defaults_native_toml_values_and_sorting():
    text = """\
timezone = "America/New_York"
home_time = 15:30:00
contact = [[08:00:00, "09:00"]]
terms = [[2027-01-04, 2027-03-26], ["2026-09-08", "2026-12-18"]]
closed = ["2026-12-18", 2026-11-26, "2026-11-26"]
"""
    tt = parse_timetable(text, "ny.toml")
    assert tt["y6_release_minutes"] == 10
    assert tt["uncollected_after_minutes"] == 60
    assert tt["home_time"] == "15:30"
    assert tt["contact"] == [["08:00", "09:00"]]
    assert tt["terms"] == [["2026-09-08", "2026-12-18"], ["2027-01-04", "2027-03-26"]]
    assert tt["closed"] == ["2026-11-26", "2026-12-18"]
    assert parse_timetable(replace("closed", None), "x.toml")["closed"] == []
    assert parse_timetable(replace("contact", "contact = []"), "x.toml")["contact"] == []


def test_compile_gives_the_bundle_timetable():
    tt = parse_timetable(GOOD, "school.toml")
    start = 1795549393  # 2026-11-24
    c = compile_timetable(tt, start)
    assert c["timezone"] == "Europe/London"
    assert c["home_time"] == 915
    assert c["y6_release_minutes"] == 10
    assert c["uncollected_after_minutes"] == 60
    assert c["contact"] == [[525, 630], [645, 720], [780, 915]]
    assert c["terms"] == [[20260903, 20261023], [20261102, 20261218]]
    assert c["closed"] == [20261102]
    offsets = c["offsets"]
    assert offsets[0] == [start - 365 * 86400, 0]  # winter a year before
    assert [SPRING_2026, 3600] in offsets and [AUTUMN_2026, 0] in offsets
    assert len(offsets) == 1 + 2 * 11  # two changes a year for eleven years
    assert offsets[-1][0] > start + 10 * 365 * 86400 - 366 * 86400
    assert all(a[0] < b[0] and a[1] != b[1] for a, b in zip(offsets, offsets[1:], strict=False))
    assert json.loads(json.dumps(c)) == c


def test_offsets_of_a_zone_without_changes_and_of_a_half_hour_zone():
    assert utc_offsets("Asia/Tokyo", 0, 10 * 365 * 86400)[1:] == []
    lord_howe = utc_offsets("Australia/Lord_Howe", 1767225600, 1767225600 + 365 * 86400)
    assert {off for _, off in lord_howe} == {37800, 39600}  # +10:30 and +11:00


def test_local_iso():
    assert local_iso(SPRING_2026 - 1, "Europe/London") == "2026-03-29T00:59:59+00:00"
    assert local_iso(SPRING_2026, "Europe/London") == "2026-03-29T02:00:00+01:00"
    assert local_iso(AUTUMN_2026, "Europe/London") == "2026-10-25T01:00:00+00:00"
    assert local_iso(0, "America/New_York") == "1969-12-31T19:00:00-05:00"


# (what, text, words the one-line message must contain)
# fmt: off
BAD = [
    ("bad TOML", replace("home_time", 'home_time = "15:15'), ["not valid TOML", "line 2"]),
    ("unknown key", GOOD + "lunch = 5\n", ["lunch", "unknown key", "line 8"]),
    ("misspelt key", replace("closed", 'closed_days = ["2026-11-02"]'), ["closed_days"]),
    ("missing timezone", replace("timezone", None), ["missing key 'timezone'"]),
    ("missing home_time", replace("home_time", None), ["missing key 'home_time'"]),
    ("missing terms", replace("terms", None), ["missing key 'terms'"]),
    ("unknown zone", replace("timezone", 'timezone = "Europe/Londn"'),
     ["timezone", '"Europe/Londn"', "unknown time zone", "line 1"]),
    ("zone directory", replace("timezone", 'timezone = "Europe"'), ["timezone", "unknown"]),
    ("zone path", replace("timezone", 'timezone = "../etc/passwd"'), ["timezone", "unknown"]),
    ("zone not a string", replace("timezone", "timezone = 1"), ["timezone = 1"]),
    ("home_time words", replace("home_time", 'home_time = "3pm"'),
     ["home_time", '"3pm"', "HH:MM", "line 2"]),
    ("home_time 25:00", replace("home_time", 'home_time = "25:00"'),
     ["home_time", '"25:00"', "00:00 to 23:59"]),
    ("home_time 15:60", replace("home_time", 'home_time = "15:60"'), ["home_time", '"15:60"']),
    ("home_time seconds", replace("home_time", "home_time = 15:15:30"),
     ["home_time", "15:15:30"]),
    ("y6 negative", replace("y6_release_minutes", "y6_release_minutes = -5"),
     ["y6_release_minutes = -5", "between 0 and home time"]),
    ("y6 beyond home time", replace("y6_release_minutes", "y6_release_minutes = 916"),
     ["y6_release_minutes = 916", "915"]),
    ("y6 over two hours", replace("y6_release_minutes", "y6_release_minutes = 900"),
     ["y6_release_minutes = 900", "at most 120", "line 3"]),
    ("uncollected over a day", replace("uncollected", "uncollected_after_minutes = 1441"),
     ["uncollected_after_minutes = 1441", "at most 1440"]),
    ("uncollected huge", replace("uncollected", "uncollected_after_minutes = 9223372036854775807"),
     ["uncollected_after_minutes = 9223372036854775807", "at most 1440", "line 4"]),
    ("home_time before lessons end", replace("home_time", 'home_time = "15:00"'),
     ["home_time", '"15:00"', "end of the last contact period (15:15)", "line 2"]),
    ("term before 2000", replace("terms", 'terms = [["1999-09-03", "1999-10-23"]]'),
     ["terms[0]", '"1999-09-03"', "2000-2100"]),
    ("term after 2100", replace("terms", 'terms = [["2026-09-03", 9999-12-31]]'),
     ["terms[0]", "9999-12-31", "2000-2100"]),
    ("y6 text", replace("y6_release_minutes", 'y6_release_minutes = "10"'),
     ["y6_release_minutes", "whole number"]),
    ("y6 bool", replace("y6_release_minutes", "y6_release_minutes = true"),
     ["y6_release_minutes", "whole number"]),
    ("uncollected negative", replace("uncollected", "uncollected_after_minutes = -1"),
     ["uncollected_after_minutes = -1", "0 or more", "line 4"]),
    ("uncollected float", replace("uncollected", "uncollected_after_minutes = 1.5"),
     ["uncollected_after_minutes = 1.5"]),
    ("contact not a list", replace("contact", 'contact = "08:45-15:15"'), ["contact", "list"]),
    ("contact triple", replace("contact", 'contact = [["08:45", "10:30", "11:00"]]'),
     ["contact[0]", "period"]),
    ("contact backwards", replace("contact", 'contact = [["10:30", "08:45"]]'),
     ["contact[0]", '["10:30", "08:45"]', "start is not before end", "line 5"]),
    ("contact empty", replace("contact", 'contact = [["10:30", "10:30"]]'),
     ["contact[0]", "start is not before end"]),
    ("contact overlap", replace("contact", 'contact = [["08:45", "10:30"], ["10:00", "11:00"]]'),
     ["contact[1]", '["10:00", "11:00"]', "overlaps"]),
    ("contact order", replace("contact", 'contact = [["13:00", "15:15"], ["08:45", "10:30"]]'),
     ["contact[1]", "in order"]),
    ("contact bad time", replace("contact", 'contact = [["08:45", "24:00"]]'),
     ["contact[0]", '"24:00"']),
    ("term bad date", replace("terms", 'terms = [["2026-02-30", "2026-03-01"]]'),
     ["terms[0]", '"2026-02-30"', "not a calendar date"]),
    ("term not ISO", replace("terms", 'terms = [["03/09/2026", "2026-10-23"]]'),
     ["terms[0]", '"03/09/2026"', "YYYY-MM-DD"]),
    ("term backwards", replace("terms", 'terms = [["2026-10-23", "2026-09-03"]]'),
     ["terms[0]", "first day is after last day", "line 6"]),
    ("term overlap", replace("terms", 'terms = [["2026-09-03", "2026-11-02"], '
                                      '["2026-11-02", "2026-12-18"]]'),
     ["terms[1]", "overlaps terms[0]"]),
    ("term not a pair", replace("terms", 'terms = ["2026-09-03"]'),
     ["terms[0]", "first and last"]),
    ("terms a table", replace("terms", 'terms = {autumn = "2026-09-03"}'), ["terms", "list"]),
    ("closed outside terms", replace("closed", 'closed = ["2026-11-02", "2026-10-26"]'),
     ["closed[1]", '"2026-10-26"', "not inside any term", "line 7"]),
    ("closed bad date", replace("closed", 'closed = ["2026-13-01"]'), ["closed[0]", "2026-13-01"]),
    ("closed not a list", replace("closed", 'closed = "2026-11-02"'), ["closed", "list"]),
]
# fmt: on


@pytest.mark.parametrize("what,text,words", BAD, ids=[b[0] for b in BAD])
def test_every_mistake_is_one_line_naming_file_and_key(what, text, words):
    with pytest.raises(TimetableError) as info:
        parse_timetable(text, "school.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("school.toml")
    for word in words:
        assert word in message, f"{what}: {word!r} not in {message!r}"
    # a domain error, no click exception: `timetable set` shows each problem on a line of its
    # own (tests/host/test_cli_store.py), the dashboard on its page
    assert isinstance(info.value, ValueError) and not isinstance(info.value, UserError)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)  # int, float, date, time


_scalar = st.one_of(
    st.integers(-2000, 2000),
    st.booleans(),
    st.floats(-10, 10, allow_nan=False),
    st.sampled_from(
        [
            "08:45",
            "15:15",
            "23:59",
            "24:00",
            "9:5",
            "2026-09-03",
            "2026-02-30",
            "Europe/London",
            "Nowhere/City",
            "",
            "x",
        ]
    ),
    st.dates(dt.date(2025, 1, 1), dt.date(2028, 12, 31)),
    st.times().map(lambda t: t.replace(microsecond=0)),
)
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=4), max_leaves=10)


_BASE = {
    "timezone": "Europe/London",
    "home_time": "15:15",
    "contact": [["08:45", "10:30"], ["13:00", "15:15"]],
    "terms": [["2026-09-03", "2026-10-23"], ["2026-11-02", "2026-12-18"]],
    "closed": ["2026-11-02"],
}


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*KEYS, "lunch"]), _value, max_size=3),
    st.sets(st.sampled_from(list(_BASE)), max_size=1),
)
def test_any_file_either_parses_or_is_one_line_error(changes, dropped):
    doc = {k: v for k, v in {**_BASE, **changes}.items() if k not in dropped}
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in doc.items())
    try:
        tt = parse_timetable(text, "fuzz.toml")
    except TimetableError as e:
        # every mistake at once (issue 18), each its own line naming the file
        lines = str(e).split("\n")
        assert lines == e.problems and len(set(lines)) == len(lines)
        assert all(line.startswith("fuzz.toml") for line in lines)
    else:
        compile_timetable(tt, 1795549393, years=1)  # whatever parses also compiles


def test_huge_integer_toml_is_refused_in_one_line():
    # issue 14: this value was accepted and turned the uncollected check off
    text = replace("uncollected", "uncollected_after_minutes = 99999999999999999999")
    with pytest.raises(TimetableError) as info:
        parse_timetable(text, "school.toml")
    assert info.value.problems == [
        "school.toml line 4: uncollected_after_minutes = 99999999999999999999: "
        "must be 0 or more, and at most 1440 (a day)"
    ]


def test_every_mistake_is_reported_at_once_in_line_order():
    text = (
        'timezone = "Mars/Olympus"\n'
        'home_time = "25:00"\n'
        "y6_release_minutes = 900\n"
        "uncollected_after_minutes = 99999\n"
        'contact = [["10:30", "08:45"], ["13:00", "15:15"]]\n'
        'terms = [["2026-09-03", "2026-02-30"]]\n'
        "lunch = 5\n"
    )
    with pytest.raises(TimetableError) as info:
        parse_timetable(text, "t.toml")
    lines = info.value.problems
    assert [line.split(":", 2)[1].strip().split(" ")[0] for line in lines] == [
        "timezone",
        "home_time",
        "y6_release_minutes",
        "uncollected_after_minutes",
        "contact[0]",
        "terms[0]",
        "lunch",
    ], lines
    assert [int(line.split(" ")[2].rstrip(":")) for line in lines] == [1, 2, 3, 4, 5, 6, 7]
