"""Compatibility routes for the ScheduleGenerator web app (its NestJS backend's API),
on only with `SCHEDGEN_API_COMPAT_ROUTES=true`. Same Gate as /api/v1 (API key header,
rate limits); errors in the NestJS shape `{statusCode, message, error}` (errors.py)."""

from __future__ import annotations


import hashlib
import json
import time

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from schedgen.models import Event
from schedgen.parsejob import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED

from . import joblist, jobs
from .deps import principal, services, tenant
from .errors import ApiError
from .gate import Principal
from .schemas import JOB_ID, UPLOAD_REQUEST, compat_errors
from .services import Services
from .uploads import accept_upload

STATUS = {QUEUED: "pending", RUNNING: "processing", SUCCEEDED: "completed", FAILED: "failed", CANCELLED: "failed"}
DEFAULT_EXAM_HOURS = 3  # exams list no end time; the web app wants one (as the calendar assumes)
MARGIN_SECONDS = 3.0  # the upload's wait ends this long before the request's own timeout

compat = APIRouter(tags=["compat"])
health = APIRouter(tags=["compat"])
JobId = Path(..., min_length=1, max_length=63, pattern=JOB_ID)
ERRORS = compat_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503)
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}
UPLOADED = {201: {"description": "The parse ended within the wait: its events (or its failure)", **_JSON},
            202: {"description": "Still parsing: poll /api/jobs/{id}", **_JSON}}


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


def compat_job(job: jobs.Job) -> dict:
    st = job.status
    error = st.get("error") or None
    kind = job.kind or (st["scheduleType"] if st["scheduleType"] in ("lecture", "test", "exam") else None)
    return {"id": job.name, "status": STATUS.get(job.phase, "pending"), "pdfType": kind,
            "createdAt": st.get("createdAt"), "completedAt": st.get("completedAt"),
            "error": (error.get("message") or error.get("reason")) if error else None}


async def _events(svc: Services, job: jobs.Job) -> list[dict]:
    kind, events = await jobs.succeeded_events(svc, job)
    return [compat_event(job.name, e, kind) for e in events]


@compat.post("/api/upload", status_code=201, openapi_extra={"requestBody": UPLOAD_REQUEST["requestBody"]},
             responses={**UPLOADED, **ERRORS},
             summary="Upload a PDF; answers with its events when the parse ends within the wait")
async def upload(request: Request, svc: Services = Depends(services), who: Principal = Depends(principal)):
    started = time.monotonic()
    accepted = json.loads((await accept_upload(svc, request, who.tenant, who.max_priority)).body)
    budget = svc.cfg.request_timeout_seconds - MARGIN_SECONDS - (time.monotonic() - started)
    job = await joblist.wait_for(svc, who.tenant, accepted["id"],
                                 max(0.0, min(svc.cfg.compat_upload_wait_seconds, budget)))
    body = compat_job(job)
    if job.phase == SUCCEEDED:
        try:
            events = await _events(svc, job)
        except ApiError:  # the result is not recorded yet: the web app polls
            events = None
        if events is not None:
            return JSONResponse({"jobId": job.name, "pdfType": body["pdfType"], "status": "completed",
                                 "events": events, "message": f"parsed {len(events)} events"}, status_code=201)
    if job.phase in (FAILED, CANCELLED):
        return JSONResponse({"jobId": job.name, "pdfType": body["pdfType"], "status": "failed", "events": [],
                             "message": body["error"] or "the parse failed"}, status_code=201)
    return JSONResponse({"jobId": job.name, "pdfType": body["pdfType"], "status": "processing", "events": [],
                         "message": f"still parsing: poll /api/jobs/{job.name}"}, status_code=202)


@compat.get("/api/jobs/metrics", responses=ERRORS, summary="The caller's tenant's job counts")
async def metrics(svc: Services = Depends(services), who: str = Depends(tenant)):
    counts = jobs.tenant_queue(await jobs.queue(svc), who)["total"]
    out = {"waiting": counts["waiting"], "active": counts["running"], "completed": counts["succeeded"],
           "failed": counts["failed"] + counts["cancelled"], "delayed": 0}
    return JSONResponse({**out, "total": sum(out.values())})


@compat.get("/api/jobs/{job_id}", responses=ERRORS)
async def job(job_id: str = JobId, svc: Services = Depends(services), who: str = Depends(tenant)):
    return JSONResponse(compat_job(await jobs.find_job(svc, who, job_id)))


@compat.get("/api/jobs/{job_id}/result", responses=ERRORS)
async def result(job_id: str = JobId, svc: Services = Depends(services), who: str = Depends(tenant)):
    job = await jobs.find_job(svc, who, job_id)
    return JSONResponse({"id": job.name, "events": await _events(svc, job)})


def _terminus(checks: dict[str, str]) -> JSONResponse:
    """@nestjs/terminus' HealthCheckResult shape."""
    up = {k: {"status": "up"} for k, v in checks.items() if v == "ok"}
    down = {k: {"status": "down", "message": v} for k, v in checks.items() if v != "ok"}
    return JSONResponse({"status": "error" if down else "ok", "info": up, "error": down, "details": {**up, **down}},
                        status_code=503 if down else 200)


@health.get("/health", summary="All backends (terminus shape)")
async def health_all(svc: Services = Depends(services)):
    return _terminus(await svc.readiness())


@health.get("/health/db", summary="Postgres (terminus shape)")
async def health_db(svc: Services = Depends(services)):
    checks = await svc.readiness()
    return _terminus({"database": checks["postgres"]})



