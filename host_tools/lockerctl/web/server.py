"""The dashboard's HTTP side: a `ThreadingHTTPServer`, requests and responses, sessions, CSRF
and the role check in front of every route. The pages themselves are in `pages.py`.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http import cookies as http_cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..accounts import Accounts, LoginLimiter, Session, User
from .html import error_html

log = logging.getLogger("lockerctl.web")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
COOKIE = "cl_session"
LOGIN_COOKIE = "cl_login"  # the login form's CSRF token, before there is a session
# Request bounds (docs/security.md, "HTTP limits"). A body is read only after the route, the
# session and the role have been checked, and never beyond these sizes.
MAX_BODY = 8 * 1024 * 1024  # a multipart upload (the roster file)
MAX_FORM_BODY = 1024 * 1024  # any other body (url-encoded forms)
MAX_FIELDS = 100  # fields of a url-encoded form
MAX_PARTS = 50  # parts of a multipart form
MAX_FIELD_BYTES = 256 * 1024  # one form value (not a file)
LISTEN_BACKLOG = 128
MAX_CONNECTIONS_PER_CLIENT = 64  # open connections from one address; more are closed at once
MAX_CONNECTIONS = 512  # open connections in all
_LENGTH_RE = re.compile(r"[0-9]{1,15}\Z")
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,8}\Z")
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]\Z")
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
]


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict
    cookies: dict
    client: str
    form: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # name -> (filename, bytes)
    session: Session | None = None
    token: str | None = None
    loader: Callable[[int], tuple[dict, dict]] | None = None  # the body, once: `load_body`

    @property
    def user(self) -> User:  # the signed-in account (routes that name it need a session)
        if self.session is None:
            raise RuntimeError("no session: this route needs a signed-in account")
        return self.session.user

    def load_body(self, limit: int = MAX_FORM_BODY) -> None:
        """Reads and parses the body into `form` and `files`, at most `limit` bytes of it (the
        route's; HTTPError 4xx past a bound); called by `App.handle` only once the request may
        go on."""
        loader, self.loader = self.loader, None
        if loader is not None:
            self.form, self.files = loader(limit)

    def q(self, name: str, default: str = "") -> str:
        return self.query.get(name, default)

    def f(self, name: str, default: str = "") -> str:
        return self.form.get(name, default)


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list = field(default_factory=list)

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(status, b"", headers=[("Location", location)])

    @classmethod
    def json(cls, data, status: int = 200) -> Response:
        return cls(status, json.dumps(data), "application/json")


def _too_large(what: str) -> HTTPError:
    return HTTPError(413, what)


def _parse_form(content_type: str, body: bytes) -> tuple[dict, dict]:
    """(fields, files) of a url-encoded or multipart body, within MAX_FIELDS, MAX_PARTS and
    MAX_FIELD_BYTES (HTTPError 400/413 otherwise)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS
            )
        except ValueError:
            raise _too_large(f"too many form fields (at most {MAX_FIELDS})") from None
        if any(len(v) > MAX_FIELD_BYTES for _, v in pairs):
            raise _too_large(f"a form field is longer than {MAX_FIELD_BYTES // 1024} KiB")
        return dict(pairs), {}
    if ctype == "multipart/form-data":
        boundary = _boundary(content_type)
        # Counted before anything is parsed: the parts are never more than MAX_PARTS.
        if body.count(b"--" + boundary.encode("latin-1")) > MAX_PARTS + 1:
            raise _too_large(f"too many parts in the form (at most {MAX_PARTS})")
        msg = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        form, files = {}, {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            filename = part.get_filename()
            if filename is not None:
                files[name] = (filename, data)
            else:
                if len(data) > MAX_FIELD_BYTES:
                    raise _too_large(f"a form field is longer than {MAX_FIELD_BYTES // 1024} KiB")
                form[name] = data.decode("utf-8", "replace")
        return form, files
    return {}, {}


def _boundary(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if _BOUNDARY_RE.match(value):
                return value
            break
    raise HTTPError(400, "multipart form without a valid boundary")


class App:
    """Routes and shared state of one dashboard (one site)."""

    def __init__(
        self, store, site: str, publish=None, broker: tuple[str, int] | None = None, connected=None
    ):
        self.store = store
        self.site = site
        self.publish = publish  # publish(locker_id, payload: bytes), or None without a broker
        self.connected = connected or (lambda: publish is not None)
        self.broker = broker or ("127.0.0.1", 1883)
        self.accounts = Accounts(store, site)
        self.login_limiter = LoginLimiter()
        self._flash: dict[str, tuple[str, str]] = {}
        self.sent: dict[str, dict] = {}  # remote opens in flight: ref -> what was sent
        self.lock = threading.Lock()
        self.routes: dict[tuple[str, str], tuple] = {}
        self.prefix_routes: list[tuple[str, str, object, tuple]] = []
        self.body_limits: dict = {}  # handler -> the largest body it reads (route(max_body=))
        self.public = {"/login"}  # paths served without a session (their handler checks access)
        self.login_links: list[str] = []  # HTML under the login form (e.g. single sign-on)

    # route table

    def route(
        self,
        method: str,
        path: str,
        roles=("office", "slt", "admin"),
        prefix=False,
        max_body: int = MAX_FORM_BODY,
    ):
        """Registers a page; `max_body`: the largest body it reads (MAX_BODY for an upload)."""

        def deco(fn):
            self.body_limits[fn] = max_body  # keyed by the handler (a function or a bound method)
            if prefix:
                self.prefix_routes.append((method, path, fn, roles))
            else:
                self.routes[(method, path)] = (fn, roles)
            return fn

        return deco

    def find(self, method: str, path: str):
        hit = self.routes.get((method, path))
        if hit:
            return hit
        for m, prefix, fn, roles in self.prefix_routes:
            if m == method and path.startswith(prefix):
                return fn, roles
        return None

    # flash messages (shown once, after a redirect)

    def flash(self, req: Request, kind: str, text: str) -> None:
        if req.token:
            with self.lock:
                self._flash[req.token] = (kind, text)

    def take_flash(self, req: Request):
        if not req.token:
            return None
        with self.lock:
            return self._flash.pop(req.token, None)

    def actor(self, req: Request) -> str:
        return f"web:{req.user.username}"

    # the request cycle

    def handle(self, req: Request) -> Response:
        if req.path.startswith("/static/"):
            return self.static(req.path[len("/static/") :])
        if req.path == "/favicon.ico":
            return Response(204)
        token = req.cookies.get(COOKIE)
        req.session = self.accounts.session(token) if token else None
        req.token = token if req.session else None
        hit = self.find(req.method, req.path)
        if req.path in self.public:
            if hit is None:
                raise HTTPError(405, "method not allowed")
            req.load_body(self.body_limits.get(hit[0], MAX_FORM_BODY))
            return hit[0](req)
        if req.session is None:
            if req.path.startswith("/api/"):
                return Response.json({"error": "not signed in"}, 401)
            if req.method == "GET":
                return Response.redirect("/login")
            raise HTTPError(403, "not signed in")
        if hit is None:
            if any(p == req.path for (_, p) in self.routes):
                raise HTTPError(405, "method not allowed")
            raise HTTPError(404, "no such page")
        fn, roles = hit
        if req.user.role not in roles:
            raise HTTPError(403, f"your role ({req.user.role}) may not use this page")
        if req.method == "POST":
            req.load_body(self.body_limits.get(fn, MAX_FORM_BODY))
            sent = req.form.get("csrf", "")
            if not sent or not hmac.compare_digest(sent, req.session.csrf):
                raise HTTPError(
                    403,
                    "the form has expired or did not come from this "
                    "dashboard (CSRF check failed); reload the page",
                )
        return fn(req)

    def static(self, name: str) -> Response:
        path = (STATIC_DIR / name).resolve()
        if STATIC_DIR.resolve() not in path.parents or not path.is_file():
            raise HTTPError(404, "no such file")
        ctype = STATIC_TYPES.get(path.suffix, "application/octet-stream")
        return Response(200, path.read_bytes(), ctype, headers=[("Cache-Control", "no-cache")])


def _handler_class(app: App, tls: bool = False):
    class Handler(BaseHTTPRequestHandler):
        server_version = "classlocker"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        # A connection that says nothing (or never finishes its TLS handshake) for this long is
        # closed: it holds a thread while it is open.
        timeout = 60

        def log_message(self, fmt, *args):
            log.debug("%s %s", self.address_string(), fmt % args)

        def _request(self, method: str) -> Request:
            parts = urllib.parse.urlsplit(self.path)
            try:
                query = dict(
                    urllib.parse.parse_qsl(
                        parts.query, keep_blank_values=True, max_num_fields=MAX_FIELDS
                    )
                )
            except ValueError:
                raise HTTPError(400, f"too many query parameters (at most {MAX_FIELDS})") from None
            jar = http_cookies.SimpleCookie()
            try:
                jar.load(self.headers.get("Cookie", ""))
            except http_cookies.CookieError:
                pass
            req = Request(
                method,
                parts.path or "/",
                query,
                {k.lower(): v for k, v in self.headers.items()},
                {k: m.value for k, m in jar.items()},
                self.client_address[0],
            )
            req.loader = self._body_reader(method)
            return req

        def _body_reader(self, method: str):
            """Checks the body's framing headers now (400/411/413/501, before anything is read)
            and returns the function that reads the body later, or None without one."""
            te = self.headers.get_all("Transfer-Encoding") or []
            cl = self.headers.get_all("Content-Length") or []
            self._body_pending = bool(te or cl)  # until read: the connection closes after
            if te and cl:
                raise HTTPError(400, "both Transfer-Encoding and Content-Length")
            ctype = self.headers.get("Content-Type", "")
            multipart = ctype.split(";", 1)[0].strip().lower() == "multipart/form-data"
            limit = MAX_BODY if multipart else MAX_FORM_BODY
            if te:
                if [v.strip().lower() for v in ",".join(te).split(",")] != ["chunked"]:
                    raise HTTPError(501, "only the chunked transfer coding is understood")
                return lambda route_limit: _parse_form(
                    ctype, self._read_chunked(min(limit, route_limit))
                )
            if len(cl) > 1 or (cl and not _LENGTH_RE.match(cl[0].strip())):
                raise HTTPError(400, "bad Content-Length")
            length = int(cl[0]) if cl else None
            if length is None:
                if method == "POST":
                    raise HTTPError(411, "a POST needs a Content-Length")
                return None
            if length > limit:
                raise HTTPError(413, f"request body too large (at most {limit // 1024} KiB)")
            if not length:
                self._body_pending = False
                return None
            if method != "POST":
                return None  # ignored; the connection is closed after the answer

            def read(route_limit: int):
                if length > route_limit:
                    raise HTTPError(
                        413, f"request body too large (at most {route_limit // 1024} KiB)"
                    )
                self._continue()
                body = self.rfile.read(length)
                if len(body) != length:
                    raise HTTPError(400, "the body ended before its Content-Length")
                self._body_pending = False
                return _parse_form(ctype, body)

            return read

        def handle_expect_100(self):
            return True  # "100 Continue" only once the body is wanted (`_continue`)

        def _continue(self) -> None:
            if self.headers.get("Expect", "").strip().lower() == "100-continue":
                self.send_response_only(100)
                self.end_headers()

        def _read_chunked(self, limit: int) -> bytes:
            """A chunked body, counted: 413 as soon as it passes `limit`."""
            self._continue()
            out = bytearray()
            while True:
                line = self.rfile.readline(80)
                size = line.split(b";", 1)[0].strip()
                if not line.endswith(b"\n") or not _CHUNK_SIZE_RE.match(size):
                    raise HTTPError(400, "bad chunked body")
                n = int(size, 16)
                if not n:
                    break
                if len(out) + n > limit:
                    raise HTTPError(413, f"request body too large (at most {limit // 1024} KiB)")
                data = self.rfile.read(n)
                if len(data) != n or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise HTTPError(400, "bad chunked body")
                out += data
            for _ in range(64):  # trailer fields, ignored
                line = self.rfile.readline(8192)
                if line in (b"\r\n", b"\n"):
                    break
                if not line.endswith(b"\n"):
                    raise HTTPError(400, "bad chunked body")
            else:
                raise HTTPError(400, "bad chunked body")
            self._body_pending = False
            return bytes(out)

        def _run(self, method: str, head: bool = False) -> None:
            self._body_pending = False
            try:
                req = self._request(method)
                resp = app.handle(req)
            except HTTPError as err:
                resp = Response(err.status, error_html(err.status, err.message))
            except Exception:
                log.exception("dashboard error on %s %s", method, self.path)
                message = "something went wrong on the server (see its log)"
                resp = Response(500, error_html(500, message))
            body = resp.body.encode() if isinstance(resp.body, str) else resp.body
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in SECURITY_HEADERS:
                self.send_header(name, value)
            if not any(h[0] == "Cache-Control" for h in resp.headers):
                self.send_header("Cache-Control", "no-store")
            if tls:
                self.send_header("Strict-Transport-Security", "max-age=31536000")
            for name, value in resp.headers:
                if tls and name == "Set-Cookie":
                    value += "; Secure"  # never sent back over plain HTTP
                self.send_header(name, value)
            if self._body_pending:  # a body left unread ends the connection
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def do_GET(self):
            self._run("GET")

        def do_HEAD(self):
            self._run("GET", head=True)

        def do_POST(self):
            self._run("POST")

    return Handler


class _Server(ThreadingHTTPServer):
    """A thread per connection, with a listen backlog of LISTEN_BACKLOG and at most
    MAX_CONNECTIONS_PER_CLIENT open connections from one address (MAX_CONNECTIONS in all):
    a connection past either is closed as soon as it is accepted, before anything is read. One
    log line, no traceback, for what clients do every day: a browser that refuses a self-signed
    certificate, a handshake that never finishes, a dropped connection."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, *args, **kw):
        self._open: dict[str, int] = {}
        self._open_lock = threading.Lock()
        super().__init__(*args, **kw)

    def _release(self, address: str) -> None:
        with self._open_lock:
            n = self._open.get(address, 0) - 1
            if n > 0:
                self._open[address] = n
            else:
                self._open.pop(address, None)

    def process_request(self, request, client_address):
        address = client_address[0]
        with self._open_lock:
            n = self._open.get(address, 0)
            full = n >= MAX_CONNECTIONS_PER_CLIENT or sum(self._open.values()) >= MAX_CONNECTIONS
            if not full:
                self._open[address] = n + 1
        if full:
            log.warning("too many connections from %s: one closed", address)
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(address)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(client_address[0])

    def handle_error(self, request, client_address):
        import sys

        e = sys.exc_info()[1]
        who = client_address[0] if client_address else "?"
        if isinstance(e, ssl.SSLError):
            log.info("TLS handshake with %s refused: %s", who, e.reason or e.strerror or e)
        elif isinstance(e, (ConnectionError, TimeoutError, OSError)):
            log.info("client %s dropped: %s", who, e.strerror or type(e).__name__)
        else:
            log.error("request from %s failed", who, exc_info=True)


class Dashboard:
    """A running dashboard: `url`, `stop()`."""

    def __init__(self, app: App, host: str, port: int, on_stop=None, tls=None):
        """`tls`: (certificate file, key file) to serve HTTPS; see `tls_context`."""
        self.app = app
        self.on_stop = on_stop  # called after the server has stopped (closes its store)
        context = tls_context(*tls) if tls else None
        self.httpd = _Server((host, port), _handler_class(app, tls=bool(tls)))
        if context is not None:
            # The handshake happens in the connection's own thread, on its first read (bounded
            # by the handler's timeout), never in the thread that accepts connections.
            self.httpd.socket = context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if context is not None else "http"
        self.httpd.daemon_threads = True
        bound, self.port = self.httpd.server_address[:2]
        self.host = bound.decode() if isinstance(bound, (bytes, bytearray)) else bound
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            name="dashboard",
            kwargs={"poll_interval": 0.5},
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> Dashboard:
        self.thread.start()
        log.info("dashboard on %s", self.url)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        if self.on_stop is not None:
            self.on_stop()


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


def cookie_header(name: str, value: str, max_age: int | None = None) -> tuple[str, str]:
    """A session-style cookie: HttpOnly, SameSite=Strict, whole site."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return ("Set-Cookie", "; ".join(parts))


def now() -> float:
    return time.time()
