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

import errno
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
from typing import TYPE_CHECKING

from . import mqttwire as wire
from . import topics
from .ingest import Ingestor, one_line, settle_gc

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

log = logging.getLogger("lockerctl.serve")


def topic_filters(site: str, worker: int = 0, workers: int = 1, group: str | None = None):
    """What ingest worker `worker` (1..`workers`; 0 when there is one) subscribes to: every
    locker's `event`, `status` and `state` of the site; with several workers the `event`s
    through the MQTT shared subscription `$share/GROUP/...` (the broker hands each message to
    one of the group), and `status` and `state` to the first worker only, so that a locker's
    come in the order it sent them."""

    def every_locker(leaf: str) -> str:
        return topics.locker_topic(site, topics.ANY, leaf)

    if workers <= 1:
        return [every_locker(leaf) for leaf in topics.FROM_LOCKER]
    share = f"$share/{group or 'lockerctl-' + site}/"
    out = [share + every_locker("event")]
    if worker <= 1:
        out += [every_locker("status"), every_locker("state")]
    return out


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


def _readable(fds: list[int], timeout: float) -> list[int]:
    """Which of `fds` are readable (or closed) within `timeout` seconds: poll, not select, so
    that a descriptor number above 1023 (a busy dashboard process) is no problem."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLPRI)
    return [fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)]


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
        subscriptions: list[str] | None = None,
    ):
        self.endpoint = endpoint
        self.site = site
        self.subscriptions = subscriptions or topic_filters(site)
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
            except Exception as e:  # noqa: BLE001 - a bug or a poison message must not end ingest
                if not isinstance(e, (OSError, wire.ProtocolError)):
                    log.exception("ingest: unexpected error; reconnecting")
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
            if _readable([stop_fd], delay):
                return

    def _session(self, stop_fd: int) -> None:
        ep = self.endpoint
        reader = wire.Reader()
        sock = self._connect(stop_fd)
        sock.sendall(wire.connect(ep.client_id, ep.keepalive, False, ep.user, ep.password))
        packets = self._await_connack(sock, reader, stop_fd)
        sock.sendall(wire.subscribe(self._next_id(), [(t, 1) for t in self.subscriptions]))
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
        sock_fd = sock.fileno()
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
            ready = _readable([sock_fd, stop_fd], timeout)
            if stop_fd in ready:
                if sock_fd in ready:  # what already arrived is part of what we commit
                    pending.extend(self._drain(sock, reader))
                batch = pending[:]
                pending.clear()
                sock.settimeout(1.0)  # a broker that stops reading cannot hold up the stop
                self._send_quietly(sock, bytes(reader.acks))  # PUBACKs of what was drained
                if batch:
                    self._commit(batch, send=False)
                    self._send_quietly(sock, bytes(self._out))
                self._send_quietly(sock, wire.DISCONNECT_PACKET)
                raise _Stop
            if sock_fd in ready:
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
        except (OSError, wire.ProtocolError):  # BlockingIOError: nothing more for now
            pass
        sock.settimeout(self.connect_timeout)  # blocking again, for the acks and DISCONNECT
        self.ingestor.stats.queued += len(out)
        return out

    def _connect(self, stop_fd: int) -> socket.socket:
        """A connected socket (blocking, with `connect_timeout` for sends), or _Stop as soon as
        `stop_fd` is readable: a broker that never answers does not hold up a stop."""
        ep = self.endpoint
        infos = socket.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address for {ep.host}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            self._sock = sock
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS):
                error = OSError(code, os.strerror(code))
                self._close()
                continue
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLOUT)
            poller.register(stop_fd, select.POLLIN)
            ready = dict(poller.poll(self.connect_timeout * 1000))
            if stop_fd in ready:
                raise _Stop
            if sock.fileno() not in ready:
                error = TimeoutError(f"no answer from {ep.host}:{ep.port}")
                self._close()
                continue
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                error = OSError(code, os.strerror(code))
                self._close()
                continue
            sock.settimeout(self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise error

    def _await_connack(self, sock, reader, stop_fd: int) -> list:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            remaining = deadline - time.monotonic()
            ready = _readable([sock.fileno(), stop_fd], remaining) if remaining > 0 else []
            if stop_fd in ready:
                raise _Stop
            if not ready:
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
            names = [
                t.rsplit("/", 1)[-1]
                for t, c in zip(self.subscriptions, codes, strict=False)
                if c == 0x80
            ]
            raise Refused(f"subscription to {', '.join(names)} refused (the host account's ACL?)")
        self._connected = True
        self.report("connected", True)
        log.info(
            "connected to %s:%d as %s (pid %d)",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.client_id,
            os.getpid(),
        )

    def _commit(self, batch: list, send: bool = True) -> None:
        """Commits `batch`; then, with `send`, publishes the acks the commit allows."""
        self._out = bytearray()
        try:
            self.ingestor.write(batch)
        except Exception:  # a bug: the lockers resend what is not acknowledged
            log.exception("ingest: a batch of %d messages was not written", len(batch))
            self.ingestor.stats.failed_batches += 1
            self._out = bytearray()
        try:
            self.report("stats", self.ingestor.stats.as_dict())
        except Exception:
            log.exception("ingest: the counters could not be reported")
        if send and self._out and self._sock is not None:
            self._sock.sendall(self._out)

    # -- acks ----------------------------------------------------------------------------------

    def _queue_ack(self, locker: str, ack: dict) -> None:
        """`ack` is the payload object: {"seq": N, "jid": "<journal id>", "mac": "<32 hex>"}."""
        topic = topics.locker_topic(self.site, locker, "ack")
        payload = json.dumps(ack).encode()
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
        if self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the ingest thread did not stop within %.0f s", timeout)
            return  # it still polls the pipe: leave it open
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._stop_r = self._stop_w = -1


class IngestProcess:
    """The link in a process of its own with its own store (`db_url`). Its counters arrive after
    every batch and are added to `ingestor.stats`; if the process dies it is started again (what
    it had committed but not acknowledged comes back from the lockers as duplicates)."""

    restart_delay = 1.0
    _stats_lock = threading.Lock()  # several workers' watchers add to one Stats

    def __init__(
        self,
        endpoint: Endpoint,
        site: str,
        ingestor: Ingestor,
        report,
        db_url: str,
        subscriptions: list[str] | None = None,
        shared: bool = False,
        name: str = "lockerctl-ingest",
    ):
        """`subscriptions`: the topic filters (`topic_filters`); `shared`: one of several
        workers (its batches through `store.ingest.ingest_shared`)."""
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")  # never fork with threads running
        self.endpoint = endpoint
        self.site = site
        self.ingestor = ingestor
        self.report = report
        self.db_url = db_url
        self.subscriptions = subscriptions
        self.shared = shared
        self.name = name
        self.proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._stopping = threading.Event()
        self._spawning = threading.Lock()  # a restart and a stop never cross
        self._last: dict = {}  # the running child's counters as it last reported them
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
            "subscriptions": self.subscriptions,
            "shared": self.shared,
        }
        self.proc = proc = self._ctx.Process(
            target=_child_main,
            args=(child, self.endpoint, self.site, self.db_url, settings),
            name=self.name,
            daemon=True,
        )
        proc.start()
        child.close()
        self._conn = parent
        self._last = {}

    def _watch(self) -> None:
        delay = self.restart_delay
        while True:
            try:
                kind, value = self._started()[1].recv()
            except Exception:  # EOFError/OSError: the child is gone (or sent garbage)
                self._end_child()
                self.report("connected", False)
                self._last = {}  # a new child counts from 0
                if self._stopping.is_set():
                    return
                log.error(
                    "the ingest process %s stopped (exit code %s): starting it again",
                    self.name,
                    self._started()[0].exitcode,
                )
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, 30.0)
                with self._spawning:
                    if self._stopping.is_set():
                        return
                    self._spawn()
                continue
            try:
                if kind == "stats":
                    delay = self.restart_delay
                    with self._stats_lock:  # what the child counted since its last report
                        stats = self.ingestor.stats
                        for name, count in value.items():
                            was = self._last.get(name, 0)
                            setattr(stats, name, getattr(stats, name) + count - was)
                    self._last = value
                else:
                    self.report(kind, value)
            except Exception:
                log.exception("ingest: a report from the ingest process was not handled")

    def _started(self) -> tuple[BaseProcess, Connection]:
        """The child process and the parent's end of its pipe (after `start`)."""
        if self.proc is None or self._conn is None:
            raise RuntimeError("the ingest process was not started")
        return self.proc, self._conn

    def _end_child(self, timeout: float = 5.0) -> None:
        """Waits for the child to exit; kills it if it does not (it ignores SIGTERM). Killed in
        a transaction, it leaves nothing half-written: the transaction rolls back and the lockers
        send those events again."""
        proc = self._started()[0]
        proc.join(timeout)
        if proc.is_alive():
            log.error("the ingest process did not stop within %.0f s: killing it", timeout)
            proc.kill()
            proc.join()

    def stop(self, timeout: float = 30.0) -> None:
        """Asks the process to commit and acknowledge what it received, then to disconnect."""
        with self._spawning:
            self._stopping.set()
        conn = self._started()[1]
        try:
            conn.send(None)
        except OSError:
            pass
        self._end_child(timeout)
        self._thread.join(5)
        conn.close()


def _child_main(conn, endpoint: Endpoint, site: str, db_url: str, settings: dict) -> None:
    """The ingest process. Signals are the parent's business: it asks for the stop through the
    pipe, and the link finishes its batch first. A parent that dies closes the pipe: same stop."""
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logger = logging.getLogger("lockerctl")
    if not logger.handlers:
        from .logfmt import make_handler

        logger.addHandler(make_handler())  # text, or JSON as the parent's --log-format
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
    ingestor.shared = settings.get("shared", False)

    def report(kind, value):
        try:
            conn.send((kind, value))
        except OSError:
            pass

    log.debug("ingest process %s (pid %d) started", endpoint.client_id, os.getpid())
    link = IngestLink(endpoint, site, ingestor, report, settings.get("subscriptions"))
    settle_gc()
    link.run(conn.fileno())
    report("stats", ingestor.stats.as_dict())
