"""The long-running host service (`lockerctl serve`): MQTT ingest, config publishing, remote opens.

Threads, each with its own `Store` (SQLite connections are not shared between threads):
- paho's network thread: receives `event`, `status`, `state` and hands them to the `Ingestor`;
- the ingest writer (`ingest.Ingestor`): batch commit, then `ack`;
- the config publisher: publishes every locker's signed bundle, retained, on start, after every
  (re)connect to the broker and whenever `Store.config_version(site)` changes (polled every second,
  so a change made by another `lockerctl` process reaches the lockers within a few seconds);
- the checkpointer (`Checkpointer`): every `--checkpoint-every` seconds (600), a signed
  checkpoint of the trail to every locker as a `cmd` (when the trail grew, or to a locker that
  does not hold the latest);
- the alert mailer (`mailer.AlertMailer`, with `--smtp`): urgent alerts and the daily review
  by e-mail, from a queue in the store;
- the dashboard (`Service.dashboard`), started on the service by `lockerctl serve` when `--http`
  is given and `lockerctl.web` is installed;
- the publishing connection's network thread also reads every locker's `state`: a locker whose
  clock is unknown gets the host's time, and each locker's clock offset is recorded
  (`hostclock.HostClock`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import threading
import time
import uuid

import paho.mqtt.client as mqtt

from .clibase import Site
from .hostclock import HostClock
from .ingest import Ingestor
from .ingest import one_line as _one_line
from .ingestlink import Endpoint, IngestProcess, IngestThread, topic_filters

log = logging.getLogger("lockerctl.serve")

TOPIC_ROOT = "lockers/{site}/{locker}/"
DEFAULT_EXPIRES = 60


def topic(site: str, locker: str, leaf: str) -> str:
    return TOPIC_ROOT.format(site=site, locker=locker) + leaf


def open_store(url: str):
    from .store import Store

    return Store.open(url)


def broker_auth(site: Site, store) -> tuple[str | None, str | None]:
    """`--user/--password` when given, else the host account `broker config` recorded, else
    anonymous."""
    if site.user:
        return site.user, site.password
    creds = None
    getter = getattr(store, "broker_credentials", None)
    if getter is not None:
        creds = getter(site.site)
    if creds:
        return creds[0], creds[1]
    return None, None


def make_client(
    client_id: str, user: str | None, password: str | None, clean_session: bool = True
) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
    )
    if user:
        client.username_pw_set(user, password)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=15)
    return client


# -- config bundles ---------------------------------------------------------------------------


def _field(row, name, index=None):
    if isinstance(row, dict):
        return row[name]
    if hasattr(row, "_mapping"):
        return row._mapping[name]
    if hasattr(row, name):
        return getattr(row, name)
    return row[index]


def card_tuple(row) -> tuple:
    """A store card row as the (uid_hex, person_id, role, year, walk_home, revoked) tuple
    `build_bundle` takes."""
    if isinstance(row, tuple) and not hasattr(row, "_mapping"):
        return row
    return (
        _field(row, "uid"),
        _field(row, "person_id"),
        _field(row, "role"),
        _field(row, "year") or 0,
        bool(_field(row, "walk_home")),
        bool(_field(row, "revoked")),
    )


def locker_secret(row) -> bytes:
    secret = _field(row, "secret")
    return bytes.fromhex(secret) if isinstance(secret, str) else bytes(secret)


def build_locker_bundle(
    store, site: str, locker_row, version: int, now: int, compiled: dict | None = None
) -> bytes:
    """The signed config bundle for one locker at this version (docs/protocol.md `config`).
    `compiled` caches compiled timetables between lockers (keyed by the timetable's JSON)."""
    from .bundle import build_bundle
    from .timetable import compile_timetable

    locker_id = _field(locker_row, "id")
    cards, timetable, grants = store.config_inputs(site, locker_id)
    extra_cards, rules = store.config_extras(site, locker_id)
    tt = None
    if timetable:
        key = json.dumps(timetable, sort_keys=True, default=str)
        cache = compiled if compiled is not None else {}
        if key not in cache:
            cache[key] = compile_timetable(timetable, now)
        tt = cache[key]
    return build_bundle(
        locker_secret(locker_row),
        locker_id,
        site,
        version,
        now,
        tt,
        [card_tuple(c) for c in cards] + list(extra_cards),
        [grant_dict(g) for g in grants],
        rules,
    )


_GRANT_NAMES = {
    "id": ("id", "grant_id"),
    "person": ("person", "person_id"),
    "from": ("from", "from_ts", "starts", "valid_from"),
    "until": ("until", "until_ts", "ends", "valid_until"),
    "by": ("by", "by_person", "granted_by"),
}


def grant_dict(row) -> dict:
    """A store grant row as the bundle header's grant object (docs/protocol.md)."""
    if hasattr(row, "_mapping"):
        row = row._mapping
    elif not isinstance(row, dict):
        row = vars(row)
    out = {}
    for name, candidates in _GRANT_NAMES.items():
        for c in candidates:
            if c in row:
                out[name] = row[c]
                break
        else:
            raise ValueError(f"grant {dict(row)!r} has no {name!r}")
    for name in ("from", "until"):
        if not isinstance(out[name], int):
            value = out[name]
            out[name] = int(value.timestamp()) if hasattr(value, "timestamp") else int(value)
    return out


class ConfigPublisher:
    """Publishes each locker's bundle, retained, whenever the site's configuration changes."""

    poll_interval = 1.0

    def __init__(self, store, site: str, publish, poll_interval: float | None = None, ready=None):
        self.store = store
        self.ready = ready or (lambda: True)  # publish only while connected (else: queued twice)
        self.site = site
        self.publish = publish  # publish(topic, payload: bytes) -> None (retained, QoS 1)
        if poll_interval:
            self.poll_interval = poll_interval
        self.published_version: int | None = None
        self.published: dict[str, int] = {}  # locker -> version of its last published bundle
        self._raised_for: int | None = None  # a reported version a raise was refused for
        self._force = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def republish(self) -> None:
        """Publish everything again at the next poll (after a reconnect: the broker may have
        restarted and lost its retained messages)."""
        self._force = True
        self._wake.set()

    def start(self) -> ConfigPublisher:
        self._thread = threading.Thread(target=self._run, name="config-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.ready():
                    self.poll_once()
            except Exception as e:
                log.error("config publishing failed: %s", _one_line(e))
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _keep_ahead(self) -> None:
        """A locker that reports running a later version than the site's (a database restored
        from a backup) would ignore what is published as `stale`: the site's version is
        raised above it first, so the lockers take the configuration the database holds."""
        from .store import StoreError

        version = int(self.store.config_version(self.site))
        reported = self.store.reported_config_version(self.site)
        if reported <= version or reported == self._raised_for:
            return
        try:
            new = self.store.raise_config_version(self.site, actor="serve")
        except StoreError as e:
            self._raised_for = reported  # said once; the next change tries again
            log.error("configuration version not raised: %s", _one_line(e))
            return
        log.warning(
            "a locker reports configuration v%d, above this database's v%d (restored from a "
            "backup?): now v%d",
            reported,
            version,
            new,
        )

    def poll_once(self) -> int:
        """Publishes what changed; returns how many bundles were published."""
        force, self._force = self._force, False
        try:
            self._keep_ahead()
            version = int(self.store.config_version(self.site))
            lockers = list(self.store.lockers(self.site))
        except Exception:
            self._force = self._force or force  # the store is busy or down: try again later
            raise
        ids = {_field(row, "id") for row in lockers}
        if version <= 0:  # nothing configured yet (a bundle's version is at least 1)
            return 0
        if not force and version == self.published_version and ids <= set(self.published):
            return 0
        now = int(time.time())
        compiled: dict = {}
        count = 0
        for row in lockers:
            locker_id = _field(row, "id")
            if not force and self.published.get(locker_id) == version:
                continue
            try:
                payload = build_locker_bundle(self.store, self.site, row, version, now, compiled)
            except Exception as e:  # one locker's bad data must not hold back the others
                log.error("config v%d for %s not built: %s", version, locker_id, _one_line(e))
                self.published[locker_id] = version  # retried at the next change
                continue
            self.publish(topic(self.site, locker_id, "config"), payload)
            self.published[locker_id] = version
            count += 1
        if count:
            log.info("published config v%d to %d locker(s)", version, count)
        self.published_version = version
        return count


class Checkpointer:
    """Signs a checkpoint of the trail (`checkpoint.py`) every `every` seconds and sends it to
    every locker as a signed `cmd` (op `checkpoint`, bay 0, by `host`, the note as reason).

    A round signs and sends when the trail's head moved since the last note sent, and to any
    locker whose reported state does not hold the latest note (a new or wiped board, one that
    was offline): a quiet site costs no flash writes at the lockers, and no locker holds a note
    more than one round old. Before signing, the head is compared with the checkpoint each
    locker holds: a store that no longer has that locker's entry (restored from an old backup,
    its tail cut) would otherwise get a smaller checkpoint signed over the evidence. Then
    nothing is signed or sent, and an urgent alert (`checkpoint`) says so.
    """

    every = 600.0
    expires = 120  # seconds a checkpoint command stays valid

    def __init__(self, store, site: str, publish, every: float | None = None, ready=None):
        self.store = store
        self.site = site
        self.publish = publish  # publish(locker, payload) on its `cmd` topic
        self.ready = ready or (lambda: True)
        if every:
            self.every = every
        self.last: tuple[int, str] | None = None
        self.note: str | None = None
        self.sent = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Checkpointer:
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.every
            try:
                if self.ready():
                    self.round()
                else:
                    delay = 1.0  # not connected yet: try again soon
            except Exception as e:
                log.error("checkpoint round failed: %s", _one_line(e))
                delay = min(self.every, 30.0)
            self._wake.wait(delay)
            self._wake.clear()

    def round(self, now: int | None = None) -> int:
        """One round; returns the number of lockers sent a checkpoint."""
        from . import checkpoint
        from .commands import sign_command

        head = self.store.trail_head()
        lockers = list(self.store.lockers(self.site))
        problem = self._inconsistent(head, lockers)
        if problem:
            log.error("no checkpoint signed: %s", problem)
            self.store.record_refusals(self.site, [("-", "checkpoint", problem)])
            return 0
        if head != self.last or self.note is None:
            self.note = checkpoint.make(self.store, self.site).note
            self.last = head
            targets = lockers
        else:
            targets = [row for row in lockers if _held_note(row) != self.note]
        now = int(time.time()) if now is None else now
        count = 0
        for row in targets:
            locker_id = _field(row, "id")
            try:
                cmd_id = self.store.next_command_id(self.site, locker_id)
                payload = sign_command(
                    locker_secret(row),
                    locker_id,
                    cmd_id,
                    "checkpoint",
                    0,
                    "host",
                    self.note,
                    now + self.expires,
                )
                self.publish(locker_id, payload)
                count += 1
            except Exception as e:  # one locker must not hold back the others
                log.error("checkpoint to %s not sent: %s", locker_id, _one_line(e))
        if count:
            self.sent += count
            log.info("checkpoint of %d entries sent to %d locker(s)", head[0], count)
        return count

    def _inconsistent(self, head: tuple[int, str], lockers) -> str | None:
        from . import checkpoint

        public = self.store.host_public_key(checkpoint.KEY)
        if public is None:
            return None
        for row in lockers:
            note = _held_note(row)
            if not note:
                continue
            try:
                held = checkpoint.verify(note, public)
            except checkpoint.CheckpointError:
                continue  # not ours: nothing it says counts
            if held.size > head[0] or self.store.trail_hash_at(held.size) != held.head:
                return (
                    f"locker {_field(row, 'id')} holds a checkpoint of {held.size} entries that"
                    f" the store (head at {head[0]}) does not match: run `lockerctl audit verify`"
                )
        return None


def _held_note(row) -> str | None:
    state = _field(row, "state")
    cp = state.get("checkpoint") if isinstance(state, dict) else None
    return cp.get("note") if isinstance(cp, dict) else None


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
        subscription; `store_ingest`), each with its own client id `CLIENT_ID-wN` and persistent
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
        self._publish(topic(self.site.site, locker, "cmd"), payload)

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


def retained_states(site: Site, store, locker_ids, timeout: float = 5.0) -> dict:
    """{locker: state} from the broker's retained `state` messages of these lockers (those
    with none retained are left out; one that is not JSON is None). OSError when the broker
    cannot be reached or refuses the connection."""
    user, password = broker_auth(site, store)
    client = make_client(f"lockerctl-verify-{uuid.uuid4().hex[:12]}", user, password)
    wanted = set(locker_ids)
    got: dict = {}
    done = threading.Event()
    subscribed = threading.Event()
    connected: dict = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        connected["rc"] = reason_code
        if reason_code.is_failure:
            subscribed.set()
            return
        c.subscribe(topic(site.site, "+", "state"), qos=1)

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(c, userdata, msg):
        if not msg.retain:
            return
        locker = msg.topic.split("/")[2]
        try:
            got[locker] = json.loads(msg.payload)
        except ValueError:
            got[locker] = None
        if wanted <= set(got):
            done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(site.broker_host, site.broker_port, keepalive=30)
    except OSError as e:
        raise OSError(f"{site.broker_host}:{site.broker_port}: {e.strerror or e}") from None
    client.loop_start()
    try:
        if not subscribed.wait(timeout):
            raise OSError(f"no answer from {site.broker_host}:{site.broker_port}")
        rc = connected.get("rc")
        if rc is not None and rc.is_failure:
            raise OSError(f"the broker refused the connection ({rc})")
        # retained messages follow the SUBACK at once; a locker with none retained sends none
        done.wait(min(timeout, 1.5))
    finally:
        client.disconnect()
        client.loop_stop()
    return {k: v for k, v in got.items() if k in wanted}


# -- remote open ------------------------------------------------------------------------------


def parse_bay(value: str, bays: int) -> int | str:
    """`all`, `staff` or a bay number 1..bays; ValueError with the reason otherwise."""
    word = str(value).strip().lower()
    if word in ("all", "staff"):
        return word
    try:
        bay = int(word)
    except ValueError:
        raise ValueError(f"bay must be a number 1-{bays} or 'all', not {value!r}") from None
    if not 1 <= bay <= bays:
        raise ValueError(f"bay {bay} does not exist (the locker has bays 1-{bays})")
    return bay


def known_person(store, site: str, person_id: str) -> bool:
    getter = getattr(store, "person", None)
    if getter is not None:
        return getter(site, person_id) is not None
    for locker in store.lockers(site):
        cards, _, _ = store.config_inputs(site, _field(locker, "id"))
        return any(card_tuple(c)[1] == person_id for c in cards)
    return False


MAX_REASON = 200
MAX_EXPIRES = 366 * 86400


def check_open(store, site: str, locker_id: str, bay, by: str, reason: str, expires: int):
    """Validates an office open without side effects: (locker row, bay, reason). ValueError with
    a one-line reason for a bad request."""
    from .bounds import check_text

    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required (--reason TEXT)")
    check_text(reason, "the reason", MAX_REASON)
    if not 0 < expires <= MAX_EXPIRES:
        raise ValueError(f"--expires must be 1 to {MAX_EXPIRES} seconds (a year), not {expires}")
    row = store.locker(site, locker_id)
    if row is None:
        raise ValueError(f"no locker {locker_id!r} on site {site!r}")
    target = parse_bay(bay, int(_field(row, "bays")))
    if not by or not known_person(store, site, by):
        raise ValueError(f"--by {by!r} is not a person on the roster of site {site!r}")
    return row, target, reason


def prepare_open(
    store,
    site: str,
    locker_id: str,
    bay,
    by: str,
    reason: str,
    expires: int = DEFAULT_EXPIRES,
    actor: str | None = None,
    now: int | None = None,
) -> tuple[str, bytes, dict]:
    """Validates an office open, records it in the trail and signs it with the locker's key and
    its next command id: (topic, payload, detail). ValueError (nothing recorded) for a bad
    request. The dashboard calls this, then `Service.publish_command(locker, payload)`."""
    from .commands import sign_command

    row, target, reason = check_open(store, site, locker_id, bay, by, reason, expires)
    now = int(time.time()) if now is None else now
    cmd_id = store.next_command_id(site, locker_id)
    exp = now + int(expires)
    payload = sign_command(locker_secret(row), locker_id, cmd_id, "open", target, by, reason, exp)
    detail = {
        "locker": locker_id,
        "bay": target,
        "by": by,
        "reason": reason,
        "cmd_id": cmd_id,
        "exp": exp,
    }
    store.record_action(site, actor or by, "open", detail)
    return topic(site, locker_id, "cmd"), payload, detail


OUTCOME_TYPES = ("emergency_open", "override", "cmd_rejected")


def open_outcomes(payload: bytes, by: str) -> list[dict]:
    """The events of an `event` payload (one event, or a batch of them: a locker with events
    waiting sends arrays, docs/protocol.md) that may answer an open sent by `by`."""
    try:
        got = json.loads(payload)
    except ValueError:
        return []
    out = []
    for ev in got if isinstance(got, list) else [got]:
        if not isinstance(ev, dict) or ev.get("type") not in OUTCOME_TYPES:
            continue
        if ev.get("type") != "cmd_rejected" and ev.get("by") not in (None, by):
            continue
        out.append(ev)
    return out


def send_open(
    site: Site,
    store,
    locker_id: str,
    bay,
    by: str,
    reason: str,
    expires: int = DEFAULT_EXPIRES,
    wait: float = 0.0,
    timeout: float = 10.0,
):
    """`lockerctl open`: (detail, outcomes). Validates, connects to the broker, then records and
    signs the command and publishes it; with `wait`, the outcome events (list of event dicts,
    empty when none arrived). ValueError for a bad request and OSError when the broker cannot be
    reached, both before anything is recorded."""
    check_open(store, site.site, locker_id, bay, by, reason, expires)
    user, password = broker_auth(site, store)
    client = make_client(f"lockerctl-open-{uuid.uuid4().hex[:12]}", user, password)
    outcomes: list[dict] = []
    got = threading.Event()
    subscribed = threading.Event()
    connected: dict = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        connected["rc"] = reason_code
        if reason_code.is_failure:
            subscribed.set()
            return
        if wait:
            c.subscribe(topic(site.site, locker_id, "event"), qos=1)
        else:
            subscribed.set()

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(c, userdata, msg):
        found = open_outcomes(msg.payload, by)
        if found:
            outcomes.extend(found)
            got.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(site.broker_host, site.broker_port, keepalive=30)
    except OSError as e:
        raise OSError(
            f"cannot reach the broker at {site.broker_host}:{site.broker_port}: {e.strerror or e}"
        ) from None
    client.loop_start()
    try:
        if not subscribed.wait(timeout):
            raise OSError(f"no answer from the broker at {site.broker_host}:{site.broker_port}")
        rc = connected.get("rc")
        if rc is not None and rc.is_failure:
            raise OSError(f"the broker refused the connection: {rc}")
        topic_name, payload, detail = prepare_open(
            store, site.site, locker_id, bay, by, reason, expires
        )
        info = client.publish(topic_name, payload, qos=1, retain=False)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            pass
        if not info.is_published():
            store.record_action(site.site, by, "open_failed", {**detail, "error": "not sent"})
            raise OSError("the broker did not accept the command")
        if wait:
            got.wait(wait)
            if got.is_set():
                time.sleep(0.5)  # `all` opens several bays: gather their events too
        return detail, list(outcomes)
    finally:
        client.disconnect()
        client.loop_stop()
