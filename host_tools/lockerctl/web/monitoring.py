"""`/healthz` and `/metrics` (Prometheus text format, `prometheus-client`) for the service's
monitoring. docs/monitoring.md lists every metric.

`/healthz` needs no sign-in and says nothing personal: 200 `{"status": "ok", "store": "ok",
"broker": "ok"}` when a query on the store works and the ingest link is connected to the broker
(subscribed), else 503 with `"status": "unavailable"` and the part that failed named
(`"store": "unavailable"`, `"broker": "not connected"`).

`/metrics` answers clients on this machine (loopback) only, or, with `serve
--metrics-token-file FILE`, any client that sends `Authorization: Bearer <the file's token>`
(and only those: a configured token is required from every client).

Where the numbers come from: `lockerctl serve` ingests in a child process (ingestlink.py), so
this process does not see the ingest happen. Every figure is read from the store at scrape
time, the one place both processes share: lockers and their `state` (online, pending), the
alerts the dashboard shows, and the events committed since the previous scrape (rows with an id
above the last one seen: the ingest process is the only writer of events, so ids grow in
commit order). Those new rows feed the events-ingested counter, the per-locker last event time
and the ingest latency histogram (commit time `received_at` minus the locker's `ts`, one second
resolution). This survives restarts of the ingest process, needs no shared directory of
multiprocess files and no change to the ingest path; the counter starts at 0 when the
dashboard starts, as Prometheus counters do at a process restart.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .. import alerts as alerts_mod
from ..store import alerts as store_alerts
from ..store import live as store_live

log = logging.getLogger("lockerctl.web")

LATENCY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
ALERT_KINDS = (*alerts_mod.EVENT_ALERTS, "clock", "offline")


def load_token(path: str) -> str:
    """The bearer token in `path` (one line, at least 16 characters); ValueError otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4097)
    except FileNotFoundError:
        raise ValueError(f"--metrics-token-file {path}: no such file") from None
    except OSError as err:
        raise ValueError(f"--metrics-token-file {path}: {err.strerror}") from None
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"--metrics-token-file {path}: not ASCII text") from None
    if len(raw) > 4096 or len(token) < 16 or any(c.isspace() for c in token):
        raise ValueError(
            f"--metrics-token-file {path}: must hold one token of 16 or more characters "
            "without spaces"
        )
    return token


def _loopback(client: str) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class StoreCollector:
    """The service's metrics, read from the store at each scrape (see the module's doc)."""

    def __init__(self, store, site: str, accounts, broker_connected=None, clock=time.time):
        self.store = store
        self.site = site
        self.accounts = accounts
        self.broker_connected = broker_connected
        self.clock = clock
        self.lock = threading.Lock()
        self.watermark: int | None = None  # the last events.id counted
        self.ingested = 0
        self.last_event: dict[str, int] = {}  # locker -> received_at of its newest event
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: +Inf
        self.latency_sum = 0.0
        try:
            self._start()
        except Exception as err:  # the store is down now: the first scrape tries again
            log.warning("metrics: the store could not be read yet: %s", err)

    def _start(self) -> None:
        self.watermark, self.last_event = store_live.last_event_per_locker(self.store, self.site)

    def _advance(self) -> None:
        """Counts the events committed since the last scrape (checking the store answers)."""
        new = store_live.events_since(self.store, self.site, self.watermark)
        if self.watermark is None or new.top <= self.watermark:
            # nothing new; or fewer: the store was replaced (a restore), count from here
            self.watermark = new.top
            return
        for locker, newest, count in new.per_locker:
            self.ingested += int(count)
            self.last_event[locker] = max(self.last_event.get(locker, 0), int(newest))
        for seconds, count in new.latencies:
            seconds = max(0, int(seconds))
            index = next(
                (i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound),
                len(LATENCY_BUCKETS),
            )
            self.bucket_counts[index] += int(count)
            self.latency_sum += seconds * int(count)
        self.watermark = new.top

    def describe(self):
        return []

    def collect(self):
        with self.lock:
            now = self.clock()
            if self.watermark is None:
                self._start()
            self._advance()
            lockers = list(self.store.lockers(self.site))
            found, _ = alerts_mod.compute(
                self.store, self.site, self.accounts.acknowledgements(), now
            )
            ingested = self.ingested
            last_event = dict(self.last_event)
            buckets = list(self.bucket_counts)
            latency_sum = self.latency_sum
        yield from _locker_metrics(lockers, last_event, now)
        yield from _ingest_metrics(ingested, buckets, latency_sum)
        yield _alert_metric(found)

        yield from _email_metrics(store_alerts.mail_counts(self.store, self.site), now)

        if self.broker_connected is not None:
            broker = GaugeMetricFamily(
                "classlocker_broker_connected",
                "1 while the ingest link is connected and subscribed to the broker.",
            )
            broker.add_metric([], 1 if self.broker_connected() else 0)
            yield broker


def _locker_metrics(lockers, last_event: dict, now: float):
    online = GaugeMetricFamily(
        "classlocker_lockers_online", "Registered lockers connected to the broker now."
    )
    online.add_metric([], sum(1 for r in lockers if r.online))
    yield online
    registered = GaugeMetricFamily(
        "classlocker_lockers_registered", "Lockers registered for the site."
    )
    registered.add_metric([], len(lockers))
    yield registered
    each = GaugeMetricFamily(
        "classlocker_locker_online",
        "1 while the locker is connected, 0 when offline or never seen.",
        labels=["locker"],
    )
    pending = GaugeMetricFamily(
        "classlocker_locker_pending_events",
        "Events the locker holds that the host has not acknowledged (from its last state report).",
        labels=["locker"],
    )
    age = GaugeMetricFamily(
        "classlocker_locker_last_event_age_seconds",
        "Seconds since the locker's newest event was committed (absent before any).",
        labels=["locker"],
    )
    for r in lockers:
        each.add_metric([r.id], 1 if r.online else 0)
        state = r.state if isinstance(r.state, dict) else {}
        value = state.get("pending")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            pending.add_metric([r.id], value)
        if r.id in last_event:
            age.add_metric([r.id], max(0.0, now - last_event[r.id]))
    yield each
    yield pending
    yield age


def _ingest_metrics(ingested: int, buckets: list, latency_sum: float):
    counter = CounterMetricFamily(
        "classlocker_events_ingested",
        "Events committed to the audit trail since the dashboard started.",
    )
    counter.add_metric([], ingested)
    yield counter
    cumulative, running = [], 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
    latency = HistogramMetricFamily(
        "classlocker_ingest_latency_seconds",
        "From the event's time on the locker to its commit (events with a trusted clock).",
    )
    latency.add_metric([], cumulative, latency_sum)
    yield latency


def _email_metrics(counts: dict, now: float):
    """The e-mail queue of urgent alerts and the daily review (`serve --smtp`): all 0 without
    it."""
    queue = GaugeMetricFamily(
        "classlocker_email_queue_length",
        "E-mails (urgent alerts, daily review) waiting to be sent.",
    )
    queue.add_metric([], counts["queued"])
    yield queue
    sent = CounterMetricFamily("classlocker_emails_sent", "E-mails the mail server accepted.")
    sent.add_metric([], counts["sent"])
    yield sent
    failed = CounterMetricFamily(
        "classlocker_email_send_failures",
        "Tries to send an e-mail that failed (refused, timed out, login or TLS failed).",
    )
    failed.add_metric([], counts["failed"])
    yield failed
    failing = GaugeMetricFamily(
        "classlocker_email_failing",
        "1 while a waiting e-mail's latest try failed (the mail server is not taking them).",
    )
    failing.add_metric([], counts["failing"])
    yield failing
    oldest = GaugeMetricFamily(
        "classlocker_email_oldest_waiting_seconds",
        "Seconds the oldest waiting e-mail has waited (0 when none waits).",
    )
    oldest.add_metric([], max(0.0, now - counts["oldest"]) if counts["oldest"] else 0)
    yield oldest


def _alert_metric(found):
    open_alerts = GaugeMetricFamily(
        "classlocker_alerts_open",
        "Alerts on the dashboard not yet acknowledged, by kind.",
        labels=["kind"],
    )
    counts = dict.fromkeys(ALERT_KINDS, 0)
    for a in found:
        if a.acked_by is None:
            counts[a.kind] = counts.get(a.kind, 0) + 1
    for kind, n in counts.items():
        open_alerts.add_metric([kind], n)
    return open_alerts


class Monitoring:
    def __init__(self, ctx, broker_connected=None, token: str | None = None):
        self.ctx = ctx
        self.broker_connected = broker_connected
        self.token = token
        self.collector = StoreCollector(ctx.store, ctx.site, ctx.accounts, broker_connected)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def health(self) -> tuple[int, dict]:
        body = {"status": "ok", "store": "ok", "broker": "ok"}
        try:
            store_live.ping(self.ctx.store)
        except Exception as err:
            log.warning("healthz: the store does not answer: %s", err)
            body["store"] = "unavailable"
        if self.broker_connected is not None and not self.broker_connected():
            body["broker"] = "not connected"
        ok = body["store"] == "ok" and body["broker"] == "ok"
        if not ok:
            body["status"] = "unavailable"
        return (200 if ok else 503), body

    def metrics(self, client: str, authorization: str) -> Response:
        if self.token is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), self.token.encode()
            ):
                return PlainTextResponse(
                    "a bearer token is required (Authorization: Bearer ...)\n",
                    401,
                    headers={"www-authenticate": 'Bearer realm="metrics"'},
                )
        elif not _loopback(client):
            return PlainTextResponse(
                "metrics are served to this machine only (or start serve with "
                "--metrics-token-file)\n",
                403,
            )
        try:
            data = generate_latest(self.registry)
        except Exception as err:
            log.warning("metrics: the store could not be read: %s", err)
            return PlainTextResponse("the store does not answer\n", 503)
        return Response(data, media_type=CONTENT_TYPE_LATEST)


router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz(request: Request):
    status, body = request.app.state.ctx.monitoring.health()
    return JSONResponse(body, status)


@router.get("/metrics")
def metrics(request: Request):
    client = request.client.host if request.client else ""
    authorization = request.headers.get("authorization", "")
    return request.app.state.ctx.monitoring.metrics(client, authorization)
