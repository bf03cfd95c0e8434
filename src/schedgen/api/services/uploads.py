"""The upload flow: a received PDF becomes an S3 object and a ParseJob (docs/api.md,
"Upload, step by step"), at most once per idempotency key."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

from schedgen.parsejob import (
    ANN_CONTENT,
    ANN_CREATED,
    ANN_FILENAME,
    ANN_IDEMPOTENCY,
    API_VERSION,
    CREATED_BY_API,
    DEFAULT_PRIORITY,
    DEFAULT_SCHEDULE_TYPE,
    FINALIZER,
    KIND,
    LABEL_CREATED_BY,
    LABEL_TENANT,
    PRIORITIES,
    SCHEDULE_TYPES,
)

from .. import metrics
from ..backends import AlreadyExists, Refused, postgres
from ..config import ApiConfig
from ..context import ApiContext
from ..errors import ApiError, parsejob_refused
from ..multipart import Upload
from .lookup import lookup, status_from_object

log = logging.getLogger("schedgen.api")

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class Receipt:
    """What an accepted upload answers with: its job's status document and the file."""
    status: dict
    sha256: str
    size: int
    replayed: bool  # an earlier upload with the same idempotency key created the job


async def accept(ctx: ApiContext, upload: Upload, tenant: str, max_priority: str,
                 idempotency_key: str | None) -> Receipt:
    """Create the tenant's ParseJob for `upload` (or replay the key's job).
    `max_priority`: the most urgent priority the caller's key may ask for (else 403)."""
    priority, schedule_type = form_choices(upload.fields)
    check_priority(priority, max_priority)
    if idempotency_key is None:
        name = job_name(upload.sha256, secrets.token_hex(6))
        return await _create(ctx, tenant, upload, name, priority, schedule_type)
    key_hash = idempotency_hash(tenant, idempotency_key)
    claim = await postgres.claim_idempotency(ctx.pool, tenant, key_hash, upload.sha256, ctx.cfg.namespace,
                                             job_name(upload.sha256, key_hash[:12]))
    if claim.content_sha256 != upload.sha256:
        raise ApiError(422, "IdempotencyKeyReused", "this Idempotency-Key was used for a different file")
    if claim.job_uid:  # the job was created: never create it again
        job = await lookup(ctx, claim.job_name, tenant)
        if job is None:
            raise ApiError(409, "IdempotentJobGone",
                           f"this Idempotency-Key created job {claim.job_name}, which no longer exists")
        metrics.UPLOADS.labels(outcome="replayed").inc()
        return Receipt(job.status, upload.sha256, upload.size, replayed=True)
    return await _create(ctx, tenant, upload, claim.job_name, priority, schedule_type,
                         key_hash=key_hash, claimed=claim.new)


def form_choices(fields: dict[str, str]) -> tuple[str, str]:
    """The form's (priority, scheduleType), defaults filled in when a field is absent;
    422 for any other value, the empty one included (as the OpenAPI enums say)."""
    priority = fields.get("priority", DEFAULT_PRIORITY)
    schedule_type = fields.get("scheduleType", DEFAULT_SCHEDULE_TYPE)
    if priority not in PRIORITIES:
        raise ApiError(422, "InvalidPriority", f"priority must be one of {', '.join(PRIORITIES)}")
    if schedule_type not in SCHEDULE_TYPES:
        raise ApiError(422, "InvalidScheduleType", f"scheduleType must be one of {', '.join(SCHEDULE_TYPES)}")
    return priority, schedule_type


def check_priority(priority: str, max_priority: str) -> None:
    """403 `PriorityNotAllowed` when `priority` is more urgent than the key allows."""
    if PRIORITIES.index(priority) < PRIORITIES.index(max_priority):
        raise ApiError(403, "PriorityNotAllowed",
                       f"this API key may use priority {max_priority} at most, not {priority}")


def idempotency_hash(tenant: str, key: str) -> str:
    """What identifies an idempotency key: per tenant, never stored in clear."""
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(400, "InvalidIdempotencyKey", "Idempotency-Key must be 1-255 printable ASCII characters")
    return hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()


def job_name(content_sha: str, suffix: str) -> str:
    return f"up-{content_sha[:10]}-{suffix}"


def upload_prefix(namespace: str) -> str:
    """Where the API of `namespace` stores its uploads: under the prefix every ParseJob of
    that namespace may name (`uploads/namespaces/<namespace>/`, the chart's source policy and
    the operator's admission), the same rule as for a kubectl user's ParseJob."""
    return f"uploads/namespaces/{namespace}/sha256/"


def source_key(namespace: str, content_sha: str) -> str:
    """Content-addressed: the same file is stored once per API namespace, whoever uploads it."""
    return f"{upload_prefix(namespace)}{content_sha}.pdf"


def created_now() -> str:
    """The `ANN_CREATED` value: creationTimestamp has whole seconds, so a job created in
    the same second as a list page's last item still sorts before it (listing.py)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def parsejob_body(cfg: ApiConfig, name: str, tenant: str, upload: Upload, priority: str, schedule_type: str,
                  key_hash: str | None) -> dict:
    annotations = {ANN_CONTENT: upload.sha256, ANN_CREATED: created_now()}
    if key_hash:
        annotations[ANN_IDEMPOTENCY] = key_hash
    if upload.filename:
        annotations[ANN_FILENAME] = upload.filename
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        # the operator's finalizer from the start: one write per upload fewer than the
        # operator adding it (it would anyway, before its first step)
        "metadata": {"name": name, "labels": {LABEL_TENANT: tenant, LABEL_CREATED_BY: CREATED_BY_API},
                     "annotations": annotations, "finalizers": [FINALIZER]},
        "spec": {"source": {"s3": {"bucket": cfg.s3_bucket, "key": source_key(cfg.namespace, upload.sha256)}},
                 "scheduleType": schedule_type, "priority": priority, "tenant": tenant,
                 "deadlineSeconds": cfg.default_deadline_seconds, "maxRetries": cfg.default_max_retries},
    }


async def _create(ctx: ApiContext, tenant: str, upload: Upload, name: str, priority: str, schedule_type: str, *,
                  key_hash: str | None = None, claimed: bool = False) -> Receipt:
    body = parsejob_body(ctx.cfg, name, tenant, upload, priority, schedule_type, key_hash)
    replayed = False
    try:
        # Order matters: the PDF first, then the ParseJob (never a job without its file).
        # The object is content-addressed, so a failed create leaves only a harmless
        # object that the next upload of the same file reuses.
        key = source_key(ctx.cfg.namespace, upload.sha256)
        await ctx.blocking(ctx.storage.put, key, upload.file, upload.size, upload.sha256)
        try:
            created = await ctx.blocking(ctx.jobs.create, body)
        except AlreadyExists:
            # a concurrent retry with the same key created it first
            created = await ctx.blocking(ctx.jobs.get, name)
            if not key_hash or (created["metadata"].get("annotations") or {}).get(ANN_IDEMPOTENCY) != key_hash:
                raise ApiError(503, "NameCollision", "job name collision; retry the upload") from None
            replayed = True
        except Refused as exc:
            raise parsejob_refused(exc, ctx.cfg.namespace, name) from None
    except BaseException:
        if claimed:
            await _quietly(postgres.release_idempotency(ctx.pool, tenant, key_hash))
        raise
    if key_hash:
        await _quietly(postgres.complete_idempotency(ctx.pool, tenant, key_hash, created["metadata"]["uid"]))
    metrics.UPLOADS.labels(outcome="replayed" if replayed else "created").inc()
    metrics.UPLOAD_BYTES.inc(upload.size)
    return Receipt(status_from_object(created), upload.sha256, upload.size, replayed)


async def _quietly(coro) -> None:
    """Best effort: the upload succeeded (or failed) already; a stale key row expires."""
    try:
        await coro
    except Exception as exc:  # noqa: BLE001
        log.warning("best-effort database write failed: %s", exc)
