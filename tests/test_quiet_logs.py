"""Quiet, useful logs: a browser refusing the dashboard's certificate, plain HTTP on the HTTPS
port are one line each in `serve`'s log, never a traceback; `--log-format
json` writes one JSON object per line; and a simulated locker says nothing about the retained
(stale) configuration it is handed again each time `serve` restarts."""

import http.client
import json
import socket
import ssl
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from harness import ROOT, Serve, free_port, lockerctl, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def pki(tmp_path):
    from lockerctl.broker import make_ca, make_server_cert

    ca_key, ca_cert = make_ca("school")
    key, cert = make_server_cert(ca_key, ca_cert, ["localhost", "127.0.0.1"])
    (tmp_path / "dash.crt").write_bytes(cert)
    (tmp_path / "dash.key").write_bytes(key)
    return tmp_path


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line is one JSON object
    return out


def _about_clients(records):
    return [
        r
        for r in records
        if r["logger"] == "lockerctl.web"
        and ("with 127.0.0.1" in r["message"] or "client 127.0.0.1" in r["message"])
    ]


def test_refused_tls_handshakes_are_one_json_line_each(tmp_path, broker, db_url, pki):
    port = free_port()
    extra = (
        "--http-cert",
        pki / "dash.crt",
        "--http-key",
        pki / "dash.key",
        "--log-format",
        "json",
    )
    serve = Serve(tmp_path, db_url, broker, http_port=port, extra=extra).start()
    try:
        # 1. a client that does not trust the certificate (a browser and a self-signed one)
        ctx = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                ctx.wrap_socket(raw, server_hostname="localhost")
        # 2. plain HTTP on the HTTPS port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/login")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.getresponse()
        conn.close()
        wait_for(
            lambda: len(_about_clients(_json_lines(serve.process.output()))) >= 2,
            timeout=20,
            what="two refused handshakes in the log",
        )
    finally:
        serve.stop()
    text = serve.process.output()
    assert "Traceback" not in text, text
    records = _json_lines(text)
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    about_clients = _about_clients(records)
    assert len(about_clients) == 2, about_clients  # one line each
    assert all(r["level"] == "info" and "exc" not in r for r in about_clients)
    assert "refused" in about_clients[0]["message"], about_clients
    assert "UNKNOWN_CA" in about_clients[0]["message"], about_clients
    assert any(r["message"].startswith("connected to") for r in records)  # the ingest process


def _config_messages(broker, locker_id="L1"):
    got = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"w-{uuid.uuid4().hex[:8]}")
    ready = threading.Event()
    client.on_message = lambda c, u, m: got.append(len(m.payload))
    client.on_subscribe = lambda *a: ready.set()
    client.on_connect = lambda c, *a: c.subscribe(f"lockers/school/{locker_id}/config", qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert ready.wait(5)
    return client, got


def test_a_restart_of_serve_is_no_news_to_the_lockers(
    tmp_path, broker, db_url, make_locker, make_serve
):
    lockerctl("roster", "import", ROOT / "docs/examples/roster.csv", db=db_url)
    out = tmp_path / "L1.json"
    lockerctl("locker", "add", "L1", "--bays", 4, "--broker", broker.address, "-o", out, db=db_url)
    device = json.loads(out.read_text())
    device["data_dir"] = str(tmp_path / "data-L1")
    serve = make_serve(db_url, broker)
    locker = make_locker("L1", broker=broker, device=device)
    wait_for(lambda: locker.state()["config"] is not None, timeout=30, what="config")
    client, got = _config_messages(broker)
    try:
        for _restart in range(2):
            seen = len(got)
            serve.stop()
            serve = make_serve(db_url, broker)
            wait_for(lambda s=seen: len(got) > s, timeout=30, what="the config published again")
            # The locker has taken the same bundle again: a tap afterwards is acknowledged.
            locker.tap("04B20001")
            wait_for(lambda: locker.state()["pending"] == 0, timeout=30, what="the ack")
    finally:
        client.loop_stop()
        client.disconnect()
    text = locker.process.output()
    assert "Traceback" not in text and "BundleError" not in text, text
    assert locker.state()["config"] is not None
