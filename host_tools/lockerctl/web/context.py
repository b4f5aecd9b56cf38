"""What every route of one dashboard shares: the store and site, the MQTT publisher, accounts
and the sign-in limiter, flash messages and the opens in flight. One `Context` per dashboard;
the Starlette application keeps it in `app.state.ctx` (routes reach it as `ctx(request)`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..accounts import Accounts, LoginLimiter

ALL = ("office", "slt", "admin")
SLT = ("slt", "admin")
ADMIN = ("admin",)
PUBLIC = ("/login", "/favicon.ico", "/healthz", "/metrics")  # served without a session

MAX_OPENS_KEPT = 200  # opens in flight remembered for their result page (oldest dropped)


class Context:
    """The shared state of one dashboard (one site)."""

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
        self.lock = threading.Lock()
        self._flash: dict[str, tuple[str, str]] = {}
        self.sent: dict[str, dict] = {}  # remote opens in flight: ref -> what was sent
        # (typed loosely: those modules build on this one)
        self.oidc: Any = None  # oidc.SignIn, with `serve --oidc-*`
        self.monitoring: Any = None  # monitoring.Monitoring: /healthz and /metrics
        self.live: Any = None  # live.Hub: pushes changes to open pages
        self.tls = False
        self.public = set(PUBLIC)  # paths served without a session (oidc.register adds two)

    def timezone(self) -> str:
        return self.store.timezone(self.site)

    # flash messages (shown once, after a redirect), keyed by the session's cookie token

    def flash(self, token: str | None, kind: str, text: str) -> None:
        if token:
            with self.lock:
                self._flash[token] = (kind, text)

    def take_flash(self, token: str | None):
        if not token:
            return None
        with self.lock:
            return self._flash.pop(token, None)

    # opens in flight

    def remember_open(self, ref: str, info: dict) -> None:
        with self.lock:
            self.sent[ref] = {**info, "at": time.time()}
            if len(self.sent) > MAX_OPENS_KEPT:
                for k in list(self.sent)[:50]:
                    del self.sent[k]

    def open_info(self, ref: str) -> dict | None:
        with self.lock:
            return self.sent.get(ref)
