"""Over-the-air updates end to end (docs/fleet.md): the real firmware on the unix port, mosquitto
and `lockerctl serve`. A → B; B → a broken C → back on B with `update_failed`; a forged and a
downgrade offer refused (`update_rejected`); a download interrupted by a killed locker process
resumes. In each, the trail's `seq` stays contiguous, no event is lost or doubled, and a phone
deposited before the update stays locked in its bay with its holder."""

import json
import shutil

import paho.mqtt.client as mqtt
import pytest
from harness import ROOT, lockerctl, wait_for
from lockerctl import firmware as fw

pytestmark = pytest.mark.slow

STAFF = "04B20001"
BUILD = ROOT / "build" / "firmware"
SETTINGS = {"flash_blocks": 512, "update_confirm_s": 20}


@pytest.fixture
def site(tmp_path, broker, db_url, make_locker, make_serve):
    if not (BUILD / "locker" / "core.mpy").exists():
        pytest.skip("make firmware first")
    (tmp_path / "roster.csv").write_text(
        f"person_id,name,role,year,walk_home,card_uid\nS001,Staff One,staff,,,{STAFF}\n"
    )
    lockerctl("roster", "import", tmp_path / "roster.csv", db=db_url)
    device = json.loads(
        lockerctl("locker", "add", "L1", "--bays", 4, "--broker", broker.address, db=db_url).stdout
    )
    device["broker"].update(host=broker.host, port=broker.port)
    device["data_dir"] = str(tmp_path / "data-L1")
    device["settings"] = dict(SETTINGS)
    serve = make_serve(db_url, broker)
    locker = make_locker("L1", broker=broker, device=device)
    wait_for(lambda: locker.state()["config"] is not None, timeout=20, what="config")
    locker.clock(1795508400)
    # a phone in bay: it must stay locked with its holder through every update
    r = locker.tap(STAFF)
    assert r["result"] == "granted" and r["action"] == "deposit"
    locker.door(r["bay"], "open")
    locker.door(r["bay"], "close")
    return {"locker": locker, "serve": serve, "device": device, "bay": r["bay"], "db": db_url}


def build(tmp_path, name, broken=False):
    """A copy of the build; `broken` makes its app raise at start."""
    out = tmp_path / name
    shutil.copytree(BUILD, out)
    if broken:
        (out / "app.mpy").unlink()
        (out / "app.py").write_text("raise RuntimeError('broken build')\n")
    return out


def publish(db_url, broker, directory, version, check=True):
    return lockerctl(
        "firmware", "publish", directory, "--version", version, "--broker", broker.address,
        db=db_url, check=check,
    )  # fmt: skip


def trail(db_url):
    out = lockerctl("export", "--format", "jsonl", "--locker", "L1", db=db_url).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def settled(db_url, locker):
    """Every event the locker journaled is in the trail (pending 0), seq contiguous from 1,
    none twice. Returns the trail."""
    wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="events acknowledged")
    events = trail(db_url)
    seqs = sorted(int(e["seq"]) for e in events)
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    return events


def held(s):
    state = s["locker"].state()
    bay = state["bays"][s["bay"] - 1]
    assert bay["locked"] and bay["holder"] == "S001"
    return state


def wait_version(locker, version, timeout=60):
    def ok():
        try:
            return locker.state()["version"] == version
        except (OSError, ConnectionError, ValueError):
            locker._close()
            return False

    wait_for(ok, timeout=timeout, interval=0.3, what=f"version {version}")


def types(events):
    return [(e["event"], e["reason"]) for e in events]


def test_a_to_b_then_broken_c_rolls_back_to_b(tmp_path, broker, site):
    locker, db = site["locker"], site["db"]
    assert locker.state()["version"] == "0.2.0"
    publish(db, broker, build(tmp_path, "B"), "1.0.0")
    wait_version(locker, "1.0.0")
    state = held(site)
    assert state["reset_cause"] == "update"
    wait_for(
        lambda: locker.state()["update"] == {"offered": None, "progress": None, "failed": None},
        timeout=20,
        what="B confirmed",
    )
    events = settled(db, locker)
    assert ("updated", "1.0.0") in types(events)

    # B -> C, whose app raises at start: the boot loader goes back to B
    publish(db, broker, build(tmp_path, "C", broken=True), "1.1.0")
    wait_for(
        lambda: any(e["event"] == "update_failed" for e in trail(db)),
        timeout=60,
        interval=0.5,
        what="update_failed",
    )
    wait_version(locker, "1.0.0")
    state = held(site)
    assert state["update"]["failed"] == "1.1.0"
    events = settled(db, locker)
    kinds = types(events)
    assert ("updated", "1.1.0") in kinds and kinds.count(("update_failed", "1.1.0")) == 1
    # the retained offer of C is not taken again
    locker.send("tick")
    assert locker.state()["version"] == "1.0.0"
    out = lockerctl("firmware", "status", db=db).stdout
    assert "1.0.0" in out and "1.1.0" in out


def test_forged_and_downgrade_offers_are_refused(tmp_path, broker, site):
    locker, db = site["locker"], site["db"]
    files = fw.collect_build(build(tmp_path, "F"), "9.0.0")
    forged = fw.sign_offer(b"\x07" * 32, fw.manifest("L1", "school", "9.0.0", files))
    older = fw.sign_offer(
        bytes.fromhex(site["device"]["secret"]),
        fw.manifest("L1", "school", "0.1.0", fw.collect_build(BUILD, "0.1.0")),
    )
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for n, payload in enumerate((forged, older), start=1):
            topic = "lockers/school/L1/firmware"
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
            wait_for(
                lambda: sum(e["event"] == "update_rejected" for e in trail(db)) == n,  # noqa: B023
                timeout=20,
                what="update_rejected",
            )
    finally:
        client.loop_stop()
        client.disconnect()
    events = settled(db, locker)
    rejected = [e["reason"] for e in events if e["event"] == "update_rejected"]
    assert rejected == ["bad_signature", "downgrade"]
    # the retained downgrade offer comes again after a restart: no second event
    locker.restart()
    wait_for(lambda: locker.state()["online"], timeout=20, what="online again")
    events = settled(db, locker)
    assert [e["reason"] for e in events if e["event"] == "update_rejected"] == rejected
    assert locker.state()["version"] == "0.2.0"
    held(site)
    # the command line refuses a version not newer than what a locker runs
    r = publish(db, broker, BUILD, "0.2", check=False)
    assert r.returncode != 0 and "not newer" in r.stderr and len(r.stderr.splitlines()) == 1


def test_interrupted_download_resumes(tmp_path, broker, site):
    locker, db = site["locker"], site["db"]
    big = build(tmp_path, "D")
    (big / "pad.bin").write_bytes(bytes(range(256)) * 400)  # 100 KB more to fetch
    publish(db, broker, big, "2.0.0")

    def partway():
        u = locker.state()["update"]
        return u["progress"] is not None and 0.1 <= u["progress"] < 0.9

    wait_for(partway, timeout=30, interval=0.02, what="download under way")
    locker.kill()  # a power cut mid-download
    locker.start()
    wait_version(locker, "2.0.0", timeout=90)
    held(site)
    events = settled(db, locker)
    kinds = [e["event"] for e in events]
    assert kinds.count("updated") == 1 and "update_rejected" not in kinds
    assert kinds.count("boot") == 3  # first start, after the kill, after the switch
