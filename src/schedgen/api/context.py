"""The API's context: what request handlers share (configuration, the Postgres pool, the
S3 and ParseJob clients, small per-process caches). One per process, built by
`create_app` and started in the app's lifespan; routes get it with `Depends(context)`."""

from __future__ import annotations

import asyncio

import anyio

from .backends import postgres
from .backends.kube import ParseJobs
from .backends.s3 import Storage
from .config import ApiConfig
from .errors import BACKEND_ERRORS

READY_TIMEOUT = 5.0  # seconds each backend has to answer a readiness check


class ApiContext:
    def __init__(self, cfg: ApiConfig):
        self.cfg = cfg
        self.pool = postgres.new_pool(cfg.database_url, cfg.db_pool_size)
        self.storage = Storage(cfg)
        self.jobs = ParseJobs(cfg)
        self.keys = postgres.KeyCache(cfg.key_cache_seconds)
        # boto3 and the Kubernetes client block: they run in threads, at most this many at once
        self.threads = anyio.CapacityLimiter(48)
        self.queue_cache: tuple[float, dict] | None = None  # (expiry, summary)
        self.last_purge = 0.0

    async def blocking(self, fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)

    async def start(self) -> None:
        await self.pool.open()  # connects in the background: the API starts while Postgres is down
        if self.cfg.watch_cache:
            self.jobs.start_cache()

    async def close(self) -> None:
        await self.pool.close()
        self.jobs.close()

    async def readiness(self) -> dict[str, str]:
        """Each backend's answer to a cheap request: "ok" or why not."""
        async def check(name, coro):
            try:
                await asyncio.wait_for(coro, READY_TIMEOUT)
                return name, "ok"
            except BACKEND_ERRORS as exc:
                return name, exc.message
            except asyncio.TimeoutError:
                return name, "timed out"

        return dict(await asyncio.gather(
            check("postgres", postgres.ping(self.pool)),
            check("s3", self.blocking(self.storage.ping)),
            check("kubernetes", self.blocking(self.jobs.ping))))
