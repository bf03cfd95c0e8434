"""Probes at the root: liveness, readiness (each backend checked) and the metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..context import ApiContext
from ..dependencies import context
from ..schemas import Health, Ready

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health)
async def healthz():
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(ctx: ApiContext = Depends(context)):
    checks = await ctx.readiness()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics_endpoint():
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
