"""`/api/v1/jobs`: the tenant's job list, a job's status (optionally waiting for it),
its erasure, its events, its calendar and its log. The Gate has authenticated the caller."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from ..context import ApiContext
from ..dependencies import calendar_params, context, tenant
from ..httpcache import conditional, json_bytes
from ..schemas import COMMON, ICS, JOB_ID, NOT_MODIFIED, PREFIX, EventsOut, JobList, JobLog, JobStatus, Phase, errors
from ..services import calendars, erasure, joblog, listing
from ..services.calendars import CalendarParams
from ..services.events import succeeded_events
from ..services.lookup import find_job, wait_for

router = APIRouter(prefix=PREFIX, tags=["jobs"])
JobId = Path(..., min_length=1, max_length=63, pattern=JOB_ID, description="The job id (ParseJob name)")
WAIT_MARGIN_SECONDS = 2.0  # `?wait=` answers this long before the request's own timeout


@router.get("/jobs", response_model=JobList, responses=errors(422, *COMMON), operation_id="listJobs",
            summary="The caller's tenant's jobs, newest first (cursor pagination)")
async def list_jobs(ctx: ApiContext = Depends(context), who: str = Depends(tenant),
                    phase: Phase | None = Query(None, description="Only jobs in this phase"),
                    limit: int = Query(50, ge=1, le=listing.MAX_LIMIT),
                    cursor: str | None = Query(None, min_length=1, max_length=400,
                                               description="`nextCursor` of the previous page")):
    return JSONResponse(await listing.page(ctx, who, phase.value if phase else None, limit, cursor))


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={**NOT_MODIFIED, **errors(404, 422, *COMMON)},
            operation_id="getJob", summary="A job's status (optionally waiting until it finishes)")
async def job_status(request: Request, job_id: str = JobId, ctx: ApiContext = Depends(context),
                     who: str = Depends(tenant),
                     wait: float = Query(0, ge=0, le=60, description="Answer as soon as the job is finished, or "
                                         "after this many seconds (bounded by the request timeout)")):
    if wait > 0:
        budget = max(0.0, ctx.cfg.request_timeout_seconds - WAIT_MARGIN_SECONDS)
        job = await wait_for(ctx, who, job_id, min(wait, budget))
    else:
        job = await find_job(ctx, who, job_id)
    return conditional(request, json_bytes(job.status))


@router.delete("/jobs/{job_id}", status_code=204, response_class=Response, responses=errors(404, 422, *COMMON),
               operation_id="deleteJob", summary="Cancel the job and erase everything about it")
async def delete_job(job_id: str = JobId, ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    await erasure.erase(ctx, who, job_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}/events", response_model=EventsOut,
            responses={**NOT_MODIFIED, **errors(404, 409, 422, *COMMON)}, operation_id="getJobEvents",
            summary="A Succeeded job's schedule events")
async def job_events(request: Request, job_id: str = JobId, ctx: ApiContext = Depends(context),
                     who: str = Depends(tenant)):
    kind, events = await succeeded_events(ctx, await find_job(ctx, who, job_id))
    return conditional(request, json_bytes({"kind": kind, "events": [e.to_json() for e in events]}))


@router.get("/jobs/{job_id}/calendar.ics", response_class=Response,
            responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}},
                             "description": "An iCalendar file (RFC 5545)"},
                       **NOT_MODIFIED, **errors(400, 404, 409, 422, *COMMON)},
            operation_id="getJobCalendar", summary="A Succeeded job's events as iCalendar")
async def job_calendar(request: Request, job_id: str = JobId, ctx: ApiContext = Depends(context),
                       who: str = Depends(tenant), params: CalendarParams = Depends(calendar_params)):
    job = await find_job(ctx, who, job_id)
    payload = await calendars.render(ctx, job, params)
    return conditional(request, payload, ICS, {"Content-Disposition": f'attachment; filename="{job.name}.ics"'})


@router.get("/jobs/{job_id}/log", response_model=JobLog, responses=errors(404, 422, *COMMON),
            operation_id="getJobLog",
            summary="What happened to the job: its run's summary and the ParseJob's Kubernetes Events")
async def job_log(job_id: str = JobId, ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    """Any phase (the summary is null until the job finishes). Events exist while the
    ParseJob does and the API server keeps them (about an hour); a job known only from its
    record has none. Another tenant's job is 404, as everywhere."""
    return JSONResponse(await joblog.job_log(ctx, await find_job(ctx, who, job_id)))
