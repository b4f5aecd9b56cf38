"""A locker's `device.json`: what its board is flashed with (docs/install.md, docs/protocol.md):
its id, site and bays, where and as whom it connects to the broker, its secret, its data
directory and, for the simulated board, its control port. `locker add`, `locker rekey` and the
dashboard's download all write it from the store's locker row."""

from __future__ import annotations

# the simulated board's control port when device.json names none (firmware/app.py), and the
# first `locker add` gives (then the next free one)
DEFAULT_CONTROL_PORT = 7101


def device_json(row, site: str, broker: tuple[str, int, bool], wifi: dict | None = None) -> dict:
    """device.json for a locker row of the store (`Store.locker`), secret and password included.
    `broker`: (host, port, tls) the locker connects to; `wifi`: {"ssid", "password"} (ESP32)."""
    host, port, tls = broker
    device: dict = {
        "locker_id": row.id,
        "site": site,
        "board": row.board or "sim",
        "bays": row.bays,
        "broker": {
            "host": host,
            "port": port,
            "user": row.id,
            "password": row.broker_password,
            "tls": bool(tls),
        },
        "secret": bytes(row.secret).hex(),
        "data_dir": row.data_dir or f"var/{row.id}",
    }
    if tls:  # the site CA's certificate, copied onto the board next to device.json
        device["broker"]["ca"] = "ca.crt"
    if device["board"] == "sim" or row.control_port:
        device["sim"] = {"control_port": row.control_port or DEFAULT_CONTROL_PORT}
    if wifi is not None:
        device["wifi"] = wifi
    return device
