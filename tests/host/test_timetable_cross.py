"""The host compiles, the locker computes: the firmware's `Timetable` (run under CPython and under
MicroPython) must read every instant exactly as the host's time-zone database does, across
several years and at every change of offset (+-1 s), in zones with weekday, midnight and
half-hour changes as well as Europe/London's built-in rule."""

import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from lockerctl.timetable import compile_timetable, parse_timetable, utc_offsets

ROOT = Path(__file__).resolve().parents[2]
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
sys.path.insert(0, str(ROOT / "firmware"))

from locker.timetable import Timetable, london_offset  # noqa: E402

START = 1795549393  # 2026-11-24: "now" when the host compiles
WINDOW = (START - 365 * 86400, START + 10 * 365 * 86400)  # what the compiled table covers
ZONES = [
    "Europe/London",
    "America/New_York",
    "Australia/Sydney",
    "Africa/Cairo",  # changes at local midnight, on a Friday and a Thursday
    "Australia/Lord_Howe",  # half-hour change
    "America/St_Johns",  # -03:30 / -02:30
    "Asia/Kolkata",  # +05:30, no changes
]
GOOD = """\
timezone = "{tz}"
home_time = "15:15"
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["2026-09-03", "2026-10-23"], ["2026-11-02", "2026-12-18"]]
closed = ["2026-11-02"]
"""


def compiled(tz: str) -> dict:
    return compile_timetable(parse_timetable(GOOD.format(tz=tz), f"{tz}.toml"), START)


def expected_local(ts: int, zone: ZoneInfo) -> tuple:
    d = dt.datetime.fromtimestamp(ts, zone)
    return (
        d.year * 10000 + d.month * 100 + d.day,
        d.weekday(),
        d.hour * 3600 + d.minute * 60 + d.second,
        int(d.utcoffset().total_seconds()),
    )


def expected_at_local(date: int, minutes: int, zone: ZoneInfo) -> int:
    # fold=0: a repeated wall time is its first occurrence; a skipped one is read on the offset
    # before the change -- the firmware's documented choice.
    d = dt.datetime(
        date // 10000, date // 100 % 100, date % 100, minutes // 60, minutes % 60, tzinfo=zone
    )
    return int(d.timestamp())


def instants(tz: str, lo: int, hi: int, n: int = 1500) -> list[int]:
    rnd = random.Random(tz)
    out = [rnd.randrange(lo, hi) for _ in range(n)]
    for t, _ in utc_offsets(tz, lo, hi)[1:]:
        out += [t - 1, t, t + 1, t - 3600, t + 3600]
    return out


def dates(lo: int, hi: int, step_days: int = 1) -> list[int]:
    day = dt.datetime.fromtimestamp(lo, dt.UTC).date() + dt.timedelta(days=1)
    end = dt.datetime.fromtimestamp(hi, dt.UTC).date() - dt.timedelta(days=1)
    out = []
    while day <= end:
        out.append(day.year * 10000 + day.month * 100 + day.day)
        day += dt.timedelta(days=step_days)
    return out


@pytest.mark.parametrize("tz", ZONES)
def test_firmware_local_agrees_with_zoneinfo(tz):
    zone = ZoneInfo(tz)
    tt = Timetable(compiled(tz))
    points = instants(tz, *WINDOW)
    if tz == "Europe/London":  # beyond the table: the built-in rule
        points += instants(tz, WINDOW[1], WINDOW[1] + 5 * 365 * 86400, 300)
        points += instants(tz, 852076800, WINDOW[0], 300)  # 1997 onwards
    assert len(points) >= 1500
    bad = [
        (t, tt.local(t), expected_local(t, zone))
        for t in points
        if tt.local(t) != expected_local(t, zone)
    ]
    assert not bad, f"{tz}: {len(bad)} instants differ, first {bad[:3]}"


@pytest.mark.parametrize("tz", ZONES)
def test_firmware_wall_times_agree_with_zoneinfo(tz):
    # Every day of the table's years at the times that matter, including those in or next to the
    # changes (00:00, 00:30, 01:00 .. 03:00) and the school's own.
    zone = ZoneInfo(tz)
    tt = Timetable(compiled(tz))
    minutes = (0, 30, 60, 90, 119, 120, 121, 150, 180, 525, 900, 915, 1380, 1410, 1439)
    bad = []
    for date in dates(*WINDOW):
        for m in minutes:
            got, want = tt.at_local(date, m), expected_at_local(date, m, zone)
            if got != want:
                bad.append((date, m, got, want))
    assert not bad, f"{tz}: {len(bad)} wall times differ, first {bad[:3]}"


def test_london_rule_without_a_table_1996_to_2037():
    zone = ZoneInfo("Europe/London")
    tt = Timetable(dict(compiled("Europe/London"), offsets=[]))
    lo, hi = 852076800, 2145916800  # 1997-01-01 .. 2038-01-01
    for t in instants("Europe/London", lo, hi, 3000):
        assert london_offset(t) == expected_local(t, zone)[3], t
        assert tt.local(t) == expected_local(t, zone), t


def test_home_time_on_the_school_days_of_the_sample():
    zone = ZoneInfo("Europe/London")
    tt = Timetable(compiled("Europe/London"))
    school_days = 0
    for date in dates(1788000000, 1798000000):  # 2026-08 .. 2026-12
        noon = expected_at_local(date, 720, zone)
        d = dt.date(date // 10000, date // 100 % 100, date % 100)
        in_term = 20260903 <= date <= 20261023 or 20261102 <= date <= 20261218
        school = in_term and d.weekday() < 5 and date != 20261102
        assert tt.is_school_day(noon) == school, date
        if school:
            school_days += 1
            home = expected_at_local(date, 915, zone)
            assert tt.home_time_ts(noon) == home
            assert tt.pupil_release_ts(noon, True) == home - 600
            assert tt.uncollected_ts(noon) == home + 3600
        else:
            assert tt.home_time_ts(noon) is None
    assert school_days == 37 + 34  # Thu 3 Sep - Fri 23 Oct; 2 Nov - 18 Dec less the INSET day


MPY_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from locker.timetable import Timetable
import json
f = open(sys.argv[2])
tt = None
for line in f:
    req = json.loads(line)
    if "spec" in req:
        tt = Timetable(req["spec"])
        print(json.dumps({"zone": req["spec"]["timezone"]}))
    elif "ts" in req:
        print(json.dumps(list(tt.local(req["ts"]))))
    else:
        print(json.dumps(tt.at_local(req["date"], req["min"])))
"""


def test_micropython_agrees_with_cpython_and_zoneinfo(tmp_path):
    if not MICROPYTHON.exists():
        pytest.skip("no .venv/bin/micropython (make deps)")
    requests, expected = [], []
    for tz in ("Europe/London", "America/New_York", "Australia/Lord_Howe", "Africa/Cairo"):
        zone = ZoneInfo(tz)
        spec = compiled(tz)
        requests.append({"spec": spec})
        expected.append({"zone": tz})
        lo = START - 365 * 86400
        for t in instants(tz, lo, lo + 3 * 365 * 86400, 100):
            requests.append({"ts": t})
            expected.append(list(expected_local(t, zone)))
        for date in dates(lo, lo + 3 * 365 * 86400, 7)[:60]:
            for m in (0, 90, 150, 915):
                requests.append({"date": date, "min": m})
                expected.append(expected_at_local(date, m, zone))
        if tz == "Europe/London":  # the built-in rule, as a locker whose table ran out
            requests.append({"spec": dict(spec, offsets=[])})
            expected.append({"zone": tz})
            for t in instants(tz, 1577836800, 2145916800, 200):  # 2020 .. 2038
                requests.append({"ts": t})
                expected.append(list(expected_local(t, zone)))
    req_file = tmp_path / "requests.jsonl"
    req_file.write_text("".join(json.dumps(r) + "\n" for r in requests))
    script = tmp_path / "tt_cross.py"
    script.write_text(MPY_SCRIPT)
    proc = subprocess.run(
        [
            str(MICROPYTHON),
            "-X",
            "heapsize=96k",
            str(script),
            str(ROOT / "firmware"),
            str(req_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(got) == len(expected)
    # under CPython the same module gives the same answers
    cpy, tt = [], None
    for r in requests:
        if "spec" in r:
            tt = Timetable(r["spec"])
            cpy.append({"zone": r["spec"]["timezone"]})
        elif "ts" in r:
            cpy.append(list(tt.local(r["ts"])))
        else:
            cpy.append(tt.at_local(r["date"], r["min"]))
    diffs = [(r, g, e) for r, g, e in zip(requests, got, expected, strict=True) if g != e]
    assert not diffs, f"MicroPython differs from zoneinfo: {diffs[:3]}"
    assert cpy == got
