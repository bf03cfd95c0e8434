"""Compatibility routes for the ScheduleGenerator web app (its NestJS backend's API),
on only with `SCHEDGEN_API_COMPAT_ROUTES=true`. Same Gate as /api/v1 (API key header,
rate limits); errors in the NestJS shape `{statusCode, message, error}` (errors.py)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from ..context import ApiContext
from ..dependencies import context, principal, tenant
from ..gate import Principal
from ..schemas import JOB_ID, UPLOAD_REQUEST, compat_errors
from ..services import compat
from ..services.lookup import find_job
from .uploads import receive

MARGIN_SECONDS = 3.0  # the upload's wait ends this long before the request's own timeout

router = APIRouter(tags=["compat"])
JobId = Path(..., min_length=1, max_length=63, pattern=JOB_ID)
ERRORS = compat_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503)
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}
UPLOADED = {201: {"description": "The parse ended within the wait: its events (or its failure)", **_JSON},
            202: {"description": "Still parsing: poll /api/jobs/{id}", **_JSON}}


@router.post("/api/upload", status_code=201, openapi_extra={"requestBody": UPLOAD_REQUEST["requestBody"]},
             operation_id="compatUpload",
             responses={**UPLOADED, **ERRORS},
             summary="Upload a PDF; answers with its events when the parse ends within the wait")
async def upload(request: Request, ctx: ApiContext = Depends(context), who: Principal = Depends(principal)):
    started = time.monotonic()
    receipt = await receive(request, ctx, who)
    budget = ctx.cfg.request_timeout_seconds - MARGIN_SECONDS - (time.monotonic() - started)
    wait = max(0.0, min(ctx.cfg.compat_upload_wait_seconds, budget))
    body = await compat.upload_outcome(ctx, who.tenant, receipt.status["id"], wait)
    return JSONResponse(body, status_code=202 if body["status"] == "processing" else 201)


@router.get("/api/jobs/metrics", responses=ERRORS, summary="The caller's tenant's job counts",
            operation_id="compatJobCounts")
async def metrics(ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    return JSONResponse(await compat.job_counts(ctx, who))


@router.get("/api/jobs/{job_id}", responses=ERRORS, operation_id="compatGetJob")
async def job(job_id: str = JobId, ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    return JSONResponse(compat.compat_job(await find_job(ctx, who, job_id)))


@router.get("/api/jobs/{job_id}/result", responses=ERRORS, operation_id="compatGetJobResult")
async def result(job_id: str = JobId, ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    job = await find_job(ctx, who, job_id)
    return JSONResponse({"id": job.name, "events": await compat.job_events(ctx, job)})


def _terminus(checks: dict[str, str]) -> JSONResponse:
    """@nestjs/terminus' HealthCheckResult shape; like /readyz it names a backend that is
    down and says nothing more (no key is needed to ask)."""
    up = {k: {"status": "up"} for k, v in checks.items() if v == "ok"}
    down = {k: {"status": "down"} for k, v in checks.items() if v != "ok"}
    return JSONResponse({"status": "error" if down else "ok", "info": up, "error": down, "details": {**up, **down}},
                        status_code=503 if down else 200)


@router.get("/health", summary="All backends (terminus shape)", operation_id="compatHealth")
async def health_all(ctx: ApiContext = Depends(context)):
    return _terminus(await ctx.readiness())


@router.get("/health/db", summary="Postgres (terminus shape)", operation_id="compatHealthDb")
async def health_db(ctx: ApiContext = Depends(context)):
    checks = await ctx.readiness()
    return _terminus({"database": checks["database"]})
