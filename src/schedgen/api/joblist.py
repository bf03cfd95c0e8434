"""The tenant's job list (newest first, keyset pagination) and waiting for a job to finish.

The list merges the live ParseJobs of the API's namespace with the Postgres records
(they outlive retention), one entry per job id: the live object answers while it
exists. The order is (createdAt, id) descending; the cursor is that key of the last
item, opaque (base64url JSON), so jobs created after the first page never shift later
pages."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import time

from . import jobs, store
from .errors import ApiError
from .services import Services

MAX_LIMIT = 200
# creationTimestamp has whole seconds; uploads also note the creation to the microsecond,
# so a job created in the same second as a page's last item still sorts before it
ANN_CREATED = "schedgen.io/created-at"


def encode_cursor(key: tuple[dt.datetime, str]) -> str:
    raw = json.dumps([key[0].isoformat(), key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, name = json.loads(raw)
        when = dt.datetime.fromisoformat(ts)
        if when.tzinfo is None or not isinstance(name, str) or len(name) > 63:
            raise ValueError("bad cursor")
        return when, name
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "InvalidParameters", "cursor: not a cursor this API returned") from None


def _created(value: str | None) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def created_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


async def list_jobs(svc: Services, tenant: str, phase: str | None, limit: int, cursor: str | None) -> dict:
    before = decode_cursor(cursor) if cursor else None
    items = await svc.blocking(svc.jobs.list_all)
    live: list[tuple[tuple[dt.datetime, str], dict]] = []
    live_names = []
    for obj in items:
        if jobs.tenant_of(obj) != tenant:
            continue
        live_names.append(obj["metadata"]["name"])
        status = jobs.status_from_object(obj)
        meta = obj["metadata"]
        key = (_created((meta.get("annotations") or {}).get(ANN_CREATED) or meta.get("creationTimestamp")),
               status["id"])
        if (phase is None or status["phase"] == phase) and (before is None or key < before):
            live.append((key, status))
    records = await store.list_records(svc.pool, svc.cfg.namespace, tenant, phase, before, live_names, limit + 1)
    merged = live + [((r["created_at"], r["name"]), jobs.status_from_record(r["name"], r)) for r in records]
    merged.sort(key=lambda pair: pair[0], reverse=True)
    page = merged[:limit]
    more = len(merged) > limit
    return {"items": [status for _, status in page], "nextCursor": encode_cursor(page[-1][0]) if more else None}


async def wait_for(svc: Services, tenant: str, job_id: str, seconds: float) -> jobs.Job:
    """The job as soon as it is finished, or as it is when `seconds` have passed. Polls
    the watch cache (free) every 0.25 s, the API server or Postgres at most once a
    second; no connection is held in between."""
    deadline = time.monotonic() + seconds
    while True:
        job = await jobs.find_job(svc, tenant, job_id)
        left = deadline - time.monotonic()
        if job.phase in jobs.FINISHED or left <= 0:
            return job
        pause = 0.25 if svc.jobs.cached(job_id) is not None else 1.0
        await asyncio.sleep(min(pause, left))
