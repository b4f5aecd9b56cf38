"""The dashboard's application and its server.

`create_app(ctx)` builds the FastAPI (Starlette) application: the middleware of
`middleware.py`, the routes of `routes/` (plus `/live`, `/healthz`, `/metrics`, single sign-on),
the static files, and the error pages. `Dashboard(ctx, host, port, tls=...)` serves it with
uvicorn in a thread of its own (`start()`, `url`, `stop()`).

The connection handling in front of uvicorn's HTTP protocol (`_Gate`) is ours, for three things
uvicorn does not offer: at most MAX_CONNECTIONS_PER_CLIENT open connections from one address
(MAX_CONNECTIONS in all), closed as soon as they are accepted, before anything is read; the TLS
handshake done per connection and bounded (60 s) so that a refused one is one line in the log
(`TLS handshake with ADDRESS refused: REASON`), never a traceback; and a connection that sends
nothing for IDLE_SECONDS closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles

from . import live, monitoring, oidc
from .context import Context
from .middleware import Authentication, BodyBounds, HeadAsGet, SecurityHeaders, error_page
from .routes import ROUTERS

log = logging.getLogger("lockerctl.web")

STATIC_DIR = Path(__file__).parent / "static"
LISTEN_BACKLOG = 128
MAX_CONNECTIONS_PER_CLIENT = 64  # open connections from one address; more are closed at once
MAX_CONNECTIONS = 512  # open connections in all
IDLE_SECONDS = 60  # a connection that sends nothing (or never finishes its handshake)


class _Static(StaticFiles):
    """The dashboard's own files, revalidated by the browser on each use."""

    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["cache-control"] = "no-cache"
        return response


_PLAIN = {"Not Found": "no such page", "Method Not Allowed": "method not allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = str(getattr(exc, "detail", "") or "error")
    detail = _PLAIN.get(detail, detail)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": detail}, status, headers=getattr(exc, "headers", None))
    return error_page(status, detail)


async def _validation_error(request: Request, exc: Exception) -> Response:
    errors: list = getattr(exc, "errors", list)()
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": "bad request", "detail": errors}, 422)
    return error_page(400, "bad request")


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback; the visitor gets a page, not a trace.
    return error_page(500, "something went wrong on the server (see its log)")


def create_app(ctx: Context) -> FastAPI:
    app = FastAPI(
        title="classlocker dashboard API",
        version="1",
        description="Locker state, alerts, the audit trail, grants and opens for a school's "
        "other systems. Authenticate with `Authorization: Bearer <API token>` (API tokens page, "
        "or `lockerctl token add`).",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    for router in (*ROUTERS, live.router, monitoring.router, oidc.router):
        app.include_router(router)
    app.mount("/static", _Static(directory=STATIC_DIR), name="static")
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(Authentication, ctx=ctx)
    app.add_middleware(BodyBounds)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders, tls=ctx.tls)
    return app


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server context for the dashboard: TLS 1.2 or later, the certificate chain in `certfile`
    (PEM, the server's certificate first) and its key in `keyfile`. ValueError with a one-line
    reason when they cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for name in (certfile, keyfile):
        try:
            with open(name, "rb"):
                pass
        except FileNotFoundError:
            raise ValueError(f"{name}: no such file") from None
        except OSError as e:
            raise ValueError(f"{name}: {e.strerror or e}") from None
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as e:
        raise ValueError(
            f"{certfile} and {keyfile} are not a PEM certificate and its private key"
            f" ({getattr(e, 'reason', None) or e.__class__.__name__})"
        ) from None
    return context


class _Connections:
    """Open connections per client address."""

    def __init__(self):
        self.open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        n = self.open.get(address, 0)
        if n >= MAX_CONNECTIONS_PER_CLIENT or sum(self.open.values()) >= MAX_CONNECTIONS:
            return False
        self.open[address] = n + 1
        return True

    def release(self, address: str) -> None:
        n = self.open.get(address, 0) - 1
        if n > 0:
            self.open[address] = n
        else:
            self.open.pop(address, None)


class _Gate(asyncio.Protocol):
    """Admits a connection (the per-address cap), does its TLS handshake, then hands it to
    uvicorn's HTTP protocol (`inner`)."""

    def __init__(self, make_inner, connections: _Connections, context: ssl.SSLContext | None):
        self.make_inner = make_inner
        self.connections = connections
        self.context = context
        self.address = ""
        self.inner: asyncio.Protocol | None = None
        self.early: list[bytes] = []  # what came with the end of the handshake

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if peer else ""
        if not self.connections.admit(self.address):
            log.warning("too many connections from %s: one closed", self.address)
            transport.abort()
            self.address = ""
            return
        loop = asyncio.get_running_loop()
        if self.context is None:
            self._hand_over(transport)
            return
        transport.pause_reading()
        loop.create_task(self._handshake(loop, transport))

    async def _handshake(self, loop, transport) -> None:
        try:
            wrapped = await loop.start_tls(
                transport,
                self,
                self.context,
                server_side=True,
                ssl_handshake_timeout=IDLE_SECONDS,
                ssl_shutdown_timeout=1,  # a client that never answers close_notify
            )
        except ssl.SSLError as e:
            log.info("TLS handshake with %s refused: %s", self.address, e.reason or e)
            wrapped = None
        except (OSError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "strerror", None) or type(e).__name__
            # a port check, a client that gave up: nothing worth a line at info
            log.debug("client %s dropped: %s", self.address, reason)
            wrapped = None
        if wrapped is None:
            transport.abort()
            self.released()
            return
        self._hand_over(wrapped)

    def _hand_over(self, transport) -> None:
        inner = self.make_inner()
        self.inner = inner
        tracked = _Tracked(inner, self, transport)
        transport.set_protocol(tracked)
        inner.connection_made(transport)
        early, self.early = self.early, []
        for data in early:
            tracked.data_received(data)

    def data_received(self, data: bytes) -> None:
        # TLS: a request that arrives with the handshake's last message comes here, before
        # the connection is handed over
        self.early.append(data)

    def connection_lost(self, exc) -> None:
        if self.inner is None:  # closed before it was handed over
            self.released()

    def released(self) -> None:
        if self.address:
            self.connections.release(self.address)
            self.address = ""


class _Tracked(asyncio.Protocol):
    """uvicorn's protocol, with the gate told when its connection ends."""

    def __init__(self, inner, gate: _Gate, transport):
        self.inner = inner
        self.gate = gate
        # closed if it sends nothing at all (uvicorn times out idle connections only after
        # a first answer)
        self.idle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            IDLE_SECONDS, transport.close
        )

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc) -> None:
        if self.idle is not None:
            self.idle.cancel()
        try:
            self.inner.connection_lost(exc)
        finally:
            self.gate.released()


class Dashboard:
    """A running dashboard: `url`, `stop()`."""

    def __init__(self, ctx: Context, host: str, port: int, on_stop=None, tls=None):
        """`tls`: (certificate file, key file) to serve HTTPS; see `tls_context`."""
        import uvicorn

        self.app = ctx  # the shared state (tests reach `dashboard.app.oidc`)
        self.on_stop = on_stop  # called after the server has stopped (closes its store)
        context = tls_context(*tls) if tls else None
        self.scheme = "https" if context is not None else "http"
        ctx.tls = context is not None
        self.asgi = create_app(ctx)
        self.sock = _listen(host, port)
        bound, self.port = self.sock.getsockname()[:2]
        self.host = bound
        connections = _Connections()

        def gate(config, server_state, app_state, _loop=None):
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            def inner():
                return HttpToolsProtocol(
                    config=config, server_state=server_state, app_state=app_state, _loop=_loop
                )

            return _Gate(inner, connections, context)

        config = uvicorn.Config(
            self.asgi,
            http=gate,  # type: ignore[arg-type]
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=IDLE_SECONDS,
            timeout_graceful_shutdown=2,
            backlog=LISTEN_BACKLOG * 16,
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # no start-up banner
        self.thread = threading.Thread(target=self._run, name="dashboard", daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def start(self) -> Dashboard:
        self.thread.start()
        log.info("dashboard on %s", self.url)
        return self

    def stop(self) -> None:
        if self.app.live is not None:
            self.app.live.stop()
        self.server.should_exit = True
        self.thread.join(10)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.on_stop is not None:
            self.on_stop()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG * 16)
    sock.setblocking(False)
    return sock
