"""The routes: probes at the root, the API under /api/v1 (routers; the Gate has
authenticated and rate-limited every /api/v1 request before it gets here)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schedgen.ics import CalendarRangeRequired, to_ics
from schedgen.models import ScheduleKind

from . import jobs
from .errors import ApiError
from .gate import Principal
from .schemas import (
    COMMON,
    JOB_ID,
    PREFIX,
    UPLOAD_REQUEST,
    Accepted,
    EventsOut,
    Health,
    JobStatus,
    QueueOut,
    Ready,
    errors,
)
from .services import Services
from .uploads import accept_upload


def services(request: Request) -> Services:
    return request.app.state.services


def principal(request: Request) -> Principal:
    """The caller the Gate authenticated."""
    return request.state.principal


def tenant(request: Request) -> str:
    """The tenant the Gate authenticated (from the key, never from the request)."""
    return principal(request).tenant


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


@api.get("/jobs/{job_id}", response_model=JobStatus, tags=["jobs"], responses=errors(404, 422, *COMMON))
async def job_status(job_id: str = JobId, svc: Services = Depends(services), who: str = Depends(tenant)):
    job = await jobs.find_job(svc, who, job_id)
    return JSONResponse(job.status)


@api.get("/jobs/{job_id}/events", response_model=EventsOut, tags=["jobs"], responses=errors(404, 409, 422, *COMMON))
async def job_events(job_id: str = JobId, svc: Services = Depends(services), who: str = Depends(tenant)):
    job = await jobs.find_job(svc, who, job_id)
    kind, events = await jobs.succeeded_events(svc, job)
    return JSONResponse({"kind": kind, "events": [e.to_json() for e in events]})


@api.get("/jobs/{job_id}/calendar.ics", tags=["jobs"], response_class=Response,
         responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}},
                          "description": "An iCalendar file (RFC 5545)"},
                    **errors(400, 404, 409, 422, *COMMON)})
async def job_calendar(job_id: str = JobId, svc: Services = Depends(services), who: str = Depends(tenant),
                       first_day: dt.date | None = Query(None, alias="from",
                                                         description="First day of lectures (ISO date)"),
                       last_day: dt.date | None = Query(None, alias="until",
                                                        description="Last day of lectures (ISO date)"),
                       exam_hours: float = Query(3.0, alias="examHours", ge=0.5, le=12,
                                                 description="Assumed length of exams without an end time")):
    job = await jobs.find_job(svc, who, job_id)
    kind, events = await jobs.succeeded_events(svc, job)
    try:
        payload = to_ics(ScheduleKind(kind), events, first_day=first_day, last_day=last_day, exam_hours=exam_hours)
    except CalendarRangeRequired as exc:
        raise ApiError(400, "CalendarRangeRequired", str(exc).replace("--from/--until", "from/until")) from None
    return Response(payload, media_type="text/calendar",
                    headers={"Content-Disposition": f'attachment; filename="{job.name}.ics"'})


@api.get("/queue", response_model=QueueOut, tags=["queue"], responses=errors(*COMMON))
async def queue(svc: Services = Depends(services), who: Principal = Depends(principal)):
    summary = await jobs.queue(svc)
    return JSONResponse(summary if who.admin else jobs.tenant_queue(summary, who.tenant))
