"""Erasing a job (`DELETE /api/v1/jobs/{id}`, the right to erasure).

1. Tombstone the uid and delete its rows (`schedgen_erase_job`, migration 0006): from
   then on the operator's writes for that uid are no-ops, so nothing can come back.
2. Delete the ParseJob (uid precondition) and wait, bounded, until it is gone: the
   operator's finalizer stops its Job (Cancelled) and lets it go.
3. Erase the rows again (idempotent: anything that raced step 1 is gone).
4. Delete the result object and, when no other job (any tenant) uses it, the
   content-addressed PDF.
The Postgres connection is held only for each statement, never while waiting."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from schedgen.parsejob import ParseJob, result_key

from ..backends import AlreadyExists, NotFound, postgres
from ..context import ApiContext
from ..errors import ApiError
from .lookup import Job, find_job

log = logging.getLogger("schedgen.api")

UPLOAD_PREFIX = "uploads/sha256/"  # the API's content-addressed PDFs (uploads.source_key)
CLOCK_SLACK_SECONDS = 2.0  # S3's and the API server's clocks, whole seconds both


async def erase(ctx: ApiContext, tenant: str, job_id: str) -> None:
    job = await find_job(ctx, tenant, job_id)
    ns = ctx.cfg.namespace
    source = await _source(ctx, job)
    await postgres.erase_job(ctx.pool, job.uid, ns, job.name, tenant)
    if job.status["source"] == "kubernetes":
        await _delete_object(ctx, job)
    ctx.jobs.forget(job.name, job.uid)
    await postgres.erase_job(ctx.pool, job.uid, ns, job.name, tenant)
    ctx.queue_cache = None
    await ctx.blocking(ctx.storage.delete, result_key(ns, job.uid), ctx.cfg.results_bucket or ctx.cfg.s3_bucket)
    if source and await _unused(ctx, source, job):
        await ctx.blocking(ctx.storage.delete, source[1], source[0])
    log.info("erased job %s (uid %s) of tenant %s", job.name, job.uid, tenant)


async def _source(ctx: ApiContext, job: Job) -> tuple[str, str] | None:
    """The job's PDF (bucket, key) when it is one of the API's content-addressed uploads."""
    bucket, key = ctx.cfg.s3_bucket, None
    if job.status["source"] == "kubernetes":
        obj = ParseJob.of(ctx.jobs.cached(job.name) or await _get(ctx, job.name) or {})
        bucket, key = obj.source_bucket or bucket, obj.source_key
    else:
        record = await postgres.job_record(ctx.pool, ctx.cfg.namespace, job.name)
        key = (record or {}).get("source_key")
    if key and key.startswith(UPLOAD_PREFIX) and bucket == ctx.cfg.s3_bucket:
        return bucket, key
    return None


async def _get(ctx: ApiContext, name: str) -> dict | None:
    try:
        return await ctx.blocking(ctx.jobs.get, name)
    except NotFound:
        return None


async def _delete_object(ctx: ApiContext, job: Job) -> None:
    """Delete the ParseJob and wait (bounded) until that object is gone."""
    try:
        await ctx.blocking(ctx.jobs.delete, job.name, job.uid)
    except (NotFound, AlreadyExists):  # gone already, or the name is another object now
        return
    deadline = time.monotonic() + ctx.cfg.erase_wait_seconds
    while time.monotonic() < deadline:
        obj = await _get(ctx, job.name)
        if obj is None or obj["metadata"]["uid"] != job.uid:
            return
        await asyncio.sleep(0.2)
    raise ApiError(503, "ErasurePending", f"job {job.name} is being cancelled; its rows are erased already. "
                   "Repeat the DELETE to finish erasing it", {"Retry-After": "5"})


async def _unused(ctx: ApiContext, source: tuple[str, str], job: Job) -> bool:
    """No other job uses the PDF: no record (any tenant, any namespace), no live ParseJob
    of the namespace, and no upload of the same bytes in flight: every upload writes the
    object before it creates its ParseJob, within one request, so a write newer than this
    job and younger than the request timeout may be one."""
    bucket, key = source
    if await postgres.source_key_in_use(ctx.pool, key, job.uid):
        return False
    for other in map(ParseJob.of, await ctx.blocking(ctx.jobs.list_all)):
        if other.source_key == key and other.uid != job.uid:
            return False
    modified = await ctx.blocking(ctx.storage.modified, key, bucket)
    if modified is None:
        return False
    # an upload's put and create happen within one request (request_timeout_seconds)
    in_flight_window = ctx.cfg.request_timeout_seconds + CLOCK_SLACK_SECONDS
    return (modified <= _epoch(job.status.get("createdAt")) + CLOCK_SLACK_SECONDS
            or time.time() - modified > in_flight_window)


def _epoch(value: str | None) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else 0.0
