"""`lockerctl user add` driven with arbitrary names, passwords and person ids (issue 14): a
one-line refusal or success, never a traceback; a name with control characters is refused.
(Kept with the dashboard's tests: it creates the accounts' tables.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness import budget
from hypothesis import example, given
from hypothesis import strategies as st
from lockerctl.cli import _load_commands
from lockerctl.clibase import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
from test_cli_properties import anything, invoke  # noqa: E402

_load_commands()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("usernames")
    db = f"sqlite:///{d / 'lockers.db'}"
    (d / "roster.csv").write_text(
        "person_id,name,role,year,walk_home,card_uid\nP1,Ann Smith,pupil,6,yes,04A1B2C3\n"
    )
    r = CliRunner().invoke(cli, ["roster", "import", str(d / "roster.csv"), "--db", db])
    assert r.exit_code == 0, r.output
    return d, db


@budget(40)
@given(name=anything, password=anything, person=st.one_of(st.none(), anything))
@example(name="ad\x00min", password="long enough", person=None)
@example(name="\x1b[31mroot", password="long enough", person="P1")
def test_user_add_with_any_name(site, name, password, person):
    args = ["user", "add", name, "--role", "office", "--password-stdin"]
    if person is not None:
        args += ["--person", person]
    r = invoke(site, *args, input=(password + "\n").encode("utf-8", "surrogatepass"))
    if r.exit_code == 0:
        assert not any(c < " " or c == "\x7f" for c in name)
        invoke(site, "user", "remove", name)
