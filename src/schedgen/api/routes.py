"""The routes: probes at the root, the API under /api/v1 (routers; the Gate has
authenticated and rate-limited every /api/v1 request before it gets here)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import calendars, erasure, joblist, jobs, store
from .calendars import ICS, CalendarParams, calendar_params
from .deps import principal, services, tenant
from .gate import Principal
from .httpcache import conditional, json_bytes
from .schemas import (
    COMMON,
    JOB_ID,
    PREFIX,
    UPLOAD_REQUEST,
    Accepted,
    EventsOut,
    Health,
    NOT_MODIFIED,
    JobList,
    JobStatus,
    Phase,
    QueueHistoryOut,
    QueueOut,
    Ready,
    errors,
)
from .services import Services
from .uploads import accept_upload


probes = APIRouter(tags=["probes"])
api = APIRouter(prefix=PREFIX)
JobId = Path(..., min_length=1, max_length=63, pattern=JOB_ID, description="The job id (ParseJob name)")


@probes.get("/healthz", response_model=Health)
async def healthz():
    return JSONResponse({"status": "ok"})


@probes.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(svc: Services = Depends(services)):
    checks = await svc.readiness()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)


@probes.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics_endpoint():
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@api.post("/uploads", status_code=202, response_model=Accepted, tags=["jobs"], openapi_extra=UPLOAD_REQUEST,
          responses=errors(400, 403, 409, 413, 415, 422, *COMMON), summary="Upload a schedule PDF; creates a ParseJob")
async def upload(request: Request, svc: Services = Depends(services), who: Principal = Depends(principal)):
    return await accept_upload(svc, request, who.tenant, who.max_priority)


@api.get("/jobs", response_model=JobList, tags=["jobs"], responses=errors(422, *COMMON),
         summary="The caller's tenant's jobs, newest first (cursor pagination)")
async def list_jobs(svc: Services = Depends(services), who: str = Depends(tenant),
                    phase: Phase | None = Query(None, description="Only jobs in this phase"),
                    limit: int = Query(50, ge=1, le=joblist.MAX_LIMIT),
                    cursor: str | None = Query(None, min_length=1, max_length=400,
                                               description="`nextCursor` of the previous page")):
    return JSONResponse(await joblist.list_jobs(svc, who, phase.value if phase else None, limit, cursor))


@api.get("/jobs/{job_id}", response_model=JobStatus, tags=["jobs"],
         responses={**NOT_MODIFIED, **errors(404, 422, *COMMON)})
async def job_status(request: Request, job_id: str = JobId, svc: Services = Depends(services),
                     who: str = Depends(tenant),
                     wait: float = Query(0, ge=0, le=60, description="Answer as soon as the job is finished, or "
                                         "after this many seconds (bounded by the request timeout)")):
    if wait > 0:
        job = await joblist.wait_for(svc, who, job_id, min(wait, max(0.0, svc.cfg.request_timeout_seconds - 2)))
    else:
        job = await jobs.find_job(svc, who, job_id)
    return conditional(request, json_bytes(job.status))


@api.delete("/jobs/{job_id}", status_code=204, response_class=Response, tags=["jobs"],
            responses=errors(404, 422, *COMMON), summary="Cancel the job and erase everything about it")
async def delete_job(job_id: str = JobId, svc: Services = Depends(services), who: str = Depends(tenant)):
    await erasure.erase(svc, who, job_id)
    return Response(status_code=204)


@api.get("/jobs/{job_id}/events", response_model=EventsOut, tags=["jobs"],
         responses={**NOT_MODIFIED, **errors(404, 409, 422, *COMMON)})
async def job_events(request: Request, job_id: str = JobId, svc: Services = Depends(services),
                     who: str = Depends(tenant)):
    job = await jobs.find_job(svc, who, job_id)
    kind, events = await jobs.succeeded_events(svc, job)
    return conditional(request, json_bytes({"kind": kind, "events": [e.to_json() for e in events]}))


@api.get("/jobs/{job_id}/calendar.ics", tags=["jobs"], response_class=Response,
         responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}},
                          "description": "An iCalendar file (RFC 5545)"},
                    **NOT_MODIFIED, **errors(400, 404, 409, 422, *COMMON)})
async def job_calendar(request: Request, job_id: str = JobId, svc: Services = Depends(services),
                       who: str = Depends(tenant), params: CalendarParams = Depends(calendar_params)):
    job = await jobs.find_job(svc, who, job_id)
    payload = await calendars.render(svc, job, params)
    return conditional(request, payload, ICS,
                       {"Content-Disposition": f'attachment; filename="{job.name}.ics"'})


@api.get("/queue", response_model=QueueOut, tags=["queue"], responses=errors(*COMMON))
async def queue(svc: Services = Depends(services), who: Principal = Depends(principal)):
    summary = await jobs.queue(svc)
    return JSONResponse(summary if who.admin else jobs.tenant_queue(summary, who.tenant))


@api.get("/queue/history", response_model=QueueHistoryOut, tags=["queue"], responses=errors(422, *COMMON),
         summary="Waiting, running and finished ParseJobs over the last minutes (the web page's chart)")
async def queue_history(svc: Services = Depends(services), who: Principal = Depends(principal),
                        minutes: int = Query(60, ge=5, le=1440, description="How far back"),
                        step: int = Query(60, ge=10, le=3600, description="Seconds between points")):
    """From the records: an admin key sees every tenant, any other key its own. At most
    721 points: over a long window a fine step is raised (stepSeconds says which)."""
    step = max(step, -(-minutes * 60 // 720))
    points = await store.queue_history(svc.pool, svc.cfg.namespace, None if who.admin else who.tenant, minutes, step)
    return JSONResponse({"minutes": minutes, "stepSeconds": step, "points": points})
