"""Clients of the site's broker: as whom they connect (`broker_auth`), how (`make_client`), and
the short-lived session a command holds while it sends or waits for something (`session`:
`lockerctl open`, `release`, `audit verify`)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt

from . import topics
from .clibase import Site


def broker_auth(site: Site, store) -> tuple[str | None, str | None]:
    """`--user/--password` when given, else the host account `broker config` recorded, else
    anonymous."""
    if site.user:
        return site.user, site.password
    creds = store.broker_credentials(site.site)
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


def where(site: Site) -> str:
    return f"{site.broker_host}:{site.broker_port}"


@contextmanager
def session(
    site: Site,
    store,
    purpose: str,
    subscribe: str | None = None,
    on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
    timeout: float = 10.0,
) -> Iterator[mqtt.Client]:
    """A client of the site's broker (id `lockerctl-PURPOSE-...`), connected and, with
    `subscribe`, subscribed to that topic filter (QoS 1) with every message handed to
    `on_message` on paho's thread; disconnected at the end. OSError when the broker cannot be
    reached, gives no answer within `timeout` or refuses the connection."""
    user, password = broker_auth(site, store)
    client = make_client(f"lockerctl-{purpose}-{uuid.uuid4().hex[:12]}", user, password)
    ready = threading.Event()  # connected (and subscribed), or refused
    refused: list = []

    def connected(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            refused.append(reason_code)
            ready.set()
        elif subscribe:
            c.subscribe(subscribe, qos=1)
        else:
            ready.set()

    client.on_connect = connected
    client.on_subscribe = lambda c, userdata, mid, reason_codes, properties: ready.set()
    if on_message is not None:
        client.on_message = lambda c, userdata, msg: on_message(msg)
    try:
        client.connect(site.broker_host, site.broker_port, keepalive=30)
    except OSError as e:
        raise OSError(f"cannot reach the broker at {where(site)}: {e.strerror or e}") from None
    client.loop_start()
    try:
        if not ready.wait(timeout):
            raise OSError(f"no answer from the broker at {where(site)}")
        if refused:
            raise OSError(f"the broker refused the connection: {refused[0]}")
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def published(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    """Whether the broker acknowledged a QoS 1 publish within `timeout` seconds."""
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError):  # not queued (no connection) or already failed
        pass
    return info.is_published()


def retained_states(site: Site, store, locker_ids, timeout: float = 5.0) -> dict:
    """{locker: state} from the broker's retained `state` messages of these lockers (those
    with none retained are left out; one that is not JSON is None). OSError when the broker
    cannot be reached or refuses the connection."""
    wanted = set(locker_ids)
    got: dict = {}
    done = threading.Event()

    def on_state(msg: mqtt.MQTTMessage) -> None:
        found = topics.parse(msg.topic, site.site)
        if not msg.retain or found is None:
            return
        try:
            got[found[0]] = json.loads(msg.payload)
        except ValueError:
            got[found[0]] = None
        if wanted <= set(got):
            done.set()

    states = topics.locker_topic(site.site, topics.ANY, "state")
    with session(site, store, "verify", states, on_state, timeout):
        # retained messages follow the SUBACK at once; a locker with none retained sends none
        done.wait(min(timeout, 1.5))
    return {k: v for k, v in got.items() if k in wanted}
