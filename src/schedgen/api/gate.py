"""The Gate: what every request passes before and around the app.

A pure ASGI middleware (cheaper than BaseHTTPMiddleware and safe for streaming bodies):
the request timeout, authentication and the shared rate limit for /api/v1, JSON errors
for whatever fails outside a route, and the request metrics.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi import FastAPI

from schedgen.errors import DatabaseUnavailable

from . import metrics
from .backends import postgres
from .config import ANONYMOUS_MAX_PRIORITY
from .context import ApiContext
from .errors import BACKEND_ERRORS, ApiError, backend_unavailable, error_response, unavailable
from .schemas import FEEDS, PREFIX, is_compat_api_path

log = logging.getLogger("schedgen.api")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PURGE_SECONDS = 60  # how often a process purges old rate-limit windows and idempotency keys


NEGATIVE_KEY_SECONDS = 5.0  # an unknown key is looked up at most once per this long per process


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant always comes from here (the key), never from the request."""
    tenant: str
    admin: bool = False  # sees every tenant's queue
    max_priority: str = ANONYMOUS_MAX_PRIORITY


class Gate:
    def __init__(self, app: FastAPI):
        self.app = app
        self.ctx: ApiContext = app.state.context
        self.cfg = self.ctx.cfg
        # unknown keys apart from known ones: a flood of made-up keys cannot evict valid ones
        self.unknown_keys = postgres.KeyCache(min(NEGATIVE_KEY_SECONDS, self.cfg.key_cache_seconds))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        method = scope.get("method", "GET")
        state = {"started": False, "status": 500, "body_done": False}
        headers_out: list[tuple[bytes, bytes]] = []

        async def guarded_receive():
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = message["status"]
                if headers_out:
                    message = {**message, "headers": list(message.get("headers", [])) + headers_out}
            await send(message)

        async def refuse(exc: ApiError) -> None:
            if not state["started"]:  # else the client already has (part of) an answer
                await error_response(exc, path=scope.get("path", ""), compat=self.cfg.compat_routes)(
                    scope, receive, guarded_send)

        try:
            async with asyncio.timeout(self.cfg.request_timeout_seconds):
                try:
                    path = scope.get("path", "")
                    keyed = is_api_path(path) or (self.cfg.compat_routes and is_compat_api_path(path))
                    if keyed or path.startswith(FEEDS):  # feeds: limited, but the token is the key
                        headers = request_headers(scope)
                        route_class, decision = await self._count(scope, headers)
                        headers_out.extend(rate_headers(decision))  # on the 429 and 401 too
                        if not decision.allowed:
                            raise rate_limited(route_class, decision)
                        if keyed:
                            scope.setdefault("state", {})["principal"] = await self._authenticate(headers)
                        await self._maybe_purge()
                    await self.app(scope, guarded_receive, guarded_send)
                except BACKEND_ERRORS as exc:
                    raise backend_unavailable(exc) from None
        except ApiError as exc:
            await refuse(exc)
        except TimeoutError:
            await refuse(self._timeout_error(method, state["body_done"]))
        except Exception:
            log.exception("unhandled error on %s %s", method, scope.get("path", ""))
            await refuse(ApiError(500, "InternalError", "internal error"))
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            status = str(state["status"])
            labels = {"method": metrics.method_label(method), "route": route, "status": status}
            metrics.REQUESTS.labels(**labels).inc()
            metrics.LATENCY.labels(**labels).observe(time.perf_counter() - start)

    async def _count(self, scope, headers: Mapping[str, str]) -> tuple[str, postgres.RateDecision]:
        """Count the request in its client address's window, before any key lookup: an
        unknown key costs no more than a rate-limited request."""
        address = client_address(scope, headers, self.cfg.trusted_proxies)
        route_class = "upload" if scope.get("method") == "POST" else "read"
        limit = self.cfg.uploads_per_minute if route_class == "upload" else self.cfg.reads_per_minute
        return route_class, await postgres.hit_rate_limit(self.ctx.pool, "ip:" + address, route_class, limit)

    async def _authenticate(self, headers: Mapping[str, str]) -> Principal:
        key = api_key(headers)
        if key:
            info = await self._key_info(key) if len(key) <= 200 else None
            if info is None:
                raise ApiError(401, "InvalidApiKey", "the API key is not valid", {"WWW-Authenticate": "Bearer"})
            return Principal(tenant=info.tenant, admin=info.admin, max_priority=info.max_priority)
        if not self.cfg.allow_anonymous:
            raise ApiError(401, "ApiKeyRequired", "an API key is required (Authorization: Bearer ...)",
                           {"WWW-Authenticate": "Bearer"})
        return Principal(tenant=self.cfg.default_tenant)

    async def _key_info(self, key: str) -> postgres.KeyInfo | None:
        key_hash = postgres.hash_key(key)
        for cache in (self.ctx.keys, self.unknown_keys):
            known, info = cache.get(key_hash)
            if known:
                return info
        info = await postgres.key_info(self.ctx.pool, key_hash)
        (self.ctx.keys if info else self.unknown_keys).put(key_hash, info)
        return info

    async def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self.ctx.last_purge < PURGE_SECONDS:
            return
        self.ctx.last_purge = now
        try:
            await postgres.purge(self.ctx.pool, self.cfg.idempotency_ttl_seconds)
        except DatabaseUnavailable:
            pass  # the next request's process tries again

    def _timeout_error(self, method: str, body_done: bool) -> ApiError:
        if body_done or method in ("GET", "HEAD"):
            return unavailable("RequestTimeout", f"no answer within {self.cfg.request_timeout_seconds:g}s")
        return ApiError(408, "RequestTimeout", "the request body did not arrive in time", {"Connection": "close"})


def is_api_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def request_headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}


def api_key(headers: Mapping[str, str]) -> str | None:
    """`X-API-Key`, else the token of `Authorization: Bearer`."""
    key = headers.get("x-api-key")
    auth = headers.get("authorization")
    if key is None and auth and auth[:7].lower() == "bearer ":
        key = auth[7:].strip()
    return key


def client_address(scope: Mapping, headers: Mapping[str, str], trusted: Sequence[Network]) -> str:
    """The client's address for rate limiting: the peer, or, when the peer is a trusted
    proxy, the nearest `X-Forwarded-For` hop that is not itself a trusted proxy (earlier
    hops are the client's to forge)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # garbage: do not trust any of it
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def rate_headers(decision: postgres.RateDecision) -> list[tuple[bytes, bytes]]:
    return [(b"ratelimit-limit", str(decision.limit).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
            (b"ratelimit-reset", str(decision.reset_seconds).encode()),
            (b"ratelimit-policy", f"{decision.limit};w={postgres.WINDOW_SECONDS}".encode())]


def rate_limited(route_class: str, decision: postgres.RateDecision) -> ApiError:
    metrics.RATE_LIMITED.labels(route_class=route_class).inc()
    return ApiError(429, "RateLimited", f"more than {decision.limit} {route_class} requests per minute; retry in "
                    f"{decision.reset_seconds}s", {"Retry-After": str(decision.reset_seconds)})
