"""The Gate: what every request passes before and around the app.

A pure ASGI middleware (cheaper than BaseHTTPMiddleware and safe for streaming bodies):
the request timeout; for /api/v1 (and the compatibility routes) authentication, then the
quota of the caller's key and of its tenant; for calendar feeds the token's lookup, then
the feed's quota; a budget per client address for failed authentication only; JSON
errors for whatever fails outside a route; the request metrics.

Quotas are counted after authentication, per key: behind an ingress every client arrives
from the proxy's address, so a per-address budget would be shared by everyone, and
anonymous or made-up keys could spend a valid key's. Only failures (a missing, unknown or
revoked key, an unknown feed token) count per client address (IPv6: per /64, since one
host gets a /64 and can pick any address in it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi import FastAPI

from schedgen import logs
from schedgen.errors import DatabaseUnavailable

from . import metrics
from .backends import postgres
from .config import ANONYMOUS_MAX_PRIORITY
from .context import ApiContext
from .errors import BACKEND_ERRORS, ApiError, backend_unavailable, error_response, unavailable
from .schemas import FEEDS, PREFIX, is_compat_api_path
from .services.feeds import GONE, token_hash

log = logging.getLogger("schedgen.api")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PURGE_SECONDS = 60  # how often a process purges old rate-limit windows and idempotency keys
NEGATIVE_KEY_SECONDS = 5.0  # an unknown key is looked up at most once per this long per process
KEY_FORMAT = re.compile(r"^sgk_[A-Za-z0-9_-]{43}$")  # what postgres.new_key makes; anything else is no key
FEED_PATH = re.compile(r"^/feeds/([A-Za-z0-9_-]{32,64})\.ics$")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # anything else in X-Request-ID is replaced
IPV6_GROUP = 64  # prefix length an IPv6 client is counted by


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant always comes from here (the key), never from the request."""
    tenant: str
    admin: bool = False  # sees every tenant's queue
    max_priority: str = ANONYMOUS_MAX_PRIORITY
    key_hash: str | None = None  # None: anonymous (SCHEDGEN_API_ALLOW_ANONYMOUS)


class Exchange:
    """One request as the Gate sees it: `receive` and `send` wrapped to learn whether the
    body arrived and the answer started, and headers to add to the answer."""

    def __init__(self, receive, send):
        self._receive, self._send = receive, send
        self.started = False
        self.status = 500
        self.body_done = False
        self.headers_out: list[tuple[bytes, bytes]] = []

    async def receive(self):
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.body_done = True
        return message

    async def send(self, message):
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            if self.headers_out:
                message = {**message, "headers": list(message.get("headers", [])) + self.headers_out}
        await self._send(message)


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
        exchange = Exchange(receive, send)
        request_id = request_id_of(request_headers(scope))
        exchange.headers_out.append((b"x-request-id", request_id.encode()))
        with logs.context(request_id=request_id):
            await self._handle(scope, exchange)

    async def _handle(self, scope, exchange: Exchange) -> None:
        start = time.perf_counter()
        method = scope.get("method", "GET")
        try:
            async with asyncio.timeout(self.cfg.request_timeout_seconds):
                try:
                    await self._admit(scope, exchange.headers_out)
                    await self.app(scope, exchange.receive, exchange.send)
                except BACKEND_ERRORS as exc:
                    raise backend_unavailable(exc) from None
        except ApiError as exc:
            await self._refuse(scope, exchange, exc)
        except TimeoutError:
            await self._refuse(scope, exchange, self._timeout_error(method, exchange.body_done))
        except Exception:
            log.exception("unhandled error on %s %s", method, scope.get("path", ""))
            await self._refuse(scope, exchange, ApiError(500, "InternalError", "internal error"))
        finally:
            observe(scope, method, exchange.status, start)

    async def _refuse(self, scope, exchange: Exchange, exc: ApiError) -> None:
        if not exchange.started:  # else the client already has (part of) an answer
            await error_response(exc, path=scope.get("path", ""), compat=self.cfg.compat_routes)(
                scope, exchange.receive, exchange.send)

    async def _admit(self, scope, headers_out: list) -> None:
        """Who is calling, and whether their quota lets them (an ApiError when not): the
        principal for keyed paths, the feed for feed URLs, in the request's state."""
        path = scope.get("path", "")
        keyed = is_api_path(path) or (self.cfg.compat_routes and is_compat_api_path(path))
        if not keyed and not path.startswith(FEEDS):
            return
        headers = request_headers(scope)
        state = scope.setdefault("state", {})
        if keyed:
            state["principal"] = await self._admit_caller(scope, headers, headers_out)
        else:
            state["feed"] = await self._admit_feed(scope, headers, headers_out)
        await self._maybe_purge()

    async def _admit_caller(self, scope, headers: Mapping[str, str], headers_out: list) -> Principal:
        """Authenticate, then count the request in the caller's quota. A failed
        authentication counts in the client address's failure budget instead: it never
        spends, or waits on, a valid key's quota."""
        try:
            principal = await self._authenticate(headers)
        except ApiError:
            await self._count_failure(scope, headers, headers_out)
            raise
        logs.bind(tenant=principal.tenant)  # until the request's context ends (__call__)
        route_class = "upload" if scope.get("method") == "POST" else "read"
        decision = await self._spend_quota(scope, headers, principal, route_class)
        headers_out.extend(rate_headers(decision))
        if not decision.allowed:
            raise rate_limited(route_class, decision)
        return principal

    async def _admit_feed(self, scope, headers: Mapping[str, str], headers_out: list) -> postgres.Feed | None:
        """A feed URL's token is its key: a known token counts in its feed's quota, an
        unknown one (404) in the address's failure budget. Not a feed URL: the app answers."""
        match = FEED_PATH.match(scope.get("path", ""))
        found = await postgres.find_feed(self.ctx.pool, token_hash(match.group(1))) if match else None
        if found is None:
            await self._count_failure(scope, headers, headers_out)
            if match:
                raise ApiError(404, "FeedNotFound", GONE)
            return None
        bucket = "feed:" + token_hash(match.group(1))[:32]
        decision = await postgres.hit_rate_limit(self.ctx.pool, bucket, "read", self.cfg.reads_per_minute)
        headers_out.extend(rate_headers(decision))
        if not decision.allowed:
            raise rate_limited("read", decision)
        return found

    async def _count_failure(self, scope, headers: Mapping[str, str], headers_out: list) -> None:
        """One more failed authentication from the client's address: past the budget the
        answer is 429 instead of 401/404."""
        address = client_bucket(client_address(scope, headers, self.cfg.trusted_proxies))
        decision = await postgres.hit_rate_limit(self.ctx.pool, "fail:" + address, "auth",
                                                 self.cfg.auth_failures_per_minute)
        headers_out.extend(rate_headers(decision))
        if not decision.allowed:
            raise rate_limited("auth", decision)

    async def _spend_quota(self, scope, headers: Mapping[str, str], principal: Principal,
                           route_class: str) -> postgres.RateDecision:
        """Count the request for its key (anonymous callers: their address) and, when a
        tenant quota is set, for its tenant; one statement. The tighter decision."""
        cfg = self.cfg
        upload = route_class == "upload"
        own = ("key:" + principal.key_hash[:32] if principal.key_hash else
               "anon:" + client_bucket(client_address(scope, headers, cfg.trusted_proxies)))
        buckets = [(own, route_class, cfg.uploads_per_minute if upload else cfg.reads_per_minute)]
        tenant_limit = cfg.tenant_uploads_per_minute if upload else cfg.tenant_reads_per_minute
        if tenant_limit:
            buckets.append(("tenant:" + principal.tenant, route_class, tenant_limit))
        decisions = await postgres.hit_rate_limits(self.ctx.pool, buckets)
        return min(decisions, key=lambda d: (d.allowed, d.remaining))

    async def _authenticate(self, headers: Mapping[str, str]) -> Principal:
        key = api_key(headers)
        if key:
            key_hash = postgres.hash_key(key)
            info = await self._key_info(key_hash) if KEY_FORMAT.fullmatch(key) else None
            if info is None:
                raise ApiError(401, "InvalidApiKey", "the API key is not valid", {"WWW-Authenticate": "Bearer"})
            return Principal(info.tenant, info.admin, info.max_priority, key_hash)
        if not self.cfg.allow_anonymous:
            raise ApiError(401, "ApiKeyRequired", "an API key is required (Authorization: Bearer ...)",
                           {"WWW-Authenticate": "Bearer"})
        return Principal(tenant=self.cfg.default_tenant)

    async def _key_info(self, key_hash: str) -> postgres.KeyInfo | None:
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


def observe(scope, method: str, status: int, start: float) -> None:
    """The request metrics (route template, never the raw path: a fixed set of series)."""
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    labels = {"method": metrics.method_label(method), "route": route, "status": str(status)}
    metrics.REQUESTS.labels(**labels).inc()
    metrics.LATENCY.labels(**labels).observe(time.perf_counter() - start)


def is_api_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def request_id_of(headers: Mapping[str, str]) -> str:
    """The caller's `X-Request-ID` when it is a sane token, else a new one: it is in every
    log line of the request and in the answer's `X-Request-ID`."""
    given = headers.get("x-request-id", "")
    return given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


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
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    `X-Forwarded-For` hop that is not itself a trusted proxy (earlier hops are the
    client's to forge)."""
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


def client_bucket(address: str) -> str:
    """What a client address counts as: an IPv4 address itself, an IPv6 address its /64
    (a host picks freely within its /64), an IPv4-mapped IPv6 address the IPv4 one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a test client, a unix socket): as is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        shift = 128 - IPV6_GROUP
        return str(ipaddress.IPv6Network((int(ip) >> shift << shift, IPV6_GROUP)))
    return str(ip)


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
    what = ("failed authentications from this address" if route_class == "auth" else f"{route_class} requests")
    return ApiError(429, "RateLimited", f"more than {decision.limit} {what} per minute; retry in "
                    f"{decision.reset_seconds}s", {"Retry-After": str(decision.reset_seconds)})
