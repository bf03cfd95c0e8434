"""The ScheduleGenerator web app's view of jobs and events (its NestJS backend's shapes),
for the compatibility routes."""

from __future__ import annotations

import hashlib
import json

from schedgen.models import Event
from schedgen.parsejob import CANCELLED, FAILED, QUEUED, RUNNING, SCHEDULE_KINDS, SUCCEEDED

from ..context import ApiContext
from ..errors import ApiError
from .events import succeeded_events
from .lookup import Job, wait_for
from .queue import cached_summary, tenant_view

STATUS = {QUEUED: "pending", RUNNING: "processing", SUCCEEDED: "completed", FAILED: "failed", CANCELLED: "failed"}
DEFAULT_EXAM_HOURS = 3  # exams list no end time; the web app wants one (as the calendar assumes)


def compat_event(job_id: str, event: Event, kind: str) -> dict:
    """One session as the web app shows it; `id` is stable for the same job and event."""
    end = event.end_time
    if not end and event.start_time:
        hours, minutes = (int(p) for p in event.start_time.split(":"))
        end = f"{(hours + DEFAULT_EXAM_HOURS) % 24:02d}:{minutes:02d}"
    out = {"module": event.module, "activity": event.activity, "group": event.group, "day": event.day,
           "date": event.date, "startTime": event.start_time, "endTime": end, "venue": ", ".join(event.venues),
           "isRecurring": kind == "lecture"}
    digest = hashlib.sha256(json.dumps([job_id, out], sort_keys=True).encode()).hexdigest()[:24]
    return {"id": digest, **{k: v for k, v in out.items() if v is not None or k in ("startTime", "endTime")}}


def compat_job(job: Job) -> dict:
    st = job.status
    error = st.get("error") or None
    kind = job.kind or (st["scheduleType"] if st["scheduleType"] in SCHEDULE_KINDS else None)
    return {"id": job.name, "status": STATUS.get(job.phase, "pending"), "pdfType": kind,
            "createdAt": st.get("createdAt"), "completedAt": st.get("completedAt"),
            "error": (error.get("message") or error.get("reason")) if error else None}


async def job_events(ctx: ApiContext, job: Job) -> list[dict]:
    """The job's events in the web app's shape (409 unless it Succeeded)."""
    kind, events = await succeeded_events(ctx, job)
    return [compat_event(job.name, e, kind) for e in events]


async def upload_outcome(ctx: ApiContext, tenant: str, job_id: str, wait: float) -> dict:
    """What the web app's upload answers once the job is finished or `wait` seconds have
    passed: its events, its failure, or `status: processing` (the app then polls)."""
    job = await wait_for(ctx, tenant, job_id, wait)
    body = compat_job(job)
    if job.phase == SUCCEEDED:
        try:
            events = await job_events(ctx, job)
        except ApiError:  # the result is not recorded yet: the web app polls
            events = None
        if events is not None:
            return {"jobId": job.name, "pdfType": body["pdfType"], "status": "completed",
                    "events": events, "message": f"parsed {len(events)} events"}
    if job.phase in (FAILED, CANCELLED):
        return {"jobId": job.name, "pdfType": body["pdfType"], "status": "failed", "events": [],
                "message": body["error"] or "the parse failed"}
    return {"jobId": job.name, "pdfType": body["pdfType"], "status": "processing", "events": [],
            "message": f"still parsing: poll /api/jobs/{job.name}"}


async def job_counts(ctx: ApiContext, tenant: str) -> dict:
    """The tenant's job counts in the web app's (BullMQ-like) names."""
    counts = tenant_view(await cached_summary(ctx, tenant), tenant)["total"]
    out = {"waiting": counts["waiting"], "active": counts["running"], "completed": counts["succeeded"],
           "failed": counts["failed"] + counts["cancelled"], "delayed": 0}
    return {**out, "total": sum(out.values())}
