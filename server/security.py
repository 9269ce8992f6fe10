"""Middlewares: JSON errors, the Host/Origin guard against cross-site requests, and the access token.

- Errors are JSON: input faults 4xx, storage faults 507 naming the folder, a client that went away
  mid-request a quiet 499 in the access log, anything else a 500 without a traceback.
- Every request must name one of our hosts (a DNS-rebinding page names its own).
- Mutating requests and the WebSocket upgrade must not come from another site: a foreign ``Origin``,
  ``Origin: null`` or ``Sec-Fetch-Site: cross-site`` is refused. Clients that send no Origin (scripts,
  API clients) pass.
- When a token is configured (always, beyond loopback) every request must carry it, as
  ``Authorization: Bearer``, ``?token=`` or the cookie set when the editor page is opened with ``?token=``.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger

from server.config import ServerConfig, is_loopback
from server.faults import storage_fault
from server.jsonio import BadRequest, error_body, json_response
from server.state import CONFIG

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_COOKIE = "guidegraph_token"
CLIENT_CLOSED = 499  # nginx's "client closed request", for the access log only
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Input faults and HTTP errors as JSON; anything unexpected as a JSON 500 with no traceback."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400 or (exc.content_type == "application/json"):
            raise
        body = error_body(_error_type(exc.status), exc.reason)
        response = json_response(body, status=exc.status)
        for name in (hdrs.ALLOW, hdrs.WWW_AUTHENTICATE):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except ConnectionResetError:  # the client went away mid-request: nothing broke, nobody to answer
        log.info("client closed the connection during %s %s", request.method, request.path)
        return web.Response(status=CLIENT_CLOSED)
    except Exception as exc:
        fault = storage_fault(exc, request.app[CONFIG])
        if fault is not None:
            log.error("%s %s: %s", request.method, request.path, fault)
            return json_response(fault.body(), status=fault.status)
        log.exception("unexpected error in %s %s", request.method, request.path)
        return json_response(error_body("internal_error", "internal server error"), status=500)


def _error_type(status: int) -> str:
    return {
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
    }.get(status, "http_error")


def _hostname(host: str) -> str:
    """'127.0.0.1:8188' → '127.0.0.1'; '[::1]:8188' → '::1'."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


class Guard:
    """Host, Origin and token checks for one server configuration."""

    def __init__(self, config: ServerConfig) -> None:
        self._token = config.token
        self._require_token = config.requires_token
        names = {h.lower() for h in config.extra_hosts}
        if is_loopback(config.listen):
            names |= LOOPBACK_NAMES
            self._any_host = False
        else:
            names.add(config.listen.strip("[]").lower())
            self._any_host = config.listen in ("0.0.0.0", "::")  # the token protects this case
        self._hosts = frozenset(names)

    def host_ok(self, request: web.Request) -> bool:
        host = request.headers.get(hdrs.HOST, "")
        return bool(host) and (self._any_host or _hostname(host) in self._hosts)

    def cross_site(self, request: web.Request) -> str | None:
        """Why this request looks cross-site, or None."""
        if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
            return "cross-site request"
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return None
        if origin.strip().lower() == "null":
            return "Origin: null is not accepted"
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return "malformed Origin"
        if parts.netloc.lower() != request.headers.get(hdrs.HOST, "").lower():
            return "Origin does not match Host"
        return None

    def token_ok(self, request: web.Request) -> tuple[bool, bool]:
        """(authorised, came from the query string)."""
        if not self._require_token:
            return True, False
        expected = (self._token or "").encode()
        auth = request.headers.get(hdrs.AUTHORIZATION, "")
        candidates = []
        if auth.lower().startswith("bearer "):
            candidates.append((auth[7:].strip(), False))
        if "token" in request.query:
            candidates.append((request.query["token"], True))
        if TOKEN_COOKIE in request.cookies:
            candidates.append((request.cookies[TOKEN_COOKIE], False))
        for value, from_query in candidates:
            if expected and hmac.compare_digest(value.encode(), expected):
                return True, from_query
        return False, False

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.host_ok(request):
            return json_response(error_body("forbidden", "unknown Host"), status=403)
        is_upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if request.method in MUTATING or is_upgrade:
            reason = self.cross_site(request)
            if reason is not None:
                return json_response(error_body("forbidden", reason), status=403)
        authorised, from_query = self.token_ok(request)
        if not authorised:
            denied = json_response(error_body("unauthorized", "an access token is required"), status=401)
            denied.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
            return denied
        response = await handler(request)
        if from_query and self._token and not response.prepared:
            response.set_cookie(
                TOKEN_COOKIE,
                self._token,
                httponly=True,
                samesite="Strict",
                path="/",
                secure=request.secure,
            )
        return response


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No sniffing, no framing by other sites, no referrer beyond our origin."""
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    return response


_TOKEN_PARAM = re.compile(r"([?&]token=)[^&#\s]*", re.IGNORECASE)


def redact_token(text: str) -> str:
    """``/?token=secret&x=1`` → ``/?token=<redacted>&x=1``."""
    return _TOKEN_PARAM.sub(r"\1<redacted>", text)


class AccessLog(AbstractAccessLogger):
    """One line per request, like aiohttp's own, with any ``?token=`` (path or Referer) redacted."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %s %.1fms "%s" "%s"',
            request.remote or "-",
            request.method,
            redact_token(request.path_qs),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time * 1000,
            redact_token(request.headers.get(hdrs.REFERER, "-")),
            request.headers.get(hdrs.USER_AGENT, "-"),
        )
