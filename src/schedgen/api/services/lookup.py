"""A tenant's job and its status document, and waiting for it to finish.

A job answers from its ParseJob while the object exists and from the operator's Postgres
record after retention deleted it. The mappers from either source to the API's shape
are plain functions of dicts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

from schedgen import queue_summary
from schedgen.parsejob import FINAL_PHASES, QUEUED, ParseJob

from ..backends import NotFound, postgres
from ..context import ApiContext
from ..errors import not_found


@dataclass(frozen=True)
class Job:
    name: str
    uid: str
    tenant: str
    phase: str
    kind: str | None  # known once the job succeeded
    status: dict  # the API's status document

    @classmethod
    def of(cls, status: dict) -> "Job":
        kind = (status["result"] or {}).get("kind")
        return cls(status["id"], status["uid"], status["tenant"], status["phase"], kind, status)


def status_from_object(obj: dict, queue: dict | None = None) -> dict:
    """The status document of a ParseJob object (`source: kubernetes`): identity and spec
    through the shared `ParseJob` rules, the status fields as the operator wrote them, a
    waiting job's place from the operator's published queue (`queue`)."""
    job, st = ParseJob.of(obj), obj.get("status") or {}
    phase = st.get("phase") or QUEUED
    result = st.get("result") or None
    error = st.get("error") or None
    return {
        "id": job.name, "uid": job.uid, "tenant": job.tenant, "priority": job.priority,
        "scheduleType": job.schedule_type, "phase": phase,
        "queuePosition": queue_summary.position_of(queue, job.namespace, job.name) if phase == QUEUED else None,
        "attempts": int(st.get("attempts") or 0),
        "result": {k: result.get(k) for k in ("kind", "events", "pages", "parseSeconds")} if result else None,
        "error": {k: error.get(k) for k in ("reason", "code", "message")} if error else None,
        "createdAt": job.created or None, "startedAt": st.get("startedAt"),
        "completedAt": st.get("completedAt"), "source": "kubernetes",
    }


def status_from_record(name: str, r: dict) -> dict:
    """The status document of a `parse_jobs` row (`source: records`), same shape."""
    result = None
    if r["kind"] or r["event_count"] is not None:
        result = {"kind": r["kind"], "events": r["event_count"], "pages": r["pages"],
                  "parseSeconds": r["parse_seconds"]}
    error = None
    if r["error_reason"] or r["error_message"]:
        error = {"reason": r["error_reason"], "code": r["error_code"], "message": r["error_message"]}
    return {
        "id": name, "uid": str(r["uid"]), "tenant": r["tenant"], "priority": r["priority"],
        "scheduleType": r["schedule_type"], "phase": r["phase"], "queuePosition": None,
        "attempts": int(r["attempts"] or 0), "result": result, "error": error,
        "createdAt": iso(r["created_at"]), "startedAt": iso(r["started_at"]),
        "completedAt": iso(r["completed_at"]), "source": "records",
    }


def iso(value: dt.datetime | None) -> str | None:
    """A timestamp as Kubernetes writes them (UTC, whole seconds), so both sources agree."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


async def lookup(ctx: ApiContext, name: str, tenant: str) -> Job | None:
    """The tenant's job `name`; None when it does not exist or is another tenant's."""
    status = None
    try:
        obj = ctx.jobs.cached(name) or await ctx.blocking(ctx.jobs.get, name)
        status = status_from_object(obj, await ctx.queue_data())
    except NotFound:
        record = await postgres.job_record(ctx.pool, tenant, ctx.cfg.namespace, name)
        if record is not None:
            status = status_from_record(name, record)
    if status is None or status["tenant"] != tenant:
        return None
    return Job.of(status)


async def find_job(ctx: ApiContext, tenant: str, job_id: str) -> Job:
    """The tenant's job `job_id`, else 404 (another tenant's job does not exist for it)."""
    job = await lookup(ctx, job_id, tenant)
    if job is None:
        raise not_found(job_id)
    return job


async def wait_for(ctx: ApiContext, tenant: str, job_id: str, seconds: float) -> Job:
    """The job as soon as it is finished, or as it is when `seconds` have passed. Polls
    the watch cache (free) every 0.25 s, the API server or Postgres at most once a
    second; no connection is held in between."""
    deadline = time.monotonic() + seconds
    while True:
        job = await find_job(ctx, tenant, job_id)
        left = deadline - time.monotonic()
        if job.phase in FINAL_PHASES or left <= 0:
            return job
        pause = 0.25 if ctx.jobs.cached(job_id) is not None else 1.0
        await asyncio.sleep(min(pause, left))
