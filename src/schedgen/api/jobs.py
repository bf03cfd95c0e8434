"""Job status, events and the queue summary.

A job answers from its ParseJob while the object exists and from the operator's Postgres
record after retention deleted it. The mappers from either source to the API's shape
are plain functions of dicts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

from schedgen.models import Event
from schedgen.parsejob import (
    CANCELLED,
    DEFAULT_SCHEDULE_TYPE,
    FAILED,
    QUEUED,
    RUNNING,
    SCHEDULE_KINDS,
    SUCCEEDED,
    priority_of,
)

from . import store
from .backends import NotFound
from .errors import ApiError, not_found
from .services import Services

FINISHED = (SUCCEEDED, FAILED, CANCELLED)  # in the order the queue summary counts them
NOT_RECORDED = {"Retry-After": "2"}  # the operator records results within moments


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


def tenant_of(obj: dict) -> str:
    """A ParseJob's tenant: spec.tenant, else its namespace."""
    return (obj.get("spec") or {}).get("tenant") or obj["metadata"]["namespace"]


def status_from_object(obj: dict) -> dict:
    """The status document of a ParseJob object (`source: kubernetes`)."""
    meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    phase = st.get("phase") or QUEUED
    result = st.get("result") or None
    error = st.get("error") or None
    return {
        "id": meta["name"], "uid": meta["uid"], "tenant": tenant_of(obj), "priority": priority_of(obj),
        "scheduleType": spec.get("scheduleType") or DEFAULT_SCHEDULE_TYPE, "phase": phase,
        "queuePosition": st.get("queuePosition") if phase == QUEUED else None,
        "attempts": int(st.get("attempts") or 0),
        "result": {k: result.get(k) for k in ("kind", "events", "pages", "parseSeconds")} if result else None,
        "error": {k: error.get(k) for k in ("reason", "code", "message")} if error else None,
        "createdAt": meta.get("creationTimestamp"), "startedAt": st.get("startedAt"),
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


async def lookup(svc: Services, name: str, tenant: str) -> Job | None:
    """The tenant's job `name`; None when it does not exist or is another tenant's."""
    status = None
    try:
        obj = svc.jobs.cached(name) or await svc.blocking(svc.jobs.get, name)
        status = status_from_object(obj)
    except NotFound:
        record = await store.job_record(svc.pool, svc.cfg.namespace, name)
        if record is not None:
            status = status_from_record(name, record)
    if status is None or status["tenant"] != tenant:
        return None
    return Job.of(status)


async def find_job(svc: Services, tenant: str, job_id: str) -> Job:
    job = await lookup(svc, job_id, tenant)
    if job is None:
        raise not_found(job_id)
    return job


async def succeeded_events(svc: Services, job: Job) -> tuple[str, list[Event]]:
    """The schedule kind and events of a Succeeded job; 409 for any other."""
    if job.phase != SUCCEEDED:
        if job.phase in (FAILED, CANCELLED):
            raise ApiError(409, "JobNotSucceeded", f"job {job.name} is {job.phase}; it has no events")
        raise ApiError(409, "JobNotFinished", f"job {job.name} is {job.phase}; events come when it has Succeeded",
                       NOT_RECORDED)
    events = await store.read_events(svc.pool, job.uid)
    kind = job.kind
    if kind not in SCHEDULE_KINDS:
        record = await store.job_record(svc.pool, svc.cfg.namespace, job.name)
        kind = (record or {}).get("kind")
    if kind not in SCHEDULE_KINDS:
        raise ApiError(409, "JobNotFinished", "the job's result is not recorded yet", NOT_RECORDED)
    return kind, events


# --- the queue ----------------------------------------------------------------------------


def _counts() -> dict:
    return {"waiting": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "oldestWaitingSeconds": None}


def queue_summary(items: list[dict], finished: dict[str, dict[str, int]], now: dt.datetime) -> dict:
    """Waiting, running and the oldest wait from the live ParseJobs `items`; finished
    totals from the records' counts `finished` (tenant -> lower-case phase -> n), since
    retention deletes finished objects but never rows."""
    tenants: dict[str, dict] = {}
    total = _counts()
    live_finished: dict[str, dict[str, int]] = {}
    for obj in items:
        st = obj.get("status") or {}
        tenant = tenant_of(obj)
        counts = tenants.setdefault(tenant, _counts())
        phase = st.get("phase") or QUEUED
        if phase == QUEUED:
            counts["waiting"] += 1
            total["waiting"] += 1
            since = st.get("enqueuedAt") or obj["metadata"].get("creationTimestamp")
            if since:
                age = (now - dt.datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
                age = round(max(0.0, age), 3)
                for c in (counts, total):
                    c["oldestWaitingSeconds"] = max(c["oldestWaitingSeconds"] or 0.0, age)
        elif phase == RUNNING:
            counts["running"] += 1
            total["running"] += 1
        elif phase in FINISHED:
            by_phase = live_finished.setdefault(tenant, {})
            by_phase[phase.lower()] = by_phase.get(phase.lower(), 0) + 1
    for tenant in set(finished) | set(live_finished):
        counts = tenants.setdefault(tenant, _counts())
        for phase in (p.lower() for p in FINISHED):
            # a finished object is normally recorded already; take the larger count so
            # one not yet recorded still shows
            n = max(finished.get(tenant, {}).get(phase, 0), live_finished.get(tenant, {}).get(phase, 0))
            counts[phase] = n
            total[phase] += n
    return {"total": total, "tenants": dict(sorted(tenants.items()))}


def tenant_queue(summary: dict, tenant: str) -> dict:
    """The summary as one tenant sees it: its own counts only (an admin key sees all)."""
    counts = summary["tenants"].get(tenant) or _counts()
    return {"total": dict(counts), "tenants": {tenant: dict(counts)}}


async def queue(svc: Services) -> dict:
    """The queue summary, cached a moment per process (pollers ask often)."""
    cached = svc.queue_cache
    if cached and cached[0] > time.monotonic():
        return cached[1]
    items, finished = await asyncio.gather(svc.blocking(svc.jobs.list_all),
                                           store.finished_counts(svc.pool, svc.cfg.namespace))
    out = queue_summary(items, finished, dt.datetime.now(dt.timezone.utc))
    svc.queue_cache = (time.monotonic() + svc.cfg.queue_cache_seconds, out)
    return out
