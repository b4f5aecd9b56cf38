"""The command line of single sign-on and metrics: `user add --sso` and the `serve --oidc-*`,
`--metrics-token-file` options; every bad value a one-line error, nothing changed."""

from __future__ import annotations

import re

import pytest
from harness import lockerctl


def fails(*args, db, input=None) -> str:
    proc = lockerctl(*args, db=db, input=input, check=False)
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'lockers.db'}"


def test_user_add_sso(db):
    out = lockerctl("user", "add", "Head@School.Example", "--role", "slt", "--sso", db=db).stdout
    assert "head@school.example added" in out
    listing = lockerctl("user", "list", db=db).stdout
    assert re.search(r"head@school\.example\s+slt\s+-\s+sso", listing)
    # The same address in another case is the same account.
    assert "already exists" in fails(
        "user", "add", "HEAD@school.example", "--role", "office", "--sso", db=db
    )
    assert "not an e-mail address" in fails(
        "user", "add", "not-an-address", "--role", "office", "--sso", db=db
    )
    assert "not an e-mail address" in fails(
        "user", "add", "a" * 60 + "@school.example", "--role", "office", "--sso", db=db
    )
    assert "no password" in fails(
        "user",
        "add",
        "x@school.example",
        "--role",
        "office",
        "--sso",
        "--password-stdin",
        db=db,
        input="a long password\n",
    )
    # No password can be set on it, and none signs it in.
    assert "has no password" in fails(
        "user", "passwd", "head@school.example", "--password-stdin", db=db, input="password1\n"
    )
    from lockerctl.accounts import Accounts
    from lockerctl.store import Store

    store = Store.open(db)
    try:
        accounts = Accounts(store, "school")
        assert accounts.authenticate("head@school.example", "sso") is None
        assert accounts.sso_user("HEAD@SCHOOL.EXAMPLE").role == "slt"
        assert accounts.sso_user("other@school.example") is None
        actions = [a for a in store.trail_actions("school") if a["action"] == "user_add"]
        assert actions[0]["detail"] == {
            "username": "head@school.example",
            "role": "slt",
            "person": None,
            "sso": True,
        }
    finally:
        store.close()
    assert len(lockerctl("user", "list", db=db).stdout.splitlines()) == 2  # nothing else added


def test_serve_options_are_checked_before_anything_starts(db, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    oidc = ["--oidc-client-id", "app", "--oidc-client-secret-file", str(secret)]
    http = ["--http", "127.0.0.1:0"]
    assert "go together" in fails("serve", *http, "--oidc-issuer", "https://idp.example", db=db)
    assert "needs --http" in fails("serve", "--oidc-issuer", "https://idp.example", *oidc, db=db)
    assert "must use https" in fails(
        "serve", *http, "--oidc-issuer", "http://idp.example", *oidc, db=db
    )
    assert "not an https:// URL" in fails(
        "serve", *http, "--oidc-issuer", "idp.example", *oidc, db=db
    )
    missing = ["--oidc-client-id", "app", "--oidc-client-secret-file", str(tmp_path / "none")]
    assert "no such file" in fails(
        "serve", *http, "--oidc-issuer", "https://idp.example", *missing, db=db
    )
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "client secret alone" in fails(
        "serve",
        *http,
        "--oidc-issuer",
        "https://idp.example",
        "--oidc-client-id",
        "app",
        "--oidc-client-secret-file",
        str(empty),
        db=db,
    )
    short = tmp_path / "token"
    short.write_text("short\n")
    assert "16 or more" in fails("serve", *http, "--metrics-token-file", str(short), db=db)
    assert "needs --http" in fails("serve", "--metrics-token-file", str(short), db=db)
