"""`lockerctl broker config` and `lockerctl locker rekey` against a real mosquitto started on the
generated files: anonymous and wrong passwords refused, each locker confined to its own topic root,
the host account able to do its job, oversized payloads dropped, TLS with the site CA, rekeying
that locks the old password out after a reload (SIGHUP)."""

import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Broker, free_port, lockerctl, wait_for  # noqa: E402
from lockerctl import broker as brokerlib  # noqa: E402
from lockerctl.store import Store  # noqa: E402

SITE = "school"


class Client:
    """A paho client that records what it receives; `ok` tells whether the broker let it in."""

    def __init__(self, port, user=None, password=None, tls_ca=None, host="127.0.0.1"):
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.reason = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}"
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(60, 60)  # a refused client must not retry in the test
        self.client.connect(host, port)
        self.client.loop_start()
        wait_for(lambda: self.reason is not None, timeout=10, what="CONNACK")
        self.ok = not self.reason.is_failure

    def _on_connect(self, client, userdata, flags, reason, props):
        self.reason = reason
        if not reason.is_failure:
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason, props):
        if self.reason is None:
            self.reason = reason
        self.disconnected.set()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def subscribe(self, *topics):
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe([(t, 1) for t in topics])
        assert done.wait(5), "no SUBACK"

    def publish(self, topic, payload, retain=False):
        # QoS 1: mosquitto answers PUBACK even when the ACL drops the message.
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def wait_message(self, topic, payload, timeout=10):
        with self.cond:
            ok = self.cond.wait_for(lambda: (topic, payload) in self.messages, timeout)
        assert ok, f"{topic} {payload!r} never arrived; got {self.messages}"

    def received(self, topic):
        return [p for t, p in self.messages if t == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def make_site(tmp: Path, lockers=("L1", "L2")) -> str:
    db = f"sqlite:///{tmp / 'lockers.db'}"
    st = Store.open(db)
    for i, locker_id in enumerate(lockers):
        st.add_locker(SITE, locker_id, 8, os.urandom(32), f"pw-{locker_id}-{i}xyz")
    st.close()
    return db


def passwords(db: str) -> dict:
    st = Store.open(db)
    try:
        out = {r.id: r.broker_password for r in st.lockers(SITE)}
        out["host"] = st.broker_credentials(SITE)
        return out
    finally:
        st.close()


@pytest.fixture(scope="module")
def site_broker(tmp_path_factory):
    """Two lockers, the generated configuration, mosquitto running on it."""
    tmp = tmp_path_factory.mktemp("broker")
    db = make_site(tmp)
    port = free_port()
    conf_dir = tmp / "mqtt"
    out = lockerctl("broker", "config", conf_dir, "--listen", f"127.0.0.1:{port}", db=db)
    assert "wrote" in out.stdout
    b = Broker(tmp, conf=conf_dir / "mosquitto.conf", port=port).start()
    pw = passwords(db)
    clients = []

    def connect(user=None, password=None):
        c = Client(port, user, password)
        clients.append(c)
        return c

    yield {"broker": b, "db": db, "dir": conf_dir, "pw": pw, "connect": connect, "tmp": tmp}
    for c in clients:
        c.close()
    b.kill()


def test_anonymous_and_wrong_passwords_are_refused(site_broker):
    connect, pw = site_broker["connect"], site_broker["pw"]
    assert not connect().ok
    assert not connect("L1", "wrong").ok
    assert not connect("L1", pw["L2"]).ok  # another locker's password
    assert not connect("nobody", "x").ok
    assert connect("L1", pw["L1"]).ok
    host_user, host_pw = pw["host"]
    assert host_user == "lockerctl-school"
    assert connect(host_user, host_pw).ok


def test_a_locker_publishes_only_under_its_own_root(site_broker):
    connect, pw = site_broker["connect"], site_broker["pw"]
    host = connect(*pw["host"])
    host.subscribe(f"lockers/{SITE}/+/event", f"lockers/{SITE}/+/state")
    l1 = connect("L1", pw["L1"])
    # Forged into another locker's trail: dropped silently (still acknowledged by the broker).
    l1.publish(f"lockers/{SITE}/L2/event", b'{"seq": 1, "forged": true}')
    l1.publish(f"lockers/{SITE}/L2/state", b'{"forged": true}')
    l1.publish("lockers/other/L1/event", b'{"seq": 1, "other site": true}')
    # Then its own event, which arrives: everything published before it had its chance.
    l1.publish(f"lockers/{SITE}/L1/event", b'{"seq": 1}')
    host.wait_message(f"lockers/{SITE}/L1/event", b'{"seq": 1}')
    assert host.received(f"lockers/{SITE}/L2/event") == []
    assert host.received(f"lockers/{SITE}/L2/state") == []


def test_a_locker_reads_only_its_own_commands_and_cannot_forge_them(site_broker):
    connect, pw = site_broker["connect"], site_broker["pw"]
    host = connect(*pw["host"])
    l1 = connect("L1", pw["L1"])
    l2 = connect("L2", pw["L2"])
    l1.subscribe(f"lockers/{SITE}/L2/cmd", f"lockers/{SITE}/#", "#")
    l1.subscribe(f"lockers/{SITE}/L1/cmd", f"lockers/{SITE}/L1/ack")
    l2.subscribe(f"lockers/{SITE}/L2/cmd", f"lockers/{SITE}/L2/ack")
    # L1 forges an ack and a command for L2 and for itself: nobody receives them.
    l1.publish(f"lockers/{SITE}/L2/cmd", b"forged-cmd")
    l1.publish(f"lockers/{SITE}/L2/ack", b'{"seq": 999}')
    l1.publish(f"lockers/{SITE}/L1/ack", b'{"seq": 999}')
    host.publish(f"lockers/{SITE}/L2/cmd", b"open-L2")
    host.publish(f"lockers/{SITE}/L1/cmd", b"open-L1")
    host.publish(f"lockers/{SITE}/L2/ack", b'{"seq": 3}')
    l1.wait_message(f"lockers/{SITE}/L1/cmd", b"open-L1")
    l2.wait_message(f"lockers/{SITE}/L2/cmd", b"open-L2")
    l2.wait_message(f"lockers/{SITE}/L2/ack", b'{"seq": 3}')
    assert l2.received(f"lockers/{SITE}/L2/cmd") == [b"open-L2"]
    assert l2.received(f"lockers/{SITE}/L2/ack") == [b'{"seq": 3}']
    assert [t for t, _ in l1.messages] == [f"lockers/{SITE}/L1/cmd"] * len(l1.messages)
    assert l1.received(f"lockers/{SITE}/L1/cmd") == [b"open-L1"]


def test_the_host_account_does_its_job_and_no_more(site_broker):
    connect, pw = site_broker["connect"], site_broker["pw"]
    host = connect(*pw["host"])
    watcher = connect(*pw["host"])
    watcher.subscribe(f"lockers/{SITE}/+/event", f"lockers/{SITE}/+/status")
    l1 = connect("L1", pw["L1"])
    l1.subscribe(f"lockers/{SITE}/L1/config", f"lockers/{SITE}/L1/ack")
    host.publish(f"lockers/{SITE}/L1/config", b"CLCF-bundle", retain=True)
    host.publish(f"lockers/{SITE}/L1/ack", b'{"seq": 1}')
    l1.wait_message(f"lockers/{SITE}/L1/config", b"CLCF-bundle")
    l1.wait_message(f"lockers/{SITE}/L1/ack", b'{"seq": 1}')
    # The host cannot write events into the trail in a locker's name.
    host.publish(f"lockers/{SITE}/L1/event", b'{"seq": 77, "by host": true}')
    l1.publish(f"lockers/{SITE}/L1/status", b"online", retain=True)
    watcher.wait_message(f"lockers/{SITE}/L1/status", b"online")
    assert watcher.received(f"lockers/{SITE}/L1/event") == []
    # A retained config is there for a locker that connects later.
    late = connect("L1", pw["L1"])
    late.subscribe(f"lockers/{SITE}/L1/config")
    late.wait_message(f"lockers/{SITE}/L1/config", b"CLCF-bundle")


def test_an_oversized_message_is_dropped(site_broker):
    connect, pw = site_broker["connect"], site_broker["pw"]
    conf = (site_broker["dir"] / "mosquitto.conf").read_text()
    limit = int(conf.split("message_size_limit ")[1].split()[0])
    assert limit >= brokerlib.DEFAULT_MESSAGE_LIMIT
    host = connect(*pw["host"])
    l2 = connect("L2", pw["L2"])
    l2.subscribe(f"lockers/{SITE}/L2/cmd")
    host.publish(f"lockers/{SITE}/L2/cmd", b"x" * (limit + 1))
    host.publish(f"lockers/{SITE}/L2/cmd", b"y" * limit)
    host.publish(f"lockers/{SITE}/L2/cmd", b"after")
    l2.wait_message(f"lockers/{SITE}/L2/cmd", b"after")
    sizes = [len(p) for p in l2.received(f"lockers/{SITE}/L2/cmd")]
    assert sizes == [limit, 5]


def test_generated_files_are_private_and_well_formed(site_broker):
    d, pw = site_broker["dir"], site_broker["pw"]
    for name in ("passwd", "acl", "mosquitto.conf"):
        mode = (d / name).stat().st_mode
        assert not mode & stat.S_IRWXO, f"{name} is open to others"
    assert not (d / "passwd").stat().st_mode & stat.S_IRWXG
    lines = (d / "passwd").read_text().splitlines()
    users = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in lines}
    assert set(users) == {"L1", "L2", "lockerctl-school"}
    assert brokerlib.check_password(pw["L1"], users["L1"])
    assert not brokerlib.check_password(pw["L2"], users["L1"])
    assert pw["L1"] not in (d / "passwd").read_text()
    conf = (d / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf
    # The store records the host account: later commands (serve, open) use it.
    assert pw["host"][0] == "lockerctl-school" and len(pw["host"][1]) >= 24


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_hashes_match_mosquitto_passwd(tmp_path):
    f = tmp_path / "pw"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(f), "u", "s3cret"], check=True, capture_output=True
    )
    theirs = f.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$101$")
    assert brokerlib.check_password("s3cret", theirs)
    assert not brokerlib.check_password("s3creT", theirs)
    # Ours has the same shape (iterations, 12-byte salt, 64-byte hash).
    ours = brokerlib.hash_password("s3cret")
    parts = ours.split("$")
    assert parts[:3] == ["", "7", "101"] and len(parts[3]) == 16 and len(parts[4]) == 88


def test_rerun_keeps_the_host_account_and_bad_input_changes_nothing(tmp_path):
    db = make_site(tmp_path)
    d = tmp_path / "mqtt"
    lockerctl("broker", "config", d, db=db)
    first = passwords(db)["host"]
    acl = (d / "acl").read_text()
    lockerctl("broker", "config", d, db=db)
    assert passwords(db)["host"] == first
    for args, word in [
        (["--listen", "127.0.0.1:http"], "--listen"),
        (["--renew"], "--tls"),
        (["--site", "a/b"], "site"),
        (["--message-limit", "2000"], "smaller"),
    ]:
        if word == "smaller":
            st = Store.open(db)
            rows = [
                {
                    "person_id": f"P{i}",
                    "name": f"N {i}",
                    "role": "staff",
                    "year": 0,
                    "walk_home": False,
                    "card_uid": f"{i:08X}",
                }
                for i in range(50)
            ]
            st.replace_roster(SITE, rows)
            st.close()
        r = lockerctl("broker", "config", d, *args, db=db, check=False)
        assert r.returncode != 0, args
        assert r.stderr.count("\n") == 1 and word in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert (d / "acl").read_text() == acl
    r = lockerctl("broker", "config", d, "--new-host-password", db=db)
    new = passwords(db)["host"]
    assert new[0] == first[0] and new[1] != first[1]


def test_tls_listener_with_the_site_ca(tmp_path):
    db = make_site(tmp_path)
    d = tmp_path / "mqtt"
    port, local = free_port(), free_port()
    lockerctl(
        "broker",
        "config",
        d,
        "--tls",
        "--listen",
        f"127.0.0.1:{port}",
        "--local-port",
        local,
        db=db,
    )
    assert not (d / "ca.key").stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    b = Broker(tmp_path, conf=d / "mosquitto.conf", port=port).start()
    clients = []
    try:
        pw = passwords(db)
        c = Client(port, "L1", pw["L1"], tls_ca=d / "ca.crt")
        clients.append(c)
        assert c.ok
        # The host tools' plain listener on loopback.
        h = Client(local, *pw["host"])
        clients.append(h)
        assert h.ok
        # A client that does not trust the site CA does not get in.
        other = tmp_path / "other-ca.crt"
        other.write_bytes(brokerlib.make_ca("elsewhere")[1])
        with pytest.raises(ssl.SSLError):
            Client(port, "L1", pw["L1"], tls_ca=other)
    finally:
        for c in clients:
            c.close()
        b.kill()
    # Re-running keeps the CA and the server certificate; --renew reissues only the latter.
    ca, crt = (d / "ca.crt").read_bytes(), (d / "server.crt").read_bytes()
    lockerctl(
        "broker",
        "config",
        d,
        "--tls",
        "--listen",
        f"127.0.0.1:{port}",
        "--local-port",
        local,
        db=db,
    )
    assert (d / "ca.crt").read_bytes() == ca and (d / "server.crt").read_bytes() == crt
    lockerctl(
        "broker",
        "config",
        d,
        "--tls",
        "--listen",
        f"127.0.0.1:{port}",
        "--local-port",
        local,
        "--renew",
        db=db,
    )
    assert (d / "ca.crt").read_bytes() == ca and (d / "server.crt").read_bytes() != crt
    # The CA key moved offline: the configuration is still written, but nothing can be issued.
    crt = (d / "server.crt").read_bytes()
    (d / "ca.key").rename(tmp_path / "ca.key.offline")
    lockerctl(
        "broker",
        "config",
        d,
        "--tls",
        "--listen",
        f"127.0.0.1:{port}",
        "--local-port",
        local,
        db=db,
    )
    assert not (d / "ca.key").exists() and (d / "server.crt").read_bytes() == crt
    r = lockerctl("broker", "config", d, "--tls", "--renew", db=db, check=False)
    assert r.returncode != 0 and "CA key" in r.stderr and r.stderr.count("\n") == 1
    assert (d / "server.crt").read_bytes() == crt


def test_rekey_locks_out_the_old_password_after_a_reload(tmp_path):
    db = make_site(tmp_path)
    d = tmp_path / "mqtt"
    port = free_port()
    lockerctl("broker", "config", d, "--listen", f"127.0.0.1:{port}", db=db)
    b = Broker(tmp_path, conf=d / "mosquitto.conf", port=port).start()
    clients = []
    try:
        st = Store.open(db)
        old = st.locker(SITE, "L1")
        version = st.config_version(SITE)
        st.close()
        c = Client(port, "L1", old.broker_password)
        clients.append(c)
        assert c.ok
        r = lockerctl("locker", "rekey", "L1", "--broker", f"127.0.0.1:{port}", db=db)
        device = json.loads(r.stdout)
        assert device["locker_id"] == "L1" and device["site"] == SITE
        assert device["broker"] == {
            "host": "127.0.0.1",
            "port": port,
            "user": "L1",
            "password": device["broker"]["password"],
            "tls": False,
        }
        assert len(device["secret"]) == 64 and device["secret"] != old.secret.hex()
        assert device["broker"]["password"] != old.broker_password
        st = Store.open(db)
        assert st.config_version(SITE) > version
        assert st.locker(SITE, "L1").secret.hex() == device["secret"]
        st.close()
        # Until the broker is reconfigured, the old password still works; after, only the new.
        lockerctl("broker", "config", d, "--listen", f"127.0.0.1:{port}", db=db)
        os.kill(b.process.pid, signal.SIGHUP)
        assert c.disconnected.wait(10), "the old session survived the reload"
        refused = Client(port, "L1", old.broker_password)
        clients.append(refused)
        assert not refused.ok
        fresh = Client(port, "L1", device["broker"]["password"])
        clients.append(fresh)
        assert fresh.ok
        unchanged = Client(port, "L2", passwords(db)["L2"])
        clients.append(unchanged)
        assert unchanged.ok
    finally:
        for c in clients:
            c.close()
        b.kill()
    r = lockerctl("locker", "rekey", "NOPE", db=db, check=False)
    assert r.returncode != 0 and "NOPE" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mosquitto switching to its account")
def test_started_as_root_the_broker_reads_its_files_as_mosquitto(tmp_path):
    try:
        import pwd

        account = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto account")
    base = Path(tempfile.mkdtemp(prefix="classlocker-broker-"))
    try:
        base.chmod(0o711)  # a DIR the broker account can reach
        db = make_site(tmp_path)
        d = base / "mqtt"
        port = free_port()
        r = lockerctl("broker", "config", d, "--listen", f"127.0.0.1:{port}", db=db)
        assert "warning" not in r.stderr
        assert "\nuser " not in (d / "mosquitto.conf").read_text()
        assert (d / "passwd").stat().st_uid == account.pw_uid
        assert (d / "passwd").stat().st_mode & 0o777 == 0o600
        b = Broker(tmp_path, conf=d / "mosquitto.conf", port=port).start()
        try:
            c = Client(port, "L1", passwords(db)["L1"])
            ok = c.ok
            c.close()
            assert ok, b.process.output()
            assert not Client(port, "L1", "wrong").ok
        finally:
            b.kill()
        assert "Unable to open" not in b.process.output()
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_dir_closed_to_the_broker_account_keeps_the_broker_root_with_a_warning(tmp_path):
    db = make_site(tmp_path)
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    port = free_port()
    r = lockerctl("broker", "config", closed / "mqtt", "--listen", f"127.0.0.1:{port}", db=db)
    assert "warning" in r.stderr and "root" in r.stderr
    b = Broker(tmp_path, conf=closed / "mqtt" / "mosquitto.conf", port=port).start()
    try:
        c = Client(port, "L2", passwords(db)["L2"])
        ok = c.ok
        c.close()
        assert ok
    finally:
        b.kill()


@pytest.mark.slow
def test_real_firmware_and_serve_work_through_the_locked_down_broker(
    tmp_path, make_locker, make_serve
):
    """The ACL matches what the firmware and `lockerctl serve` really do: the locker's boot event
    is stored and acknowledged, and the configuration signed by the host reaches the locker."""
    db = f"sqlite:///{tmp_path / 'lockers.db'}"
    port = free_port()
    device = json.loads(
        lockerctl(
            "locker", "add", "L1", "--bays", 4, "--broker", f"127.0.0.1:{port}", db=db
        ).stdout
    )
    device["data_dir"] = str(tmp_path / "data-L1")
    lockerctl("broker", "config", tmp_path / "mqtt", "--listen", f"127.0.0.1:{port}", db=db)
    b = Broker(tmp_path, conf=tmp_path / "mqtt" / "mosquitto.conf", port=port).start()
    try:
        make_serve(db, b)  # no --user/--password: the host account recorded by broker config
        locker = make_locker("L1", device=device)
        state = wait_for(
            lambda: (s := locker.state())["pending"] == 0 and s["config"] is not None and s,
            timeout=30,
            what="boot event acknowledged and configuration applied",
        )
        assert state["online"] is True
        out = lockerctl("export", "--format", "jsonl", db=db).stdout
        assert any(json.loads(line).get("event") == "boot" for line in out.splitlines())
        lockerctl("audit", "verify", db=db)
    finally:
        b.kill()
