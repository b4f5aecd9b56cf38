"""The real firmware's side of authenticated events (docs/protocol.md), against a real broker and
no host: every event carries the journal's id and a MAC that CPython's hmac confirms with the
locker's secret; acks without the host's MAC never make it drop events; a restart keeps the
journal id, a wiped journal gets a new one and starts again at seq 1; the host's signed
checkpoint is kept across a restart and reported in the state."""

import hashlib
import hmac
import json
import secrets
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from harness import MICROPYTHON, ROOT, wait_for
from lockerctl.commands import sign_command

pytestmark = pytest.mark.slow

ROOT_TOPIC = "lockers/school/L1/"
FIELDS = ("seq", "ts", "type", "bay", "person", "by", "reason", "jid")


def mac_of(key_label: bytes, secret: bytes, text: str) -> str:
    key = hmac.new(secret, key_label, hashlib.sha256).digest()
    return hmac.new(key, text.encode(), hashlib.sha256).digest()[:16].hex()


def event_mac(ev: dict, secret: bytes) -> str:
    return mac_of(b"event", secret, "|".join("" if ev[k] is None else str(ev[k]) for k in FIELDS))


WIPE_JOURNAL = """
import os, sys
sys.path.insert(0, sys.argv[2])
from hal.sim import flash as simflash
simflash.mount(sys.argv[1], "/flash", block_count=128)
for name in os.listdir("/flash/journal"):
    os.remove("/flash/journal/" + name)
print("wiped")
"""


def wipe_journal(data_dir: str) -> None:
    """Deletes every file of the journal on the simulated board's flash image and erases its
    journal partition (the image file, made again erased at the next boot), nothing else."""
    out = subprocess.run(
        [str(MICROPYTHON), "-c", WIPE_JOURNAL, f"{data_dir}/flash.img", str(ROOT / "firmware")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "wiped", out.stderr
    (Path(data_dir) / "journal.img").unlink()


class Host:
    """Stands for the host on the broker: records the locker's events, publishes acks and
    commands."""

    def __init__(self, broker):
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(ROOT_TOPIC + "event", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client, userdata, msg):
        got = json.loads(msg.payload)  # one event, or a batch of them (docs/protocol.md)
        with self.lock:
            self.events += got if isinstance(got, list) else [got]

    def seen(self, seq, jid=None):
        with self.lock:
            return [e for e in self.events if e["seq"] == seq and jid in (None, e["jid"])]

    def send(self, leaf, payload):
        self.client.publish(ROOT_TOPIC + leaf, payload, qos=1).wait_for_publish(10)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_events_signed_forged_acks_ignored_journal_id_and_checkpoint(broker, make_locker):
    secret = secrets.token_bytes(32)
    locker = make_locker(broker=broker, secret=secret.hex(), start=False)
    host = Host(broker)  # subscribed before the locker publishes its first event
    try:
        locker.start()
        wait_for(lambda: locker.state()["online"], what="the locker online")
        for uid in ("DEADBEEF", "DEADBEF0"):
            assert locker.tap(uid)["reason"] == "unknown_card"
        wait_for(lambda: host.seen(3), what="boot and two denials")
        sent = [host.seen(seq)[0] for seq in (1, 2, 3)]
        jid = sent[0]["jid"]
        assert len(jid) == 16 and jid == jid.lower() and int(jid, 16) >= 0
        assert [e["type"] for e in sent] == ["boot", "denied", "denied"]
        for ev in sent:
            assert ev["jid"] == jid and ev["mac"] == event_mac(ev, secret)
        assert locker.state()["pending"] == 3

        def ack(seq, jid=jid, key=secret):
            return json.dumps({"seq": seq, "jid": jid, "mac": mac_of(b"ack", key, f"{seq}|{jid}")})

        # Forged acks for everything, then the host's genuine ack of seq 1 only. They arrive in
        # order: once the genuine one has taken effect, the forged ones were seen and ignored.
        other = "0" * 16 if jid != "0" * 16 else "1" * 16
        for forged in (
            json.dumps({"seq": 3}),
            json.dumps({"seq": 3, "jid": jid}),
            json.dumps({"seq": 3, "jid": jid, "mac": "00" * 16}),
            ack(3, key=bytes(32)),
            ack(3, jid=other),
            json.dumps({"seq": 3, "jid": jid, "mac": mac_of(b"ack", secret, f"2|{jid}")}),
        ):
            host.send("ack", forged)
        host.send("ack", ack(1))
        wait_for(lambda: locker.state()["pending"] == 2, what="the genuine ack of seq 1")
        host.send("ack", ack(3))
        wait_for(lambda: locker.state()["pending"] == 0, what="the genuine ack of seq 3")

        # The host's signed checkpoint: kept with the acked mark, reported in the state.
        note = "school.example/classlocker\n7\nq2XgVwFh8hTqCXdL0RfzsGmPTLyn0Y1Qn8Cq2QxkE3A=\n\n"
        note += "\u2014 school.example/classlocker Ab+Zx9w=\n"
        host.send("cmd", sign_command(secret, "L1", 1, "checkpoint", 0, "host", note, 4000000000))
        want = {"note": note, "acked": 3}
        wait_for(lambda: locker.state()["checkpoint"] == want, what="the checkpoint kept")
        assert not host.seen(4)  # not an event

        # A restart keeps the journal: the same id, seq carries on, the checkpoint stays.
        locker.restart()
        wait_for(lambda: host.seen(4), what="the boot event after the restart")
        assert host.seen(4)[0]["jid"] == jid
        assert locker.state()["checkpoint"] == want

        # A wiped journal is a new one: a new id, seq from 1, no checkpoint.
        locker.kill()
        wipe_journal(locker.device["data_dir"])
        locker.start()
        wait_for(lambda: [e for e in host.seen(1) if e["jid"] != jid], what="a new journal")
        fresh = [e for e in host.seen(1) if e["jid"] != jid][0]
        assert fresh["type"] == "boot" and fresh["mac"] == event_mac(fresh, secret)
        assert locker.state()["checkpoint"] is None
        # and an ack for the old journal's seq 1 does not touch the new one's
        host.send("ack", ack(1))
        host.send("ack", ack(1, jid=fresh["jid"]))
        wait_for(lambda: locker.state()["pending"] == 0, what="the new journal's ack")
    finally:
        host.close()
