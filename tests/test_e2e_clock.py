"""A clock kept right without anyone typing `clock` (issue 11), end to end: the real firmware on
the unix port, mosquitto, `lockerctl serve`. A new locker with no clock gets the host's time
within 10 s of being online (through the site's locked-down broker: the ACL lets the host read
`state` and the locker read its own `cmd`); what it journaled before has the host's receipt time
in the export, marked as such; a replayed or stale time answer moves no clock."""

import json
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from harness import Broker, free_port, lockerctl, wait_for
from lockerctl.commands import sign_command
from lockerctl.store import Store
from test_e2e_skeleton import Watcher, register

pytestmark = pytest.mark.slow


def test_a_new_locker_takes_the_hosts_time(tmp_path, db_url, make_locker, make_serve):
    port = free_port()
    device = register(db_url, Broker(tmp_path, port=port), tmp_path)
    conf_dir = tmp_path / "broker"
    lockerctl("broker", "config", conf_dir, "--listen", f"127.0.0.1:{port}", db=db_url)
    broker = Broker(tmp_path, conf=conf_dir / "mosquitto.conf", port=port).start()
    try:
        make_serve(db_url, broker)
        locker = make_locker("L1", broker=broker, device=device)
        assert "clock" not in device.get("sim", {})
        online = time.monotonic()
        wait_for(lambda: locker.state()["online"], timeout=10, what="online")
        wait_for(lambda: locker.state()["clock_ok"], timeout=10, what="the host's time")
        assert time.monotonic() - online < 10 + 1  # (wait_for above bounds it already)
        state = locker.state()
        assert state["clock_nonce"] is None
        assert abs(state["time"] - time.time()) <= 2
        # the boot event was journaled before the clock was known: the export shows when the
        # host received it, and says so
        wait_for(lambda: locker.state()["pending"] == 0, timeout=20, what="events acked")
        out = lockerctl("export", "--format", "jsonl", db=db_url).stdout
        boot = [json.loads(line) for line in out.splitlines() if '"boot"' in line][0]
        assert boot["ts"] is None and boot["time_source"] == "received" and boot["time"]
        csv_out = lockerctl("export", "--format", "csv", db=db_url).stdout.splitlines()
        assert csv_out[0].startswith("time,locker,bay,event,person_id,name,role,by,reason,seq")
        header = csv_out[0].split(",")
        row = next(line for line in csv_out if ",boot," in line).split(",")
        assert row[0] and row[header.index("time_source")] == "received"
        # the host measures the locker's offset from its live states
        wait_for(
            lambda: "L1" in Store.open(db_url).clock_offsets("school"),
            timeout=40,
            what="the clock offset recorded",
        )
        assert abs(Store.open(db_url).clock_offsets("school")["L1"][0]) <= 3
    finally:
        broker.kill()


def test_a_replayed_or_stale_time_answer_moves_no_clock(
    tmp_path, broker, db_url, make_locker, make_serve
):
    device = register(db_url, broker, tmp_path)
    watcher = Watcher(broker)
    try:
        serve = make_serve(db_url, broker)
        locker = make_locker("L1", broker=broker, device=device)
        wait_for(lambda: locker.state()["clock_ok"], timeout=10, what="the host's time")
        answers = [json.loads(p) for p in watcher.payloads("cmd")]
        answer = next(a for a in answers if a["op"] == "time")
        old_nonce = answer["reason"].split()[0]
        serve.kill()

        locker.restart()  # the clock is unknown again; a new nonce
        wait_for(lambda: locker.state()["online"], timeout=15, what="online again")
        assert locker.state()["clock_ok"] is False
        new_nonce = locker.state()["clock_nonce"]
        assert new_nonce and new_nonce != old_nonce

        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex}")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        try:
            topic = "lockers/school/L1/cmd"
            # the old answer itself, replayed
            pub.publish(topic, json.dumps(answer).encode(), qos=1).wait_for_publish(5)
            # a genuine, newer answer to the old nonce (as if held back by someone): refused
            secret = bytes.fromhex(device["secret"])
            stale = sign_command(
                secret, "L1", answer["id"] + 100, "time", 0, "host", f"{old_nonce} 1000000000",
                int(time.time()) + 60,
            )  # fmt: skip
            pub.publish(topic, stale, qos=1).wait_for_publish(5)
        finally:
            pub.loop_stop()
            pub.disconnect()

        def rejected():
            return [e["reason"] for e in watcher.events() if e["type"] == "cmd_rejected"]

        wait_for(lambda: len(rejected()) >= 2, timeout=15, what="both answers refused")
        assert rejected() == ["wrong_nonce", "wrong_nonce"]  # the nonce asked for is a new one
        assert all(
            e["by"] == "host" for e in watcher.events() if e["type"] == "cmd_rejected"
        )  # who sent it is recorded
        assert locker.state()["clock_ok"] is False

        make_serve(db_url, broker)  # the host's next answer is fresh: taken
        wait_for(lambda: locker.state()["clock_ok"], timeout=10, what="the host's time again")
        assert abs(locker.state()["time"] - time.time()) <= 2
    finally:
        watcher.close()
