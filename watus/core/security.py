"""One security model for the four Watus processes: loopback by default, one API key, bounded bodies.

- Every process listens on 127.0.0.1 unless told otherwise. Asked to listen elsewhere without an API key
  it refuses to start (`check_bind`), unless `WATUS_<SVC>_ALLOW_INSECURE` (or `WATUS_ALLOW_INSECURE`)
  says that anyone who can reach the port may use it.
- With a key (`WATUS_API_KEY`, or the service's own `WATUS_<SVC>_API_KEY`; see `watus.core.config`)
  every endpoint but `/health` and `/metrics` needs it, as `Authorization: Bearer <key>` or
  `X-API-Key: <key>`; otherwise 401 with the OpenAI-style error body and `WWW-Authenticate: Bearer`.
  Probes (systemd, `watus status`, load balancers) and Prometheus scrapes stay open: they reveal load
  and latency, not what was said or seen, and a scraper with a key in its config is one more secret.
- A browser cannot put a header on an `EventSource`, so a service may name login paths (the agent's
  dashboard, `/`): `GET /?key=<key>` there answers with an HttpOnly, SameSite=Strict cookie, which
  then stands for the key on every path of that service (same origin only, so no other site can use it).
- Every request body has a limit (`watus.core.bodylimit`).

`install_security` puts both middlewares on an app, the key check outermost so that a client without
the key never gets a body read. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Collection, Mapping
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watus.core.api_errors import AuthenticationError, send_error
from watus.core.bodylimit import BodyLimit, Limit
from watus.core.config import GLOBAL_INSECURE_ENV, GLOBAL_KEY_ENV, ServiceSettings

log = logging.getLogger(__name__)

#: Open without the key on every service.
OPEN_PATHS = frozenset({"/health", "/metrics"})
#: The cookie a login path sets; it carries the key itself, readable by no script (HttpOnly).
KEY_COOKIE = "watus_key"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def is_loopback(host: str) -> bool:
    """Whether `host` can be reached from this machine only (a name other than localhost is not trusted to be)."""
    if host == "localhost":
        return True
    try:  # "" and 0.0.0.0 / :: mean every address
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(name: str, settings: ServiceSettings, host: str, port: int) -> str | None:
    """Why `settings` must not listen on `host` (one line saying what to set), or None."""
    if is_loopback(host) or settings.key() is not None or settings.allow_insecure:
        return None
    prefix = settings.env_prefix()
    return (f"{name}: refusing to listen on {host}:{port} without an API key: set {prefix}API_KEY (or "
            f"{GLOBAL_KEY_ENV}) so that only clients with the key are answered, or {prefix}ALLOW_INSECURE=true "
            f"(or {GLOBAL_INSECURE_ENV}=true) to serve anyone who can reach it")


def check_bind(name: str, settings: ServiceSettings, host: str, port: int) -> bool:
    """Log and return False when the process must not start on `host`; warn when it starts open off loopback."""
    refusal = bind_refusal(name, settings, host, port)
    if refusal is not None:
        log.error("%s", refusal)
        return False
    if not is_loopback(host) and settings.key() is None:
        log.warning("%s listens on %s:%d without an API key (%sALLOW_INSECURE): anyone who can reach it is answered",
                    name, host, port, settings.env_prefix())
    return True


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except Exception:  # a malformed Cookie header (CookieError and friends) is no key
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _query_key(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key")
    return values[0] if values else None


class KeyAuth:
    """ASGI middleware: the API key on every path but `open_paths`; 401 with the error body otherwise.

    `login_paths` (GET only) also take the key as `?key=` and answer with the cookie that stands for it;
    only a service that has login paths accepts the cookie.
    """

    def __init__(self, app: ASGIApp, key: str, *, setting: str, open_paths: Collection[str] = OPEN_PATHS,
                 login_paths: Collection[str] = ()) -> None:
        self.app = app
        self._key = key.encode()
        self._setting = setting
        self._open = frozenset(open_paths)
        self._login = frozenset(login_paths)

    def _matches(self, given: str | bytes | None) -> bool:
        if not given:
            return False
        raw = given.encode() if isinstance(given, str) else given
        return hmac.compare_digest(raw.strip(), self._key)

    def _given(self, scope: Scope) -> bytes | str | None:
        scheme, _, token = (_header(scope, b"authorization") or b"").partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token
        header = _header(scope, b"x-api-key")
        if header:
            return header
        return _cookie(scope, KEY_COOKIE) if self._login else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path", "") in self._open:
            await self.app(scope, receive, send)
            return
        if self._matches(self._given(scope)):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in self._login and scope.get("method") == "GET" and self._matches(_query_key(scope)):
            await self.app(scope, receive, self._setting_cookie(send))
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_error(self._error(scope), scope, receive, send, _CHALLENGE)

    def _error(self, scope: Scope) -> AuthenticationError:
        missing = self._given(scope) is None
        how = "send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        if self._login:
            how += ", or open the dashboard once as `/?key=<key>`"
        what = "No API key" if missing else "Wrong API key"
        return AuthenticationError(f"{what}: {how} (the key is {self._setting}, else {GLOBAL_KEY_ENV}).")

    def _setting_cookie(self, send: Send) -> Send:
        jar: SimpleCookie = SimpleCookie()
        jar[KEY_COOKIE] = self._key.decode()
        jar[KEY_COOKIE].update({"httponly": "1", "samesite": "strict", "path": "/"})  # a flag: any value sets it
        cookie = jar[KEY_COOKIE].OutputString().encode("latin-1")

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return with_cookie


def install_security(app: FastAPI, settings: ServiceSettings, *, paths: Mapping[str, Limit] | None = None,
                     login_paths: Collection[str] = ()) -> None:
    """The body limit (`settings.max_body_bytes`, `paths` their own) and, when a key is set, the key check."""
    prefix = settings.env_prefix()
    app.add_middleware(BodyLimit, default=Limit(settings.max_body_bytes, f"{prefix}MAX_BODY_BYTES"), paths=paths)
    key = settings.key()
    if key is not None:
        app.add_middleware(KeyAuth, key=key, setting=f"{prefix}API_KEY", login_paths=login_paths)
