"""Erasing a job (`DELETE /api/v1/jobs/{id}`, the right to erasure), in four steps:

1. `tombstone_rows`: tombstone the uid and delete its rows (`schedgen_erase_job`,
   migration 0006): from then on the operator's writes for that uid are no-ops.
2. `delete_parsejob_and_wait`: delete the ParseJob (uid precondition) and wait, bounded,
   until it is gone: the operator's finalizer stops its Job (Cancelled) and lets it go.
3. `erase_rows_again`: idempotent: anything that raced step 1 is gone.
4. `delete_result_and_pdf`: the result object and, when no other job (any tenant) uses
   it, the content-addressed PDF.
The Postgres connection is held only for each statement, never while waiting."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time

from schedgen.parsejob import ParseJob, result_key

from ..backends import AlreadyExists, NotFound, postgres
from ..context import ApiContext
from ..errors import ApiError
from .lookup import Job, find_job
from .uploads import upload_prefix

log = logging.getLogger("schedgen.api")

# The API's content-addressed PDFs are under uploads.upload_prefix(its namespace); older
# versions stored them under LEGACY_UPLOAD_PREFIX, which a record may still name.
LEGACY_UPLOAD_PREFIX = "uploads/sha256/"
_CONTENT_NAME = r"[0-9a-f]{64}\.pdf"
CLOCK_SLACK_SECONDS = 2.0  # S3's and the API server's clocks, whole seconds both

Pdf = tuple[str, str]  # (bucket, key) of an uploaded PDF


async def erase(ctx: ApiContext, tenant: str, job_id: str) -> None:
    """Erase the tenant's job `job_id` (404 if it has none): the steps above, in order."""
    job = await find_job(ctx, tenant, job_id)
    pdf = await uploaded_pdf(ctx, job)  # read first: steps 1 and 2 remove what names it
    await tombstone_rows(ctx, job)
    await delete_parsejob_and_wait(ctx, job)
    await erase_rows_again(ctx, job)
    ctx.queue_cache.clear()  # the cached summaries may count the job
    await delete_result_and_pdf(ctx, job, pdf)
    log.info("erased job %s (uid %s) of tenant %s", job.name, job.uid, tenant)


async def tombstone_rows(ctx: ApiContext, job: Job) -> None:
    """Step 1: delete the job's rows and tombstone its uid, so the operator's later writes are no-ops."""
    await postgres.erase_job(ctx.pool, job.uid, ctx.cfg.namespace, job.name, job.tenant)


async def delete_parsejob_and_wait(ctx: ApiContext, job: Job) -> None:
    """Step 2: delete the ParseJob and wait until it is gone, so its run is cancelled (or 503)."""
    if job.status["source"] == "kubernetes":  # a job known only from its record has no object
        await _delete_object(ctx, job)
    ctx.jobs.forget(job.name, job.uid)  # this process's watch cache drops it at once


async def erase_rows_again(ctx: ApiContext, job: Job) -> None:
    """Step 3: erase the rows once more, for an operator write that raced step 1."""
    await postgres.erase_job(ctx.pool, job.uid, ctx.cfg.namespace, job.name, job.tenant)


async def delete_result_and_pdf(ctx: ApiContext, job: Job, pdf: Pdf | None) -> None:
    """Step 4: delete the result and the PDF (if unused) last, once nothing can write them."""
    cfg = ctx.cfg
    await ctx.blocking(ctx.storage.delete, result_key(cfg.namespace, job.uid), cfg.results_bucket or cfg.s3_bucket)
    if pdf and await pdf_unused(ctx, pdf, job):
        await ctx.blocking(ctx.storage.delete, pdf[1], pdf[0])


async def uploaded_pdf(ctx: ApiContext, job: Job) -> Pdf | None:
    """The job's PDF when it is one of the API's content-addressed uploads (other sources
    are not the API's to delete)."""
    bucket, key = ctx.cfg.s3_bucket, None
    if job.status["source"] == "kubernetes":
        obj = ParseJob.of(ctx.jobs.cached(job.name) or await _get(ctx, job.name) or {})
        bucket, key = obj.source_bucket or bucket, obj.source_key
    else:
        record = await postgres.job_record(ctx.pool, job.tenant, ctx.cfg.namespace, job.name) or {}
        bucket, key = record.get("source_bucket") or bucket, record.get("source_key")
    if key and is_api_upload(key, ctx.cfg.namespace) and bucket == ctx.cfg.s3_bucket:
        return bucket, key
    return None


def is_api_upload(key: str, namespace: str) -> bool:
    """`key` is one of the content-addressed uploads of the API of `namespace`
    (uploads.source_key), or one that a version before the per-namespace prefix stored
    (`uploads/sha256/<sha256>.pdf`): both are the API's to delete, nothing else is."""
    prefixes = (re.escape(upload_prefix(namespace)), re.escape(LEGACY_UPLOAD_PREFIX))
    return re.fullmatch(f"(?:{'|'.join(prefixes)}){_CONTENT_NAME}", key) is not None


async def pdf_unused(ctx: ApiContext, pdf: Pdf, job: Job) -> bool:
    """No other job uses the PDF: no record (any tenant, any namespace), no live ParseJob
    of the namespace, and no upload of the same bytes in flight: every upload writes the
    object before it creates its ParseJob, within one request, so a write newer than this
    job and younger than the request timeout may be one."""
    bucket, key = pdf
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


def _epoch(value: str | None) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else 0.0
