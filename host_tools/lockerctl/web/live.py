"""Live pages, pushed with server-sent events (`GET /live?part=...`), never polled by the page.

One `Hub` per dashboard watches the store (the ingest process writes events and locker states
in another process, so the store is where changes show): once a second it reads a small
signature (`store_live.live_signature`: the newest event, the trail's last entry, each locker's
status) and, when it changed, wakes every open stream. Each stream then renders the parts its
page shows, for its own account (names only for slt and admin), and sends those that changed
as one `message` event, JSON `{"parts": {"lockers": html, ...}, "alerts": n}`; at least every
25 s it renders again anyway (alerts that depend on the time of day) and otherwise sends a
comment to keep the connection open. A session that ends closes its streams (event
`signed-out`).

Parts: `lockers`, `events` (the lockers page), `alerts` (the alerts page), `outcome` (an open's
result page, with `ref=`). `static/app.js` subscribes with `EventSource`.
"""

from __future__ import annotations

import asyncio
import json
import logging

from anyio import to_thread
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ..store import live as store_live
from .deps import ANY_ROLE, Viewer, ctx, open_alert_count

log = logging.getLogger("lockerctl.web")
router = APIRouter(include_in_schema=False)
POLL_SECONDS = 1.0  # how often the hub reads the store's signature
REFRESH_SECONDS = 25.0  # a stream renders again at least this often
PARTS = ("lockers", "events", "alerts", "outcome")


class Hub:
    """Wakes the open streams when the store changes (one reader of the store per dashboard)."""

    def __init__(self, store, site: str):
        self.store = store
        self.site = site
        self.version = 0
        self.stopping = False
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signature: tuple | None = None

    def start(self) -> None:
        """Starts watching (in the running event loop), once."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._changed = asyncio.Event()
            self._task = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        while not self.stopping:
            signature: tuple | None
            try:
                signature = await to_thread.run_sync(
                    store_live.live_signature, self.store, self.site
                )
            except Exception as err:  # the store is down for now: try again
                log.debug("live: the store could not be read: %s", err)
                signature = self._signature
            if signature != self._signature:
                self._signature = signature
                self.notify()
            await asyncio.sleep(POLL_SECONDS)

    def notify(self) -> None:
        self.version += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait(self, version: int, timeout: float) -> None:
        """Returns once the version is past `version`, or after `timeout` seconds."""
        if self.version != version or self._changed is None:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def stop(self) -> None:
        """Ends the watch and every stream (from any thread)."""
        self.stopping = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.notify)
            if self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)


def render_parts(c, v: Viewer, parts: list[str], ref: str) -> dict[str, str]:
    from .routes import alerts, lockers, opens

    out = {}
    for part in parts:
        if part == "lockers":
            out[part] = lockers.lockers_fragment(c, v)
        elif part == "events":
            out[part] = lockers.recent_fragment(c, v)
        elif part == "alerts":
            out[part] = alerts.alerts_fragment(c, v)
        elif part == "outcome":
            info = c.open_info(ref)
            if info is not None:
                out[part] = opens.outcome_fragment(c, info)
    return out


def sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


@router.get("/live")
async def live(request: Request, v: Viewer = ANY_ROLE):
    c = ctx(request)
    hub = c.live
    if hub is None:  # a dashboard made without one (never by serve_store)
        hub = c.live = Hub(c.store, c.site)
    hub.start()
    wanted = [p for p in dict.fromkeys(request.query_params.getlist("part")) if p in PARTS]
    ref = request.query_params.get("ref", "")[:64]

    def snapshot():
        if v.token and c.accounts.session(v.token) is None:
            return None
        return render_parts(c, v, wanted, ref), open_alert_count(c)

    async def stream():
        sent: dict[str, str] = {}
        yield "retry: 2000\n\n"
        while not hub.stopping:
            version = hub.version
            got = await to_thread.run_sync(snapshot)
            if got is None:
                yield sse({}, "signed-out")
                return
            parts, count = got
            changed = {k: html for k, html in parts.items() if sent.get(k) != html}
            sent.update(changed)
            yield sse({"parts": changed, "alerts": count})
            await hub.wait(version, REFRESH_SECONDS)

    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
