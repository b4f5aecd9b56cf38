"""The walking skeleton, end to end with real parts: a registered locker running the real firmware
on the MicroPython unix port boots, answers on its control port, announces itself on the broker
(retained `status` online, a `boot` event), `lockerctl serve` stores and acknowledges the event
(the locker's `pending` drops to 0), publishes its configuration, and `lockerctl export` shows the
event."""

import csv
import io
import json
import signal
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from harness import lockerctl, wait_for

pytestmark = pytest.mark.slow


def register(db_url, broker, tmp_path, locker_id="L1", bays=4):
    """`lockerctl locker add`, its device.json pointed at this test's broker and directory."""
    out = lockerctl(
        "locker", "add", locker_id, "--bays", bays, "--broker", broker.address, db=db_url
    ).stdout
    device = json.loads(out)
    device["broker"].update(host=broker.host, port=broker.port)
    device["data_dir"] = str(tmp_path / f"data-{locker_id}")
    return device


class Watcher:
    """Subscribes to one locker's topics and keeps what arrives."""

    def __init__(self, broker, locker_id="L1", site="school"):
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:12]}"
        )
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        topic = f"lockers/{site}/{locker_id}/#"
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)  # again on reconnect
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(5)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic.rsplit("/", 1)[1], msg.payload))

    def payloads(self, leaf):
        with self.lock:
            return [p for t, p in self.messages if t == leaf]

    def events(self):
        """Every event published, a batch's members one by one (docs/protocol.md, `event`)."""
        out = []
        for p in self.payloads("event"):
            got = json.loads(p)
            out += got if isinstance(got, list) else [got]
        return out

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_boot_event_is_stored_acknowledged_and_exported(
    tmp_path, broker, db_url, make_locker, make_serve
):
    device = register(db_url, broker, tmp_path)
    watcher = Watcher(broker)
    try:
        locker = make_locker("L1", broker=broker, device=device)
        state = locker.state()
        assert state["locker"] == "L1"
        assert len(state["bays"]) == 4
        assert all(b["locked"] and b["holder"] is None for b in state["bays"])

        wait_for(lambda: b"online" in watcher.payloads("status"), what="status online")
        boot = wait_for(
            lambda: [e for e in watcher.events() if e["type"] == "boot"], what="boot event"
        )[0]
        assert boot["seq"] == 1
        assert set(boot) >= {"seq", "ts", "type", "bay", "person", "by", "reason"}
        assert locker.state()["pending"] >= 1  # nobody has acknowledged it yet

        serve = make_serve(db_url, broker)
        wait_for(lambda: locker.state()["pending"] == 0, timeout=20, what="boot acknowledged")
        assert max(json.loads(p)["seq"] for p in watcher.payloads("ack")) >= 1
        # the configuration the service published reached the locker
        wait_for(lambda: locker.state()["config"] is not None, timeout=20, what="config")
        assert watcher.payloads("config")[-1][:4] == b"CLCF"

        out = lockerctl("export", "--format", "csv", db=db_url).stdout
        rows = list(csv.DictReader(io.StringIO(out)))
        boots = [r for r in rows if r["event"] == "boot" and r["locker"] == "L1"]
        assert [r["seq"] for r in boots] == ["1"]  # once, however often it was sent

        serve.process.kill(signal.SIGTERM)
        assert serve.process.proc.returncode == 0, serve.process.output()
    finally:
        watcher.close()


def test_status_is_retained_and_recorded_by_serve(
    tmp_path, broker, db_url, make_locker, make_serve
):
    device = register(db_url, broker, tmp_path)
    make_locker("L1", broker=broker, device=device)
    watcher = Watcher(broker)  # subscribes after the locker came online: retained status
    try:
        wait_for(lambda: b"online" in watcher.payloads("status"), what="retained status online")
        wait_for(lambda: watcher.payloads("state"), what="retained state")
        state = json.loads(watcher.payloads("state")[-1])
        assert state["locker"] == "L1"
    finally:
        watcher.close()
    make_serve(db_url, broker)
    from lockerctl.store import Store

    def recorded():
        row = Store.open(db_url).locker("school", "L1")
        return row.online and row.state and row.state["locker"] == "L1"

    wait_for(recorded, timeout=10, what="serve records L1 online with its state")


def test_skeleton_on_the_locked_down_broker(tmp_path, db_url, make_locker, make_serve):
    """The same path through the site's own broker configuration (`lockerctl broker config`:
    passwords, ACL, no anonymous access): serve uses the host account recorded in the store,
    the locker its own device.json credentials; the ACL lets each do its part. A serve killed
    without warning and started again picks up where it was."""
    from harness import Broker, free_port

    port = free_port()
    device = register(db_url, Broker(tmp_path, port=port), tmp_path)
    conf_dir = tmp_path / "broker"
    lockerctl("broker", "config", conf_dir, "--listen", f"127.0.0.1:{port}", db=db_url)
    broker = Broker(tmp_path, conf=conf_dir / "mosquitto.conf", port=port).start()
    try:
        locker = make_locker("L1", broker=broker, device=device)
        serve = make_serve(db_url, broker)
        wait_for(lambda: locker.state()["pending"] == 0, timeout=20, what="boot acknowledged")
        wait_for(lambda: locker.state()["config"] is not None, timeout=20, what="config")
        serve.kill()  # SIGKILL: no goodbye
        reply = locker.tap("04A1B2C3")
        assert reply == {"result": "denied", "reason": "unknown_card"}
        wait_for(lambda: locker.state()["pending"] >= 1, what="the denial journaled")
        make_serve(db_url, broker)
        wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="acked after restart")
        out = lockerctl("export", "--format", "jsonl", db=db_url).stdout
        events = [json.loads(line) for line in out.splitlines()]
        denied = [e for e in events if e["event"] == "denied"]
        assert len(denied) == 1 and denied[0]["reason"] == "unknown_card"
    finally:
        broker.kill()


def test_open_reports_what_the_locker_answered(tmp_path, broker, db_url, make_locker, make_serve):
    """`lockerctl open --wait`: an expired command is refused by the locker and the refusal is
    the command's answer (exit 1, one line); a good one reports the bay it opened."""
    import time

    (tmp_path / "roster.csv").write_text(
        "person_id,name,role,year,walk_home,card_uid\n"
        "O001,Olive Office,office,,no,04A5B2C3\n"
        "S001,Sam Staff,staff,,no,04A2B2C3\n"
    )
    lockerctl("roster", "import", tmp_path / "roster.csv", db=db_url)
    device = register(db_url, broker, tmp_path)
    make_serve(db_url, broker)
    locker = make_locker("L1", broker=broker, device=device)
    wait_for(lambda: locker.state()["config"] is not None, timeout=20, what="config")
    locker.clock(int(time.time()) + 3600)  # the locker's clock is an hour ahead of the office
    reply = locker.tap("04A2B2C3")
    assert reply["action"] == "deposit"
    assert locker.door(reply["bay"], "open") == {"ok": True}
    assert locker.door(reply["bay"], "close") == {"ok": True}
    base = ("open", "L1", reply["bay"], "--by", "O001", "--broker", broker.address)
    late = lockerctl(*base, "--reason", "test", "--wait", "15", db=db_url, check=False)
    assert late.returncode == 1
    assert late.stderr.strip() == "lockerctl: L1 rejected the command: expired"
    assert locker.state()["bays"][reply["bay"] - 1]["holder"] == "S001"
    ok = lockerctl(*base, "--reason", "test", "--expires", "7200", "--wait", "15", db=db_url)
    assert f"emergency_open: bay {reply['bay']} opened (holder S001)" in ok.stdout
