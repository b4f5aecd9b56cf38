"""The store's commands through the real `lockerctl` command group (docs/cli.md)."""

import csv
import datetime as dt
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner
from lockerctl.cli import _load_commands
from lockerctl.clibase import cli
from lockerctl.store import Store

ROOT = Path(__file__).resolve().parents[2]
LOCKERCTL = ROOT / ".venv" / "bin" / "lockerctl"
ROSTER = (
    "person_id,name,role,year,walk_home,card_uid\n"
    "P1,Ann Smith,pupil,6,yes,04a1b2c3\n"
    "P2,Bob Jones,pupil,3,no,04A1B2C3D4E5F6\n"
    "S1,Sue Head,staff,,no,11223344\n"
    "S1,Sue Head,slt,,no,55667788\n"
)
TIMETABLE = """\
timezone = "Europe/London"
home_time = "15:15"
y6_release_minutes = 10
uncollected_after_minutes = 60
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["2026-09-03", "2026-10-23"], ["2026-11-02", "2026-12-18"]]
closed = ["2026-11-02"]
"""

_load_commands()


def all_commands(group=cli, path=()):
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*path, name))


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in all_commands()])
def test_every_command_has_help(path):
    cmd = cli
    for word in path.split():
        cmd = cmd.commands[word]
    assert (cmd.help or "").strip(), f"`lockerctl {path}` has no help text"
    result = CliRunner().invoke(cli, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_store_commands_exist_with_documented_options():
    want = {
        ("export",): {"--format", "--from", "--to", "--locker", "--person", "-o"},
        ("audit", "verify"): set(),
        ("roster", "import"): set(),
        ("roster", "export"): set(),
        ("locker", "add"): {"--bays"},
        ("locker", "list"): set(),
        ("timetable", "set"): set(),
        ("timetable", "show"): set(),
        ("card", "revoke"): {"--card"},
        ("grant", "add"): {"--from", "--until", "--by", "--reason", "--locker"},
        ("grant", "list"): set(),
        ("grant", "revoke"): set(),
    }
    commands = dict(all_commands())
    for path, options in want.items():
        cmd = commands[path]
        opts = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        assert options | {"--db", "--site"} <= opts, path
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help, f"{' '.join(path)} {p.opts[0]} has no help"


class Ctl:
    """Runs `lockerctl ... --db URL` in-process."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.url = f"sqlite:///{tmp_path / 'lockers.db'}"

    def __call__(self, *args, input=None, ok=True):
        result = CliRunner().invoke(
            cli,
            [*map(str, args), "--db", self.url],
            input=input,
            env={"LOCKER_SITE": None, "LOCKER_DB": None},
        )
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    def file(self, name, text):
        p = self.tmp / name
        p.write_text(text)
        return p

    def store(self):
        return Store.open(self.url)


@pytest.fixture
def ctl(tmp_path):
    return Ctl(tmp_path)


def test_roster_import_reports_every_bad_line_and_applies_nothing(ctl):
    ctl("roster", "import", ctl.file("r.csv", ROSTER))
    before = ctl("roster", "export").stdout
    bad = (
        ROSTER.replace("P2,Bob Jones,pupil,3,no", "P2,Bob Jones,pupil,8,no")
        + "P3,Cat,cook,,no,AABBCCDD\nP4,Dan,pupil,2,no,11223344\n"
    )
    r = ctl("roster", "import", ctl.file("bad.csv", bad), ok=False)
    assert r.exit_code == 1
    err = r.stderr.splitlines()
    assert [line.split(": ")[0] for line in err[:-1]] == [
        f"{ctl.tmp / 'bad.csv'}:{n}" for n in (3, 6, 7)
    ]
    assert "year '8'" in err[0] and "role 'cook'" in err[1] and "also on S1" in err[2]
    assert err[-1] == f"lockerctl: {ctl.tmp / 'bad.csv'}: 3 bad lines; nothing imported"
    assert ctl("roster", "export").stdout == before


def test_roster_import_then_export_masks(ctl):
    r = ctl("roster", "import", ctl.file("r.csv", ROSTER))
    assert "imported 4 cards for 3 people" in r.stdout
    rows = list(csv.reader(io.StringIO(ctl("roster", "export").stdout)))
    assert rows[0] == ["person_id", "name", "role", "year", "walk_home", "card_uid"]
    assert ["P2", "Bob Jones", "pupil", "3", "no", "****E5F6"] in rows
    assert len(rows) == 5
    r = ctl("roster", "import", ctl.tmp / "missing.csv", ok=False)
    assert r.exit_code == 1 and "cannot read" in r.stderr


def test_locker_add_prints_device_json(ctl):
    r = ctl("locker", "add", "L1", "--bays", "6", "--broker", "10.0.0.5:1884")
    device = json.loads(r.stdout)
    assert device["locker_id"] == "L1" and device["site"] == "school"
    assert device["board"] == "sim" and device["bays"] == 6
    assert device["broker"]["host"] == "10.0.0.5" and device["broker"]["port"] == 1884
    assert device["broker"]["user"] == "L1" and len(device["broker"]["password"]) >= 16
    assert device["broker"]["tls"] is False
    assert len(bytes.fromhex(device["secret"])) == 32
    # Defaults that never collide with a demo or another site: the data directory next to the
    # database, a control port no other locker of the site uses and nothing listens on.
    assert device["data_dir"] == str(ctl.tmp / "lockers" / "L1")
    assert device["sim"]["control_port"] >= 7101
    d2 = json.loads(ctl("locker", "add", "L2", "--board", "esp32", "--data-dir", "/flash").stdout)
    assert d2["board"] == "esp32" and d2["sim"]["control_port"] > device["sim"]["control_port"]
    assert d2["data_dir"] == "/flash" and d2["secret"] != device["secret"]
    st = ctl.store()
    assert st.locker("school", "L1").secret.hex() == device["secret"]
    assert st.locker("school", "L1").broker_password == device["broker"]["password"]
    st.close()
    r = ctl("locker", "add", "L1", ok=False)
    assert r.exit_code == 1 and r.stderr == "lockerctl: locker L1 already exists at site school\n"
    assert ctl("locker", "add", "bad/id", ok=False).exit_code == 1
    out = ctl("locker", "list").stdout.splitlines()
    assert out[0].split() == [
        "locker",
        "bays",
        "board",
        "online",
        "last_seen",
        "config",
        "pending",
        # each locker's health (issue 17, docs/fleet.md)
        "version",
        "uptime",
        "reset",
        "heap_low",
        "journal",
        "rssi",
        "clock",
        "warnings",
    ]
    assert out[1].split()[:4] == ["L1", "6", "sim", "never"]


def test_timetable_set_and_show(ctl):
    st = ctl.store()
    v = st.config_version("school")
    r = ctl("timetable", "set", ctl.file("tt.toml", TIMETABLE))
    assert "Europe/London" in r.stdout
    assert st.config_version("school") == v + 1
    assert ctl("timetable", "show").stdout == TIMETABLE
    r = ctl(
        "timetable", "set", ctl.file("bad.toml", TIMETABLE.replace("15:15", "25:15")), ok=False
    )
    assert r.exit_code == 1 and r.stderr.startswith("lockerctl: ") and "bad.toml" in r.stderr
    # both mistakes at once, in line order (home_time, then contact[2]), one line each
    first, second = r.stderr.splitlines()
    assert first.startswith("lockerctl: ") and "bad.toml line 2: home_time" in first
    assert second.startswith("lockerctl: ") and "bad.toml line 5: contact[2]" in second
    assert ctl("timetable", "show").stdout == TIMETABLE
    assert st.config_version("school") == v + 1
    cards, tt, grants = st.config_inputs("school", "L1")
    assert tt["timezone"] == "Europe/London" and tt["home_time"] == "15:15"
    st.close()
    r = ctl("timetable", "show", "--site", "other", ok=False)
    assert r.exit_code == 1 and "no timetable" in r.stderr


def test_card_revoke(ctl):
    ctl("roster", "import", ctl.file("r.csv", ROSTER))
    assert (
        ctl("card", "revoke", "S1", "--card", "55667788").stdout == "revoked card ****7788 of S1\n"
    )
    assert ctl("card", "revoke", "S1").stdout == "revoked 1 card of S1\n"
    assert "already revoked" in ctl("card", "revoke", "S1").stdout
    st = ctl.store()
    cards, _, _ = st.config_inputs("school", "L1")
    assert {c.uid for c in cards if c.revoked} == {"11223344", "55667788"}
    st.close()
    assert "not on the roster" in ctl("card", "revoke", "P9", ok=False).stderr
    r = ctl("card", "revoke", "P1", "--card", "DEADBEEF", ok=False)
    assert r.exit_code == 1 and "P1 has no card DEADBEEF" in r.stderr
    assert "hex" in ctl("card", "revoke", "P1", "--card", "xyz", ok=False).stderr


def _iso(d: dt.datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M")


def test_grants(ctl):
    ctl("roster", "import", ctl.file("r.csv", ROSTER))
    ctl("locker", "add", "L1")
    london = ZoneInfo("Europe/London")
    start = (dt.datetime.now(london) + dt.timedelta(days=1)).replace(second=0, microsecond=0)
    end = start + dt.timedelta(hours=2)
    r = ctl(
        "grant",
        "P1",
        "--from",
        _iso(start),
        "--until",
        _iso(end),
        "--by",
        "S1",
        "--reason",
        "dentist",
    )
    assert r.stdout.startswith("grant 1: P1 from ")
    ctl(
        "grant",
        "P2",
        "--from",
        start.isoformat(),
        "--until",
        "2099-01-01T00:00+00:00",
        "--by",
        "S1",
        "--reason",
        "trip",
        "--locker",
        "L1",
    )
    st = ctl.store()
    g1, g2 = st.grants("school")
    assert g1.from_ts == int(start.timestamp()) and g1.until_ts == int(end.timestamp())
    assert g1.locker_id is None and g2.locker_id == "L1" and g2.until_ts == 4070908800
    listing = ctl("grant", "list").stdout.splitlines()
    assert listing[0].split()[:3] == ["id", "person", "locker"] and len(listing) == 3
    assert "future" in listing[1] and "dentist" in listing[1]
    assert ctl("grant", "revoke", "1").stdout == "grant 1 revoked\n"
    assert len(ctl("grant", "list").stdout.splitlines()) == 2
    assert "revoked" in ctl("grant", "list", "--all").stdout
    assert "already revoked" in ctl("grant", "revoke", "1", ok=False).stderr
    assert "no grant 9" in ctl("grant", "revoke", "9", ok=False).stderr
    st.close()
    args = ["--from", _iso(start), "--until", _iso(end), "--reason", "x"]
    for argv, message in [
        (["P9", *args, "--by", "S1"], "P9 is not on the roster"),
        (["P1", *args, "--by", "P2"], "not an SLT member"),
        (["P1", *args, "--by", "S9"], "--by S9 is not on the roster"),
        (
            ["P1", "--from", _iso(end), "--until", _iso(start), "--by", "S1", "--reason", "x"],
            "is not before",
        ),
        (
            ["P1", "--from", "2020-01-01", "--until", "2020-01-02", "--by", "S1", "--reason", "x"],
            "already passed",
        ),
        (
            ["P1", "--from", "tomorrow", "--until", _iso(end), "--by", "S1", "--reason", "x"],
            "expected ISO 8601",
        ),
        (["P1", *args, "--by", "S1", "--locker", "L7"], "no such locker"),
        (
            ["P1", "--from", _iso(start), "--until", _iso(end), "--by", "S1", "--reason", " "],
            "--reason must not be empty",
        ),
    ]:
        r = ctl("grant", *argv, ok=False)
        assert r.exit_code != 0 and message in r.stderr, (argv, r.output)
    assert "Missing option '--by'" in ctl("grant", "P1", *args, ok=False).output
    assert len(ctl("grant", "list", "--all").stdout.splitlines()) == 3


def test_export_command(ctl):
    ctl("roster", "import", ctl.file("r.csv", ROSTER))
    st = ctl.store()
    st.ingest(
        "school",
        [
            ("L1", {"seq": 1, "ts": 1_783_000_000, "type": "deposit", "bay": 2, "person": "P1"}),
            ("L1", {"seq": 2, "ts": 1_796_000_000, "type": "retrieve", "bay": 2, "person": "P1"}),
        ],
    )
    st.close()
    text = ctl("export", "--format", "csv").stdout
    lines = text.splitlines()
    assert lines[0] == (
        "time,locker,bay,event,person_id,name,role,by,reason,seq,time_source,jid,flags"
    )
    assert lines[1] == "2026-07-02T14:46:40+01:00,L1,2,deposit,P1,Ann Smith,pupil,,,1,locker,,"
    assert lines[2].startswith("2026-11-30T")
    assert lines[2].split(",")[0].endswith("+00:00")
    assert (
        len(ctl("export", "--from", "2026-07-02", "--to", "2026-07-02").stdout.splitlines()) == 2
    )
    assert len(ctl("export", "--from", "2026-07-03").stdout.splitlines()) == 2
    jl = [
        json.loads(x)
        for x in ctl("export", "--format", "jsonl", "--person", "P1").stdout.splitlines()
    ]
    assert [r["seq"] for r in jl] == [1, 2]
    out = ctl.tmp / "out.xlsx"
    r = ctl("export", "--format", "xlsx", "-o", out)
    assert "exported 2 events" in r.stderr
    from openpyxl import load_workbook

    assert load_workbook(out).active.max_row == 3
    piped = ctl("export", "--format", "xlsx").stdout_bytes  # standard output, not a terminal
    assert load_workbook(io.BytesIO(piped)).active.max_row == 3
    r = ctl("export", "--from", "2026-07-03", "--to", "2026-07-01", ok=False)
    assert r.exit_code == 1 and "after --to" in r.stderr
    assert "no such locker" in ctl("export", "--locker", "L9", ok=False).stderr
    assert "not on the roster" in ctl("export", "--person", "P9", ok=False).stderr
    assert ctl("export", "--format", "pdf", ok=False).exit_code == 2
    r = ctl("export", "-o", ctl.tmp / "nodir" / "x.csv", ok=False)
    assert r.exit_code == 1 and "no directory" in r.stderr


def test_audit_verify_command(ctl):
    ctl("roster", "import", ctl.file("r.csv", ROSTER))
    ctl("locker", "add", "L1")
    st = ctl.store()
    st.ingest(
        "school", [("L1", {"seq": i, "ts": 1_790_000_000, "type": "boot"}) for i in range(1, 4)]
    )
    st.close()
    r = ctl("audit", "verify")
    assert r.stdout.startswith("audit trail intact: 5 entries, head ")
    con = sqlite3.connect(ctl.tmp / "lockers.db")
    with con:
        con.execute("UPDATE events SET type = 'retrieve' WHERE seq = 2")
    con.close()
    r = ctl("audit", "verify", ok=False)
    assert r.exit_code == 1
    assert (
        r.stderr == "lockerctl: audit trail broken: entry 4: content does not match its "
        "hash (edited)\n"
    )


def test_installed_entry_point_reports_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    bad = tmp_path / "bad.csv"
    bad.write_text("person_id,name,role,year,walk_home,card_uid\nP1,A,pupil,0,no,AABBCCDD\n")
    exe = [str(LOCKERCTL)] if LOCKERCTL.exists() else [sys.executable, "-m", "lockerctl"]
    p = subprocess.run(
        [*exe, "roster", "import", str(bad), "--db", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert p.stderr.splitlines() == [
        f"{bad}:2: year '0' must be 1-6 for a pupil",
        f"lockerctl: {bad}: 1 bad line; nothing imported",
    ]
    p = subprocess.run(
        [*exe, "audit", "verify", "--db", url], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0 and "0 entries" in p.stdout
