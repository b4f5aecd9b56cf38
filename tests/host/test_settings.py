"""Settings remembered in the store: the broker's address from `broker config --listen` (and
TLS) is what `locker add` writes into device.json and what the host's commands connect to,
unless --broker or $LOCKER_BROKER say otherwise; `lockerctl sim` finds a locker's control port in
the database or says why not; `locker add` never picks a control port something listens on."""

import json
import socket

import pytest
from click.testing import CliRunner
from lockerctl.cli import _load_commands
from lockerctl.clibase import Site, cli, resolve_broker
from lockerctl.sitesettings import free_control_port
from lockerctl.store import Store

_load_commands()

NO_ENV = {"LOCKER_SITE": None, "LOCKER_DB": None, "LOCKER_BROKER": None, "LOCKER_SIM_DIR": None}


@pytest.fixture
def run(tmp_path, monkeypatch):
    for key in NO_ENV:
        monkeypatch.delenv(key, raising=False)
    url = f"sqlite:///{tmp_path / 'lockers.db'}"

    def invoke(*args, ok=True, env=None):
        result = CliRunner().invoke(
            cli, [*map(str, args), "--db", url], env={**NO_ENV, **(env or {})}
        )
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    invoke.url = url
    return invoke


def _device(run, tmp_path, locker_id, *extra, env=None):
    out = tmp_path / f"{locker_id}.json"
    run("locker", "add", locker_id, "-o", out, *extra, env=env)
    return json.loads(out.read_text())


def _host(url, broker=None):
    site = Site(db=url, site="school")
    resolve_broker(site, broker)
    return site.broker_host, site.broker_port, site.broker_source


def test_plain_listener_is_remembered(run, tmp_path):
    assert _host(run.url) == ("127.0.0.1", 1883, "default")
    run("broker", "config", tmp_path / "b", "--listen", "127.0.0.1:18830")
    device = _device(run, tmp_path, "L1")
    assert device["broker"]["host"] == "127.0.0.1" and device["broker"]["port"] == 18830
    assert device["broker"]["tls"] is False and "ca" not in device["broker"]
    assert _host(run.url) == ("127.0.0.1", 18830, "recorded by broker config")
    # --broker, then $LOCKER_BROKER, override what is remembered
    assert _host(run.url, "10.1.1.1:1999")[:2] == ("10.1.1.1", 1999)
    d2 = _device(run, tmp_path, "L2", "--broker", "10.1.1.1:1999")
    assert (d2["broker"]["host"], d2["broker"]["port"]) == ("10.1.1.1", 1999)
    d3 = _device(run, tmp_path, "L3", env={"LOCKER_BROKER": "10.2.2.2:2999"})
    assert (d3["broker"]["host"], d3["broker"]["port"]) == ("10.2.2.2", 2999)
    # a wildcard listener: the host tools use loopback, the lockers the given address
    run("broker", "config", tmp_path / "b", "--listen", "0.0.0.0:18832", "--address", "10.0.0.5")
    assert _host(run.url)[:2] == ("127.0.0.1", 18832)
    assert _device(run, tmp_path, "L4")["broker"]["host"] == "10.0.0.5"
    st = Store.open(run.url)
    try:
        settings = st.settings("school")
        assert settings["broker.listen"] == "0.0.0.0:18832" and settings["broker.tls"] == "0"
        assert settings["broker.dir"] == str((tmp_path / "b").resolve())
        assert [a["action"] for a in st.trail_actions("school")].count("settings") == 2
        st.verify_trail()
    finally:
        st.close()


def test_tls_listener_and_its_local_port_are_kept_on_a_later_run(run, tmp_path):
    from cryptography import x509

    d = tmp_path / "broker"
    args = ("--listen", "0.0.0.0:18883", "--tls", "--address", "lockers.example")
    args += ("--name", "lockers.school.example")
    run("broker", "config", d, *args, "--local-port", "18831")
    device = _device(run, tmp_path, "L1")
    assert device["broker"] == {
        **device["broker"],
        "host": "lockers.example",
        "port": 18883,
        "tls": True,
        "ca": "ca.crt",
    }
    assert _host(run.url)[:2] == ("127.0.0.1", 18831)
    cert = x509.load_pem_x509_certificate((d / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"lockers.example", "lockers.school.example"} <= set(
        san.get_values_for_type(x509.DNSName)
    )
    before = (d / "server.crt").read_bytes()
    # again after adding a locker, without --listen: the same listeners, certificate and ports
    r = run("broker", "config", d)
    assert "lockers connect to lockers.example:18883 (TLS)" in r.output
    conf = (d / "mosquitto.conf").read_text()
    assert "listener 18883 0.0.0.0" in conf and "listener 18831 127.0.0.1" in conf
    assert (d / "server.crt").read_bytes() == before
    assert _host(run.url)[:2] == ("127.0.0.1", 18831)


def test_sim_finds_the_registered_port_or_says_why(run, tmp_path):
    r = run("sim", "state", "L1", ok=False)
    assert r.exit_code == 1 and "no database at" in r.output
    port = free_control_port(set())
    run("locker", "add", "L1", "--control-port", port, "-o", tmp_path / "L1.json")
    run("locker", "add", "E1", "--board", "esp32", "-o", tmp_path / "E1.json")
    r = run("sim", "state", "L1", ok=False)  # registered, nothing running: its own port named
    assert r.exit_code == 1 and f"on port {port}" in r.output, r.output
    r = run("sim", "state", "L9", ok=False)
    assert r.exit_code == 1 and "no locker L9 at site school" in r.output
    assert "--device" in r.output
    r = run("sim", "tap", "E1", "04B20001", ok=False)
    assert r.exit_code == 1 and "not a simulated board" in r.output
    r = run("sim", "state", "L1", "--device", tmp_path / "nope.json", ok=False)
    assert r.exit_code == 1 and "no device file" in r.output


def test_locker_add_skips_a_control_port_in_use(run, tmp_path):
    first = free_control_port(set())
    with socket.socket() as s:
        s.bind(("127.0.0.1", first))
        s.listen()
        device = _device(run, tmp_path, "L1")
    assert device["sim"]["control_port"] > first
    assert device["data_dir"] == str(tmp_path / "lockers" / "L1")
    d2 = _device(run, tmp_path, "L2")  # the port L1 has is not handed out again
    assert d2["sim"]["control_port"] not in (device["sim"]["control_port"],)


def test_a_tls_only_broker_is_named_not_guessed(run, tmp_path):
    d = tmp_path / "broker"
    run("broker", "config", d, "--listen", "0.0.0.0:18884", "--tls", "--local-port", "0")
    with pytest.raises(Exception) as info:
        _host(run.url)
    assert "no plain listener for the host tools" in str(info.value)
    assert _host(run.url, "127.0.0.1:1")[:2] == ("127.0.0.1", 1)  # --broker still decides
    r = run("open", "L1", "1", "--by", "O1", "--reason", "x", ok=False)
    assert r.exit_code == 1 and "--local-port" in r.output and "Traceback" not in r.output
