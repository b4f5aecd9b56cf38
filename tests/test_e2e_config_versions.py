"""Configuration changes the lockers cannot take are refused where they are made, and the site's
configuration version never goes backwards, end to end: real mosquitto, the real firmware on the
MicroPython unix port, the real `lockerctl` and `lockerctl serve`.

- A roster whose bundle would exceed what a locker takes is refused at import with a one-line
  reason naming the limit; nothing is imported, and a later `card revoke` still reaches the
  locker (the reported case: 2,810 cards accepted, every later change rejected as `too_large`,
  a revoked card still retrieving its phone).
- A database restored from a backup (its version below what the lockers run) does not leave the
  lockers ignoring new bundles as `stale`: the next change is applied and a revoked card is
  refused at the locker.
- A locker that stays behind the current configuration while online is an alert that names the
  reason the locker gave.
"""

from __future__ import annotations

import json
import sqlite3
import time

from harness import lockerctl, wait_for

SITE = "school"
CARDS = {"pia": "04A1B2C3", "pat": "04A2B2C3", "hana_fob": "04C2B2C3"}
ROSTER = f"""person_id,name,role,year,walk_home,card_uid
P001,Pia Pupil,pupil,6,yes,{CARDS["pia"]}
P002,Pat Pupil,pupil,4,no,{CARDS["pat"]}
H001,Hana Head,slt,,no,{CARDS["hana_fob"]}
"""


def big_roster(n: int) -> str:
    """ROSTER plus `n` more pupils, one card each."""
    lines = [ROSTER.rstrip("\n")]
    lines += [f"X{i:05d},Pupil {i},pupil,3,no,{0x10000000 + i:08X}" for i in range(n)]
    return "\n".join(lines) + "\n"


def store(db_url):
    from lockerctl.store import Store

    return Store.open(db_url)


def site_version(db_url) -> int:
    st = store(db_url)
    try:
        return st.config_version(SITE)
    finally:
        st.close()


def start(tmp_path, broker, db_url, make_locker, make_serve, settings=None):
    (tmp_path / "roster.csv").write_text(ROSTER)
    lockerctl("roster", "import", tmp_path / "roster.csv", db=db_url)
    device = json.loads(
        lockerctl("locker", "add", "L1", "--bays", 4, "--broker", broker.address, db=db_url).stdout
    )
    device["data_dir"] = str(tmp_path / "data-L1")
    if settings:
        device["settings"] = settings
    locker = make_locker("L1", broker=broker, device=device)
    locker.clock(int(time.time()))
    serve = make_serve(db_url, broker)
    at_version(locker, site_version(db_url))
    return locker, serve


def at_version(locker, version: int) -> None:
    wait_for(
        lambda: (locker.state()["config"] or 0) >= version,
        timeout=30,
        what=f"config v{version} at the locker",
    )


def reported(db_url, version: int) -> None:
    """Waits until the store holds the locker's state reporting `version`."""

    def seen():
        st = store(db_url)
        try:
            row = st.locker(SITE, "L1")
        finally:
            st.close()
        return isinstance(row.state, dict) and row.state.get("config") == version

    wait_for(seen, timeout=30, what=f"the locker's state reporting v{version} in the store")


def can_deposit(locker, who: str) -> bool:
    reply = locker.tap(CARDS[who])
    if reply.get("result") != "granted":
        return False
    bay = reply["bay"]
    assert locker.door(bay, "open") == {"ok": True}
    assert locker.door(bay, "close") == {"ok": True}
    return True


def test_a_roster_too_big_for_the_lockers_is_refused_and_revocations_still_apply(
    tmp_path, broker, db_url, make_locker, make_serve
):
    locker, _ = start(tmp_path, broker, db_url, make_locker, make_serve)
    before = site_version(db_url)
    (tmp_path / "huge.csv").write_text(big_roster(12_000))
    out = lockerctl("roster", "import", tmp_path / "huge.csv", db=db_url, check=False)
    assert out.returncode == 1
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "the configuration for L1 would be" in err and "at most 524,288" in err, err
    st = store(db_url)
    try:
        assert len(st.roster(SITE)) == 3  # nothing imported
        assert st.config_version(SITE) == before
    finally:
        st.close()
    # The revocation reaches the locker: the card is refused there.
    lockerctl("card", "revoke", "P001", db=db_url)
    at_version(locker, before + 1)
    assert locker.tap(CARDS["pia"]) == {"result": "denied", "reason": "revoked"}
    assert can_deposit(locker, "pat")


def test_a_database_restored_from_a_backup_does_not_make_the_lockers_ignore_changes(
    tmp_path, broker, db_url, make_locker, make_serve
):
    locker, serve = start(tmp_path, broker, db_url, make_locker, make_serve)
    path = db_url.removeprefix("sqlite:///")
    backup = tmp_path / "backup.db"
    src, dst = sqlite3.connect(path), sqlite3.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    old = site_version(db_url)
    # The school carries on: several changes the backup does not hold.
    for other in ("L2", "L3", "L4"):
        lockerctl("locker", "add", other, "--bays", 4, db=db_url)
    ahead = site_version(db_url)
    assert ahead > old
    at_version(locker, ahead)
    reported(db_url, ahead)
    # The disk fails; the database is restored from last night's backup.
    serve.kill()
    src, dst = sqlite3.connect(backup), sqlite3.connect(path)
    src.backup(dst)
    src.close()
    dst.close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"lockers.db{suffix}").unlink(missing_ok=True)
    assert site_version(db_url) == old < ahead
    make_serve(db_url, broker)
    # A card revoked now is refused at the locker: the new bundle is not `stale` there.
    # (Whether serve has heard the locker report its version before the change is made or
    # only after, the version published ends up above the one the locker runs.)
    lockerctl("card", "revoke", "P001", db=db_url)
    at_version(locker, ahead + 1)
    assert site_version(db_url) > ahead
    assert locker.tap(CARDS["pia"]) == {"result": "denied", "reason": "revoked"}
    assert can_deposit(locker, "pat")


def test_a_lower_site_version_is_raised_by_serve_without_a_change(
    tmp_path, broker, db_url, make_locker, make_serve
):
    locker, serve = start(tmp_path, broker, db_url, make_locker, make_serve)
    running = site_version(db_url)
    reported(db_url, running)
    serve.kill()
    # The site's version set back (what a restore does), with a card revoked in the database
    # only: serve itself puts the version above the locker's and the locker takes it.
    path = db_url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    con.execute("update sites set config_version = 1 where name = ?", (SITE,))
    con.execute("update cards set revoked = 1 where person_id = 'P001'")
    con.commit()
    con.close()
    make_serve(db_url, broker)
    wait_for(lambda: site_version(db_url) > running, timeout=30, what="the version raised")
    at_version(locker, running + 1)
    assert locker.tap(CARDS["pia"]) == {"result": "denied", "reason": "revoked"}
    st = store(db_url)
    try:
        raised = [a for a in st.trail_actions(SITE, 50) if a["action"] == "config_version_raised"]
    finally:
        st.close()
    assert raised and raised[-1]["detail"]["reported"] == running


def test_a_locker_behind_the_configuration_is_an_alert_naming_its_reason(
    tmp_path, broker, db_url, make_locker, make_serve
):
    from lockerctl import alerts

    # This locker takes bundles of at most 4 KiB: a roster of 100 cards is too large for it
    # (though well within what the host allows).
    locker, _ = start(
        tmp_path, broker, db_url, make_locker, make_serve, settings={"max_config_bytes": 4096}
    )
    running = site_version(db_url)
    (tmp_path / "more.csv").write_text(big_roster(100))
    lockerctl("roster", "import", tmp_path / "more.csv", db=db_url)
    current = site_version(db_url)

    def rejected():
        st = store(db_url)
        try:
            evs = list(st.events(SITE, types=["config_rejected"]))
        finally:
            st.close()
        return evs

    wait_for(rejected, timeout=30, what="the locker's config_rejected event")
    assert locker.state()["config"] == running
    st = store(db_url)
    try:
        wait_for(
            lambda: st.locker(SITE, "L1").online, timeout=10, what="the locker online in store"
        )
        soon, _ = alerts.compute(st, SITE, {}, now=time.time())
        later, _ = alerts.compute(st, SITE, {}, now=time.time() + alerts.CONFIG_GRACE + 5)
    finally:
        st.close()
    assert not [a for a in soon if a.kind == "config_behind"]  # it may still be loading it
    (alert,) = [a for a in later if a.kind == "config_behind"]
    assert alert.key == "config:L1" and alert.locker == "L1"
    assert "too large" in alert.detail  # plain words (issue 16), not `too_large`
    assert (
        f"runs configuration {running}" in alert.detail and f"current is {current}" in alert.detail
    )
