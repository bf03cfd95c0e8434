"""The API's context: what request handlers share (configuration, the Postgres pool, the
S3 and ParseJob clients, small per-process caches, the upload byte budget). One per
process, built by `create_app` and started in the app's lifespan; routes get it with
`Depends(context)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import anyio

from .backends import postgres
from .backends.kube import ParseJobs, QueueSummary
from .backends.s3 import Storage
from .config import ApiConfig
from .errors import BACKEND_ERRORS, ApiError

READY_TIMEOUT = 5.0  # seconds each backend has to answer a readiness check
log = logging.getLogger("schedgen.api")


class UploadBudget:
    """Bytes of uploads being received at once in this process. Their files spool to /tmp
    (an emptyDir with a sizeLimit in the chart: past it the kubelet evicts the pod), so a
    reservation is taken before the first byte is read and an upload that does not fit is
    refused at once (503), never half-written. One event loop: no lock needed."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        if self.used + size > self.limit:
            raise ApiError(503, "UploadCapacityExceeded", "too many uploads are being received; retry shortly",
                           {"Retry-After": "5", "Connection": "close"})
        self.used += size
        try:
            yield
        finally:
            self.used -= size


class ApiContext:
    def __init__(self, cfg: ApiConfig):
        self.cfg = cfg
        self.pool = postgres.new_pool(cfg.database_url.get_secret_value(), cfg.db_pool_size)
        self.storage = Storage(cfg)
        self.jobs = ParseJobs(cfg)
        self.queue = QueueSummary(cfg, self.jobs.api_client)
        self.keys = postgres.KeyCache(cfg.key_cache_seconds)
        self.uploads = UploadBudget(cfg.max_upload_bytes_in_flight)
        # boto3 and the Kubernetes client block: they run in threads, at most this many at once
        self.threads = anyio.CapacityLimiter(48)
        self.queue_cache: dict[str, tuple[float, dict]] = {}  # scope (a tenant, or every) -> (expiry, summary)
        self.last_purge = 0.0
        self._unready: dict[str, str] = {}  # backend -> the failure last logged

    async def blocking(self, fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)

    async def queue_data(self) -> dict | None:
        """The operator's published queue (waiting jobs' places), cached a moment."""
        return await self.blocking(self.queue.data)

    async def start(self) -> None:
        await self.pool.open()  # connects in the background: the API starts while Postgres is down
        if self.cfg.watch_cache:
            self.jobs.start_cache()

    async def close(self) -> None:
        await self.pool.close()
        self.jobs.close()

    async def readiness(self) -> dict[str, str]:
        """Each backend's answer to a cheap request: "ok" or "unavailable". Nothing more
        leaves the process (probes answer without a key): why a backend failed is logged,
        once per change."""
        async def check(name, coro):
            try:
                await asyncio.wait_for(coro, READY_TIMEOUT)
                self._unready.pop(name, None)
                return name, "ok"
            except (*BACKEND_ERRORS, asyncio.TimeoutError) as exc:
                reason = getattr(exc, "message", None) or f"no answer within {READY_TIMEOUT:g}s"
                if self._unready.get(name) != reason:
                    log.warning("readiness: %s unavailable: %s", name, reason)
                    self._unready[name] = reason
                return name, "unavailable"

        return dict(await asyncio.gather(
            check("database", postgres.ping(self.pool)),
            check("storage", self.blocking(self.storage.ping)),
            check("kubernetes", self.blocking(self.jobs.ping))))
