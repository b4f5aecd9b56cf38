"""`lockerctl serve`'s e-mail options: every mistake a one-line error before anything starts;
the password file must be private; the message for an alert names no one."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner


def serve(*args, env=None):
    from lockerctl.cli import _load_commands, cli

    _load_commands()
    return CliRunner().invoke(
        cli, ["serve", "--db", "sqlite:///:memory:", *args], env=env, catch_exceptions=False
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alert-to", "a@school.example"], "need --smtp"),
        (["--smtp", "127.0.0.1:25"], "--smtp needs --alert-to"),
        (["--smtp", "127.0.0.1:25", "--alert-to", "not an address"], "is not an e-mail address"),
        (["--smtp", "127.0.0.1:25", "--alert-to", "a@b.example\r\nBcc: x@y"], "not an e-mail"),
        (["--smtp", "mail:x", "--alert-to", "a@b.example"], "bad address"),
        (
            ["--smtp", "mail:25", "--alert-to", "a@b.example", "--smtp-user", "u"],
            "--smtp-user needs a password",
        ),
        (
            ["--smtp", "mail:25", "--alert-to", "a@b.example", "--review-at", "25:00"],
            "expected a time of day HH:MM",
        ),
        (
            ["--smtp", "mail:25", "--alert-to", "a@b.example", "--dashboard-url", "ftp://x"],
            "--dashboard-url must begin",
        ),
    ],
)
def test_bad_mail_options_are_one_line_errors(args, message):
    r = serve(*args, env={"LOCKER_SMTP_PASSWORD": ""})
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output


def test_the_password_file_must_be_private(tmp_path):
    from lockerctl.mailer import MailSettingsError, load_password

    f = tmp_path / "smtp-password"
    f.write_text("s3cret\n")
    os.chmod(f, 0o644)
    with pytest.raises(MailSettingsError, match="readable by others"):
        load_password(str(f))
    os.chmod(f, 0o600)
    assert load_password(str(f)) == "s3cret"
    with pytest.raises(MailSettingsError, match="no such file"):
        load_password(str(tmp_path / "missing"))


def test_an_alerts_message_names_no_one_and_links_to_the_alert():
    from lockerctl.alerts import Alert
    from lockerctl.mailer import alert_message

    a = Alert(
        "event:42", 1_790_000_000, "L1", "door_left_open", "Door left open", bay=3,
        person="P001", name="Pia Pupil", role="pupil", ts=1_790_000_000,
        received_at=1_790_000_300,
    )  # fmt: skip
    m = alert_message(a, "school", "Europe/London", "https://lockers.example/")
    assert m["subject"] == "[classlocker school] Door left open: L1, bay 3"
    assert "Pia" not in m["body"] and "P001" not in m["body"]
    assert "Who: a pupil" in m["body"]
    assert "When: 2026-09-21 15:18:20" in m["body"]  # received by the host
    assert "the locker's own clock said 2026-09-21 15:13:20" in m["body"]  # 5 minutes apart
    assert (
        "https://lockers.example/alerts?kind=door_left_open&locker=L1#alert-event-42" in m["body"]
    )
    assert m["fold_key"] == "door_left_open|L1|3"
