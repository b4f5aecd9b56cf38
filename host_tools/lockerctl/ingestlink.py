"""The ingest stream's own connection to the broker, and where it runs.

`IngestLink` holds one MQTT connection (`mqttwire`, not paho: see that module for why) under the
service's fixed client id with a persistent session. It subscribes to every locker's `event`,
`status` and `state` of the site, gathers what arrives into batches (up to `max_batch` messages,
or `max_wait` seconds after the first), has the `Ingestor` commit each batch and then publishes
the acks the commit allows, on the same connection. Receiving, parsing and committing happen in
one thread, with no queue and no hand-over between them: under a flood that costs a few
microseconds per message besides the SQL.

`IngestProcess` runs the link in a process of its own (what `lockerctl serve` does: the SQL runs
on another core than the dashboard and the config publisher), restarts it if it dies, and mirrors
its counters into the service's `Ingestor.stats`. `IngestThread` runs it in a thread of the
calling process (tests, embedding).
"""

from __future__ import annotations

import json
import logging
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import mqttwire as wire
from .ingest import Ingestor, one_line

log = logging.getLogger("lockerctl.serve")

SUBSCRIPTIONS = ("event", "status", "state")
RECV_BYTES = 256 * 1024
# Acknowledge what arrives at once. mosquitto leaves Nagle's algorithm on unless told otherwise
# (`set_tcp_nodelay`): its PUBACK for an ack we published stays unacknowledged under a delayed
# ACK (40 ms), and the next event for us waits behind it. Linux resets the flag after use.
_QUICKACK = getattr(socket, "TCP_QUICKACK", 0)


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom the ingest connection connects."""

    host: str
    port: int
    client_id: str
    user: str | None = None
    password: str | None = None
    keepalive: int = 30


class Refused(OSError):
    """The broker answered CONNECT with a refusal (bad password, not authorised, ...)."""


class _Stop(Exception):
    pass


class IngestLink:
    """Receives the site's lockers' messages and commits them through `ingestor`.

    `report(kind, value)` is told `("connected", bool)` when the subscription is in place or the
    connection is lost, and `("stats", dict)` after every batch. `run(stop_fd)` returns when
    `stop_fd` becomes readable, after committing and acknowledging what was already received.
    """

    min_backoff = 1.0
    max_backoff = 15.0
    connect_timeout = 10.0

    def __init__(
        self,
        endpoint: Endpoint,
        site: str,
        ingestor: Ingestor,
        report: Callable[[str, object], None] | None = None,
    ):
        self.endpoint = endpoint
        self.site = site
        self.ingestor = ingestor
        ingestor.publish_ack = self._queue_ack
        self.report = report or (lambda kind, value: None)
        self._out = bytearray()  # acks to send after the batch's commit
        self._packet_id = 0
        self._sock: socket.socket | None = None
        self._connected = False
        self.pending: list[tuple[str, bytes]] = []  # received, not yet committed

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop_fd: int) -> None:
        backoff = self.min_backoff
        down_since: float | None = None  # one line per outage, not one per attempt
        while True:
            try:
                self._session(stop_fd)
            except _Stop:
                return
            except Refused as e:
                log.error(
                    "broker %s:%d refused the ingest connection: %s",
                    self.endpoint.host,
                    self.endpoint.port,
                    e,
                )
            except (OSError, wire.ProtocolError) as e:
                if self._connected:
                    self._connected = False
                    self.report("connected", False)
                    log.warning("ingest: disconnected from the broker (%s); reconnecting", e)
                    backoff = self.min_backoff
                    down_since = None
                elif down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "ingest: cannot reach the broker %s:%d (%s); trying again",
                        self.endpoint.host,
                        self.endpoint.port,
                        one_line(e),
                    )
            finally:
                self._close()
            delay = backoff * (0.5 + random.random() / 2)
            backoff = min(backoff * 2, self.max_backoff)
            if select.select([stop_fd], [], [], delay)[0]:
                return

    def _session(self, stop_fd: int) -> None:
        ep = self.endpoint
        reader = wire.Reader()
        sock = socket.create_connection((ep.host, ep.port), timeout=self.connect_timeout)
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(wire.connect(ep.client_id, ep.keepalive, False, ep.user, ep.password))
        packets = self._await_connack(sock, reader)
        prefix = f"lockers/{self.site}/+/"
        sock.sendall(wire.subscribe(self._next_id(), [(prefix + s, 1) for s in SUBSCRIPTIONS]))
        self.pending = []
        try:
            self._receive(sock, reader, packets, stop_fd)
        except (OSError, wire.ProtocolError):
            # Received, acknowledged to the broker, not yet committed: store it now rather than
            # wait for the lockers to send it again (their acks are lost with the connection).
            if self.pending:
                self._commit(self.pending, send=False)
            raise

    def _receive(self, sock, reader, packets: list, stop_fd: int) -> None:
        ep = self.endpoint
        last_in = last_out = time.monotonic()
        pending = self.pending
        first_at = 0.0
        ping_every = ep.keepalive / 2
        while True:
            if packets:
                for p in packets:
                    if p[0] == wire.PUBLISH:
                        if not pending:
                            first_at = time.monotonic()
                        pending.append((p[1], p[2]))
                        self.ingestor.stats.queued += 1
                    elif p[0] == wire.SUBACK:
                        self._suback(p[2])
                packets = []
                if reader.acks:
                    sock.sendall(reader.acks)
                    reader.acks.clear()
                    last_out = time.monotonic()
            now = time.monotonic()
            if pending and (
                len(pending) >= self.ingestor.max_batch or now >= first_at + self.ingestor.max_wait
            ):
                batch = pending[:]
                pending.clear()
                self._commit(batch)
                last_out = time.monotonic()
            if now - last_in > ep.keepalive * 1.5:
                raise TimeoutError(f"no word from the broker for {ep.keepalive * 1.5:.0f} s")
            if now - last_out >= ping_every:
                sock.sendall(wire.PINGREQ_PACKET)
                last_out = now
            timeout = max(0.0, last_out + ping_every - now)
            if pending:
                timeout = min(timeout, max(0.0, first_at + self.ingestor.max_wait - now))
            ready = select.select([sock, stop_fd], [], [], timeout)[0]
            if stop_fd in ready:
                if sock in ready:  # what already arrived is part of what we commit
                    pending.extend(self._drain(sock, reader))
                batch = pending[:]
                pending.clear()
                if batch:
                    self._commit(batch, send=False)
                    self._send_quietly(sock, bytes(self._out))
                self._send_quietly(sock, wire.DISCONNECT_PACKET)
                raise _Stop
            if sock in ready:
                data = sock.recv(RECV_BYTES)
                if not data:
                    raise ConnectionResetError("the broker closed the connection")
                if _QUICKACK:
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                last_in = time.monotonic()
                packets = reader.feed(data)

    @staticmethod
    def _send_quietly(sock, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass

    def _drain(self, sock, reader) -> list[tuple[str, bytes]]:
        out = []
        sock.setblocking(False)
        try:
            while True:
                data = sock.recv(RECV_BYTES)
                if not data:
                    break
                out += [(p[1], p[2]) for p in reader.feed(data) if p[0] == wire.PUBLISH]
        except OSError:  # BlockingIOError: nothing more for now
            pass
        sock.settimeout(self.connect_timeout)  # blocking again, for the acks and DISCONNECT
        self.ingestor.stats.queued += len(out)
        return out

    def _await_connack(self, sock, reader) -> list:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                raise TimeoutError("no CONNACK from the broker")
            data = sock.recv(RECV_BYTES)
            if not data:
                raise ConnectionResetError("the broker closed the connection before CONNACK")
            packets = reader.feed(data)
            if not packets:
                continue
            first = packets[0]
            if first[0] != wire.CONNACK or len(first[2]) != 2:
                raise wire.ProtocolError(f"expected CONNACK, got packet type {first[0]}")
            code = first[2][1]
            if code:
                raise Refused(wire.CONNACK_REASONS.get(code, f"return code {code}"))
            return packets[1:]  # a persistent session's queued messages may follow at once

    def _suback(self, body: bytes) -> None:
        codes = body[2:]
        if any(c == 0x80 for c in codes):
            names = [s for s, c in zip(SUBSCRIPTIONS, codes, strict=False) if c == 0x80]
            log.error(
                "the broker refused the subscription to %s (the host account's ACL?)",
                ", ".join(names),
            )
        self._connected = True
        self.report("connected", True)
        log.info(
            "connected to %s:%d as %s",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.client_id,
        )

    def _commit(self, batch: list, send: bool = True) -> None:
        """Commits `batch`; then, with `send`, publishes the acks the commit allows."""
        self._out = bytearray()
        self.ingestor.write(batch)
        self.report("stats", self.ingestor.stats.as_dict())
        if send and self._out and self._sock is not None:
            self._sock.sendall(self._out)

    # -- acks ----------------------------------------------------------------------------------

    def _queue_ack(self, locker: str, seq: int) -> None:
        topic = f"lockers/{self.site}/{locker}/ack"
        payload = json.dumps({"seq": seq}).encode()
        self._out += wire.publish(topic, payload, qos=1, packet_id=self._next_id())

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % 65535 + 1
        return self._packet_id

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._out = bytearray()


# -- where the link runs ----------------------------------------------------------------------


class IngestThread:
    """The link in a thread of this process, committing through `ingestor` itself."""

    def __init__(self, endpoint: Endpoint, site: str, ingestor: Ingestor, report):
        self._stop_r, self._stop_w = os.pipe()
        self.link = IngestLink(endpoint, site, ingestor, report)
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def start(self) -> IngestThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.link.run(self._stop_r)
        finally:
            self.link.report("connected", False)

    def stop(self, timeout: float = 30.0) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout)
        os.close(self._stop_r)
        os.close(self._stop_w)


class IngestProcess:
    """The link in a process of its own with its own store (`db_url`). Its counters arrive after
    every batch and are added to `ingestor.stats`; if the process dies it is started again (what
    it had committed but not acknowledged comes back from the lockers as duplicates)."""

    restart_delay = 1.0

    def __init__(self, endpoint: Endpoint, site: str, ingestor: Ingestor, report, db_url: str):
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")  # never fork with threads running
        self.endpoint = endpoint
        self.site = site
        self.ingestor = ingestor
        self.report = report
        self.db_url = db_url
        self.proc = None
        self._conn = None
        self._stopping = threading.Event()
        self._spawning = threading.Lock()  # a restart and a stop never cross
        self._base = ingestor.stats.as_dict()
        self._last: dict = {}
        self._thread = threading.Thread(target=self._watch, name="ingest-watch", daemon=True)

    def start(self) -> IngestProcess:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe()
        settings = {
            "max_batch": self.ingestor.max_batch,
            "max_wait": self.ingestor.max_wait,
            "retry_delay": self.ingestor.retry_delay,
            "level": logging.getLogger("lockerctl").getEffectiveLevel(),
        }
        self.proc = self._ctx.Process(
            target=_child_main,
            args=(child, self.endpoint, self.site, self.db_url, settings),
            name="lockerctl-ingest",
            daemon=True,
        )
        self.proc.start()
        child.close()
        self._conn = parent
        self._last = {}

    def _watch(self) -> None:
        delay = self.restart_delay
        while True:
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                self.proc.join(5)
                self.report("connected", False)
                for name, count in self._last.items():
                    self._base[name] = self._base.get(name, 0) + count
                if self._stopping.is_set():
                    return
                log.error(
                    "the ingest process stopped (exit code %s): starting it again",
                    self.proc.exitcode,
                )
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, 30.0)
                with self._spawning:
                    if self._stopping.is_set():
                        return
                    self._spawn()
                continue
            if kind == "stats":
                self._last = value
                delay = self.restart_delay
                for name, count in value.items():
                    setattr(self.ingestor.stats, name, self._base.get(name, 0) + count)
            else:
                self.report(kind, value)

    def stop(self, timeout: float = 30.0) -> None:
        """Asks the process to commit and acknowledge what it received, then to disconnect."""
        with self._spawning:
            self._stopping.set()
        try:
            self._conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self._thread.join(5)
        self._conn.close()


def _child_main(conn, endpoint: Endpoint, site: str, db_url: str, settings: dict) -> None:
    """The ingest process. Signals are the parent's business: it asks for the stop through the
    pipe, and the link finishes its batch first. A parent that dies closes the pipe: same stop."""
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logger = logging.getLogger("lockerctl")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s serve: %(message)s", "%Y-%m-%d %H:%M:%S")
        )
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(settings["level"])
    from .store import Store

    try:
        store = Store.open(db_url)
    except Exception as e:
        log.error("the ingest process cannot open the store: %s", one_line(e))
        sys.exit(1)
    ingestor = Ingestor(store, site, None, settings["max_batch"], settings["max_wait"])
    ingestor.retry_delay = settings["retry_delay"]

    def report(kind, value):
        try:
            conn.send((kind, value))
        except OSError:
            pass

    IngestLink(endpoint, site, ingestor, report).run(conn.fileno())
    report("stats", ingestor.stats.as_dict())
