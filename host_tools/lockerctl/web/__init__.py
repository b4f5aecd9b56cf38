"""The office dashboard (`lockerctl serve --http HOST:PORT`, docs/dashboard.md): a FastAPI
(Starlette) application served by uvicorn, with Jinja2 templates and live updates pushed with
server-sent events.

`start(service, host, port)` is what `serve.Service` calls: it opens its own store on the
service's database, signs opens with `opens.prepare_open` and publishes them through the
service's MQTT connection (`Service.publish_command`). `serve_store(store, site, host, port,
publish=None)` runs the same dashboard on a store alone (tests, a read-only dashboard).
Both return a started `Dashboard` (`url`, `stop()`).

Every dashboard has `/healthz` and `/metrics` (`monitoring.py`); with `oidc` settings
(`oidc.load_settings`, from `serve --oidc-*`) it also offers sign-in with the school's accounts
(`oidc.py`).
"""

from __future__ import annotations

from .app import Dashboard, create_app
from .context import Context

__all__ = ["Context", "Dashboard", "create_app", "serve_store", "start"]


def serve_store(
    store,
    site: str,
    host: str = "127.0.0.1",
    port: int = 0,
    publish=None,
    broker: tuple[str, int] | None = None,
    connected=None,
    on_stop=None,
    tls: tuple[str, str] | None = None,
    oidc=None,
    metrics_token: str | None = None,
    broker_connected=None,
) -> Dashboard:
    """A started dashboard for `site` on `store` (migrated here). `publish(locker_id,
    payload)` sends a signed command; without it the open page says there is no connection.
    `connected()` says whether commands can go out now; `on_stop()` runs after `stop()`;
    `tls` = (certificate file, key file) serves HTTPS. `oidc`: `oidc.Settings` for single
    sign-on; `metrics_token`: the bearer token `/metrics` requires (else loopback only);
    `broker_connected()`: whether the ingest link is up, for `/healthz` (default
    `connected`)."""
    from . import live, monitoring
    from . import oidc as oidc_mod

    store.migrate()
    ctx = Context(store, site, publish=publish, broker=broker, connected=connected)
    ctx.monitoring = monitoring.Monitoring(ctx, broker_connected or ctx.connected, metrics_token)
    ctx.live = live.Hub(store, site)
    if oidc is not None:
        oidc_mod.register(ctx, oidc, "https" if tls else "http")
    return Dashboard(ctx, host, port, on_stop=on_stop, tls=tls).start()


def start(service, host: str, port: int, tls: tuple[str, str] | None = None) -> Dashboard:
    """The dashboard of a running `serve.Service`."""
    from ..store import Store

    store = Store.open(service.site.db)
    return serve_store(
        store,
        service.site.site,
        host,
        port,
        publish=service.publish_command,
        broker=(service.site.broker_host, service.site.broker_port),
        connected=service.connected.is_set,
        on_stop=store.close,
        tls=tls,
        broker_connected=service.ready.is_set,
        **service.web_options,
    )
