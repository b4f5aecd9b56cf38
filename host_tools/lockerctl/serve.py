"""The long-running host service (`lockerctl serve`): MQTT ingest, config publishing, remote opens.

Threads, each with its own `Store` (SQLite connections are not shared between threads):
- the ingest link (`ingestlink.IngestThread`, or `IngestProcess` in a process of its own, N of
  them with `--workers N`): its own MQTT connection receives `event`, `status` and `state`, the
  `ingest.Ingestor` checks them and commits them in batches, then publishes the `ack`s;
- the config publisher (`configpub.ConfigPublisher`): publishes every locker's signed bundle,
  retained, on start, after every (re)connect to the broker and whenever
  `Store.config_version(site)` changes (polled every second, so a change made by another
  `lockerctl` process reaches the lockers within a few seconds);
- the checkpointer (`checkpointer.Checkpointer`): every `--checkpoint-every` seconds (600), a
  signed checkpoint of the trail to every locker as a `cmd` (when the trail grew, or to a
  locker that does not hold the latest);
- the alert mailer (`mailer.AlertMailer`, with `--smtp`): urgent alerts and the daily review
  by e-mail, from a queue in the store;
- the dashboard (`Service.dashboard`), started on the service by `lockerctl serve` when `--http`
  is given and `lockerctl.web` is installed;
- the publishing connection's network thread (paho) also reads every locker's `state`: a locker
  whose clock is unknown gets the host's time, and each locker's clock offset is recorded
  (`hostclock.HostClock`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import threading
import time

import paho.mqtt.client as mqtt

from . import topics
from .brokerclient import broker_auth, make_client
from .checkpointer import Checkpointer
from .clibase import Site
from .configpub import ConfigPublisher
from .hostclock import HostClock
from .ingest import Ingestor
from .ingest import one_line as _one_line
from .ingestlink import Endpoint, IngestProcess, IngestThread, topic_filters

log = logging.getLogger("lockerctl.serve")


def open_store(url: str):
    from .store import Store

    return Store.open(url)


# -- the service ------------------------------------------------------------------------------


class Service:
    """`lockerctl serve` without the command line: `start()`, then `wait()` until `stop()`."""

    def __init__(
        self,
        site: Site,
        client_id: str | None = None,
        poll_interval: float = 1.0,
        max_batch: int | None = None,
        max_wait: float | None = None,
        store_factory=None,
        writer_process: bool = False,
        checkpoint_every: float | None = None,
        workers: int = 1,
    ):
        """`workers`: ingest processes sharing the lockers' events (an MQTT shared
        subscription; `store/ingest.py`), each with its own client id `CLIENT_ID-wN` and persistent
        session; with 1 (the default) one link under `client_id` itself."""
        if workers < 1 or (workers > 1 and not writer_process):
            raise ValueError("several ingest workers run in processes of their own")
        self.workers = workers
        self.site = site
        self.client_id = client_id or f"lockerctl-serve-{site.site}"
        self._store_factory = store_factory or (lambda: open_store(site.db))
        self.store = self._store_factory()  # main thread: credentials, dashboard
        self.writer_process = writer_process
        # In a process of its own the ingest link opens its own store; this Ingestor then only
        # holds the settings it starts with and the counters it reports.
        self.ingestor = Ingestor(
            None if writer_process else self._store_factory(),
            site.site,
            None,
            max_batch=max_batch,
            max_wait=max_wait,
        )
        self.ingest: IngestThread | IngestProcess | None = None
        self.ingest_workers: list[IngestProcess] = []
        self._connected_workers: set[int] = set()
        self.configs = ConfigPublisher(
            self._store_factory(),
            site.site,
            self._publish_config,
            poll_interval=poll_interval,
            ready=lambda: self.connected.is_set(),
        )
        self.checkpoints = Checkpointer(
            self._store_factory(),
            site.site,
            self.publish_command,
            every=checkpoint_every,
            ready=lambda: self.connected.is_set(),
        )
        user, password = broker_auth(site, self.store)
        self.endpoint = Endpoint(
            site.broker_host, site.broker_port, self.client_id, user, password
        )
        # Configs and commands go out on a connection of their own, without a session: the
        # persistent session (and the subscriptions) belong to the ingest link's client id.
        self.client = make_client(self.client_id + "-pub", user, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.clock = HostClock(site.site, self._store_factory, self._publish)
        self.connected: threading.Event = threading.Event()  # the publishing connection is up
        self.ready = threading.Event()  # the ingest link is subscribed
        self._stopping = threading.Event()
        # recent QoS 1 publishes, for shutdown
        self._pending: collections.deque = collections.deque(maxlen=10000)
        self._lock = threading.Lock()
        self.dashboard = None
        self.web_options: dict = {}  # more keyword arguments of `web.serve_store` (oidc, ...)
        self.mail_settings = None  # mailer.MailSettings: e-mail urgent alerts (`--smtp`)
        self.mailer = None
        self._stopped = False

    # paho callbacks (network thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error(
                "broker %s:%d refused the connection: %s (is it the site's broker? "
                "`lockerctl broker config` records its address; --broker overrides)",
                self.site.broker_host,
                self.site.broker_port,
                reason_code,
            )
            return
        log.debug("publishing to %s:%d", self.site.broker_host, self.site.broker_port)
        self.connected.set()
        self.configs.republish()
        client.subscribe(self.clock.topic_filter(), qos=1)  # again on every reconnect

    def _on_message(self, client, userdata, msg):
        self.clock.on_state(msg.topic, msg.payload, bool(msg.retain))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _ingest_report(self, kind: str, value, worker: int = 0) -> None:
        if kind == "connected":
            with self._lock:
                if value:
                    self._connected_workers.add(worker)
                else:
                    self._connected_workers.discard(worker)
                everyone = len(self._connected_workers) >= self.workers
            if everyone:  # every worker subscribed: the whole stream is taken
                self.ready.set()
            else:
                self.ready.clear()

    def _worker_report(self, worker: int, kind: str, value) -> None:
        self._ingest_report(kind, value, worker)

    # publishing (any thread)

    def _publish(self, topic_name: str, payload, retain: bool = False) -> None:
        info = self.client.publish(topic_name, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            raise OSError(f"publish to {topic_name} failed: {mqtt.error_string(info.rc)}")
        with self._lock:
            self._pending.append(info)

    def _publish_config(self, topic_name: str, payload: bytes) -> None:
        self._publish(topic_name, payload, retain=True)

    def publish_command(self, locker: str, payload: bytes) -> None:
        """A signed command (see `prepare_open`) on the locker's `cmd` topic, QoS 1, not
        retained: for the dashboard, which shares this connection."""
        self._publish(topics.locker_topic(self.site.site, locker, "cmd"), payload)

    # life cycle

    def start(self) -> Service:
        """Starts the ingest link, the publishing connection, the config publisher and the
        checkpointer. The dashboard is started on the service by `lockerctl serve` (it is a
        client of this module: `web` imports `serve`, never the other way)."""
        if self.writer_process and self.workers > 1:
            for n in range(1, self.workers + 1):
                endpoint = dataclasses.replace(self.endpoint, client_id=f"{self.client_id}-w{n}")
                self.ingest_workers.append(
                    IngestProcess(
                        endpoint,
                        self.site.site,
                        self.ingestor,
                        functools.partial(self._worker_report, n),
                        self.site.db,
                        subscriptions=topic_filters(self.site.site, n, self.workers),
                        shared=True,
                        name=f"lockerctl-ingest-{n}",
                    )
                )
            self.ingest = self.ingest_workers[0]
            for w in self.ingest_workers[1:]:
                w.start()
        elif self.writer_process:
            self.ingest = IngestProcess(
                self.endpoint, self.site.site, self.ingestor, self._ingest_report, self.site.db
            )
        else:
            self.ingest = IngestThread(
                self.endpoint, self.site.site, self.ingestor, self._ingest_report
            )
        self.ingest.start()
        self.client.connect_async(self.site.broker_host, self.site.broker_port, keepalive=30)
        self.client.loop_start()
        self.configs.start()
        self.checkpoints.start()
        if self.mail_settings is not None:
            from .mailer import AlertMailer

            self.mailer = AlertMailer(self._store_factory(), self.site.site, self.mail_settings)
            self.mailer.start()
        return self

    def request_stop(self) -> None:
        self._stopping.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    def stop(self) -> None:
        """Finishes the current batch, sends its acks, then disconnects."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self.dashboard is not None:
            try:
                self.dashboard.stop()
            except Exception as e:
                log.error("dashboard stop: %s", _one_line(e))
        self.configs.stop()
        self.checkpoints.stop()
        for w in self.ingest_workers[1:]:
            w.stop()
        if self.mailer is not None:
            self.mailer.stop()
        if self.ingest is not None:
            self.ingest.stop()
        deadline = time.monotonic() + 5
        with self._lock:
            pending = list(self._pending)
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.connected.is_set():
                break
            if not info.is_published():
                try:
                    info.wait_for_publish(remaining)
                except (RuntimeError, ValueError):
                    pass
        self.client.disconnect()
        self.client.loop_stop()
        s = self.ingestor.stats
        log.info(
            "stopped: %d messages received, %d events stored in %d batches, %d acks, "
            "%d bad payloads, "
            "%d from unregistered lockers, refused: %d bad MAC, %d impossible, %d seq ahead; "
            "%d conflicts",
            s.queued,
            s.received,
            s.batches,
            s.acks,
            s.bad,
            s.unknown_locker,
            s.bad_mac,
            s.impossible,
            s.seq_ahead,
            s.conflicts,
        )
